from ctxsvc.cli import main

raise SystemExit(main())
