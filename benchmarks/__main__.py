"""`python -m benchmarks`: the accuracy and speed benchmark (benchmarks/accuracy.py)."""

from __future__ import annotations

from benchmarks.accuracy import main

raise SystemExit(main())
