"""``python -m rsia_geo`` runs the command-line interface."""

from rsia_geo.cli import main

raise SystemExit(main())
