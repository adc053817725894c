from mmbal.cli import main

raise SystemExit(main())
