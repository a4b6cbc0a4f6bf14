"""Services: inventory, alerting, scoring. The worker and the CLI both use them; they read
and write the store and know nothing of Faust, HTTP or the terminal."""
