"""``python -m recsys.experiments``: see :mod:`recsys.experiments.cli`."""

from recsys.experiments.cli import main

raise SystemExit(main())
