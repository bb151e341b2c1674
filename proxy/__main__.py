"""Allows `python -m proxy ...` as an alias of the `pilotfish` console script."""

from proxy.cli import main

raise SystemExit(main())
