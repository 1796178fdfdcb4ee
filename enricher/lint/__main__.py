"""`python -m enricher.lint ARGS`: the same as `enricher lint ARGS`, minus the top-level parser."""

import sys

from enricher.lint.cli import main

raise SystemExit(main(sys.argv[1:]))
