"""``python -m workloads.echo``: run the echo server (see ``--help``)."""

from workloads.echo.cli import main

raise SystemExit(main())
