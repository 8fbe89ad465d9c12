"""Where the benchmarks find their inputs, relative to this checkout (or set by flags).

The project sits beside ``shared/`` (the mined tasks) and ``.mirror/`` (bare
mirrors of the benchmark repositories, written by the search tool's fetch);
corpora (the snapshot trees) go to the system's temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_BESIDE = Path(__file__).resolve().parents[2]

TASKS_DIR = Path(os.environ.get("CTXSVC_BENCH_TASKS", _BESIDE / "shared" / "bench" / "tasks"))
MIRRORS = Path(os.environ.get("CTXSVC_BENCH_MIRRORS", _BESIDE / ".mirror"))
CORPORA = Path(os.environ.get("CTXSVC_BENCH_CORPORA", Path(tempfile.gettempdir()) / "corpora"))
