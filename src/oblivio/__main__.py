"""``python -m oblivio`` runs the command line."""

from oblivio.interfaces.cli import main

raise SystemExit(main())
