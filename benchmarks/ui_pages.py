"""The inspector's pages in headless Chromium against a running ``ctxsvc serve``: how
long each takes to load, and screenshots of them (the ones in docs/images come from here).

    python -m benchmarks.ui_pages --url http://127.0.0.1:8765 --repo ctxsvc \
        --question "where are files discovered and skipped before parsing" \
        --shots docs/images

With ``--session`` it also opens that session's timeline and resume preview; without
one it starts a session on ``--repo``, asks one question in it and writes a checkpoint,
so that the timeline has something to show (that writes to the server's state). The
token comes from ``CTXSVC_TOKEN`` when the server has one. Chromium is Debian's
(``CTXSVC_CHROMIUM`` names another binary). Prints a table of median load times over
``--repeats`` loads and writes them to benchmarks/results/ui-pages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
TRANSCRIPT = [
    {"role": "user", "content": "Find where files are skipped before parsing and keep the rules."},
    {"role": "assistant", "content": "Discovery lives in indexers/discover.py; binary and huge "
                                     "files are skipped there. Next I'll read indexers/content.py."},
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8765")
    ap.add_argument("--repo", required=True, help="an index the server holds")
    ap.add_argument("--question", default="where are files discovered and skipped before parsing")
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--session", help="a session to show (default: start one)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shots", type=Path, help="save a screenshot of each page here")
    args = ap.parse_args()

    token = os.environ.get("CTXSVC_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=300) as api:
        sid = args.session or _session(api, args.repo, args.question, args.budget)
    q = httpx.QueryParams(q=args.question, budget=args.budget)
    pages = {
        "indexes": ("/ui", "table.indexes"),
        "index": (f"/ui/repos/{args.repo}", "form.playground"),
        "playground": (f"/ui/repos/{args.repo}?{q}", ".answer"),
        "sessions": ("/ui/sessions", "table.sessions"),
        "session": (f"/ui/sessions/{sid}?resume=1&budget={args.budget}", ".resumed"),
        "jobs": ("/ui/jobs", "#jobs[data-active]"),
        "api-docs": ("/docs", ".swagger-ui .opblock"),
    }
    from playwright.sync_api import sync_playwright

    binary = os.environ.get("CTXSVC_CHROMIUM") or shutil.which("chromium")
    rows: list[dict[str, Any]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        context = browser.new_context(base_url=args.url, viewport={"width": 1280, "height": 860})
        tab = context.new_page()
        tab.goto("/ui")
        if token:
            tab.fill("input[name=token]", token)
            tab.click("form.login button")
            tab.wait_for_url("**/ui")
        for name, (path, ready) in pages.items():
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tab.goto(path)
                tab.wait_for_selector(ready, timeout=120_000)
                times.append((time.perf_counter() - t0) * 1000)
            if args.shots:
                args.shots.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(args.shots / f"inspector-{name}.png"))
            rows.append({"page": name, "path": path, "median_ms": round(statistics.median(times), 1),
                         "max_ms": round(max(times), 1), "loads": len(times)})  # fmt: skip
        browser.close()
    print(f"{'page':<12} {'median ms':>10} {'max ms':>9}  path")
    for r in rows:
        print(f"{r['page']:<12} {r['median_ms']:>10.1f} {r['max_ms']:>9.1f}  {r['path']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ui-pages.json"
    out.write_text(json.dumps({"repo": args.repo, "question": args.question,
                               "budget": args.budget, "pages": rows}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


def _session(api: httpx.Client, repo: str, question: str, budget: int) -> str:
    started = api.post("/v1/sessions", json={"repo": repo, "task": question})
    started.raise_for_status()
    sid: str = started.json()["id"]
    body = {"repo": repo, "query": question, "budget_tokens": budget, "session_id": sid}
    api.post("/v1/context", json=body).raise_for_status()
    api.post(f"/v1/sessions/{sid}/checkpoints", json={"messages": TRANSCRIPT}).raise_for_status()
    return sid


if __name__ == "__main__":
    main()
