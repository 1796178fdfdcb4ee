"""Allows `python -m enricher`, the same entry point as the `enricher` console script."""

from enricher.cli import main

raise SystemExit(main())
