"""``python -m recsys.ope``: see :mod:`recsys.ope.cli`."""

from recsys.ope.cli import main

raise SystemExit(main())
