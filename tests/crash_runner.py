"""Runs one index of ROOT into HOME with a slow fake embedder; killed by tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakes import HashEmbedder

from ctxsvc import vector_fill
from ctxsvc.compose import build_service
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

if __name__ == "__main__":
    home, root, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    vector_fill.BATCH = 8
    settings = Settings.from_env({}, home=home)
    service = build_service(settings, tokens=TiktokenCounter(), embedder=HashEmbedder(delay=delay))
    print("start", flush=True)  # imports done: the kill clock starts here
    s = service.index(root, "crash")
    print(f"done {s.chunks} {s.chunks_embedded}", flush=True)
