from rlfleet.cli import main

raise SystemExit(main())
