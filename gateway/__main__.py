"""`python -m gateway` is the same as the `tr50gw` console script."""

from __future__ import annotations

from gateway.cli import main

raise SystemExit(main())
