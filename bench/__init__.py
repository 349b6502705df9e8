"""Benchmark harness: ``make bench`` and ``make bench-backlog`` (see docs/benchmarks.md).

``BENCH_SRC`` names another checkout of routedesk (e.g. an exported older commit) whose
product code (routedesk, workflows, activities, starter, worker.py) the harness and every
process it starts should use instead of this tree's: the baseline of a tuning is measured
with the same harness. It is put first on ``sys.path`` here, before any product import.
"""

from __future__ import annotations

import os
import sys

_src = os.environ.get("BENCH_SRC")
if _src and _src not in sys.path:
    sys.path.insert(0, _src)
