"""``python -m edge`` behaves exactly like the ``edge`` console script."""

from __future__ import annotations

from edge.cli import main

raise SystemExit(main())
