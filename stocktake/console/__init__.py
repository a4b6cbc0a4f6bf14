"""Terminal renderings: tables, the live status view, replay progress."""
