from devsim.cli import main

raise SystemExit(main())
