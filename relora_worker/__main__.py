from relora_worker.cli import main

raise SystemExit(main())
