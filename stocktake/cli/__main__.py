from stocktake.cli import main

raise SystemExit(main())
