"""`python -m tests.bench`: see tests/bench/cli.py for the options."""

from tests.bench.cli import main

raise SystemExit(main())
