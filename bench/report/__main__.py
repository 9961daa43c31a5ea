"""python -m bench.report RUNS... (the package's docstring: bench/report/__init__.py)."""

import sys

from bench.report import main

sys.exit(main())
