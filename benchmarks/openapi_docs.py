"""How well the OpenAPI document describes the API: operations with generated ids, bad
summaries, parameters and request-body fields without a description or an example.

    python -m benchmarks.openapi_docs [--before CHECKOUT]

counts them on ``create_app(build_service(...)).openapi()`` of this checkout and, with
``--before``, of another checkout of ctxsvc (run in a subprocess with it first on the
path), prints both side by side and writes benchmarks/results/openapi-docs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "openapi-docs.json"
GENERATED = ("_get", "_post", "_delete", "_put", "_patch")


def count() -> dict[str, int]:
    from ctxsvc.compose import build_service
    from ctxsvc.http import create_app
    from ctxsvc.settings import Settings

    with tempfile.TemporaryDirectory() as home:
        spec: dict[str, Any] = create_app(
            build_service(Settings.from_env({}, home=Path(home)))
        ).openapi()
    ops = [o for methods in spec["paths"].values() for o in methods.values()]
    params = [p for o in ops for p in o.get("parameters", [])]
    schemas = spec["components"]["schemas"]
    bodies = {
        ref.rsplit("/", 1)[1]
        for o in ops
        if (ref := o.get("requestBody", {}).get("content", {}).get("application/json", {})
            .get("schema", {}).get("$ref"))
    }  # fmt: skip
    props = [v for b in bodies for v in schemas[b].get("properties", {}).values()]

    def has_example(p: dict[str, Any]) -> bool:
        return bool(p.get("example") is not None or p.get("examples")
                    or p.get("schema", {}).get("examples"))  # fmt: skip

    return {
        "operations": len(ops),
        "generated operation ids": sum(o.get("operationId", "").endswith(GENERATED) for o in ops),
        "summaries missing or with stray spaces": sum(
            not o.get("summary") or o["summary"] != o["summary"].strip() for o in ops
        ),
        "parameters": len(params),
        "parameters without a description": sum(not p.get("description") for p in params),
        "parameters without an example": sum(not has_example(p) for p in params),
        "request-body fields": len(props),
        "request-body fields without a description": sum(not v.get("description") for v in props),
        "request-body fields without an example": sum(not v.get("examples") for v in props),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="another checkout of ctxsvc, counted beside")
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw:
        print(json.dumps(count()))
        return
    sides = {"now": count()}
    if args.before:
        env = {**os.environ, "PYTHONPATH": str(args.before.resolve())}
        got = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--raw"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        sides = {"before": json.loads(got.stdout.strip().splitlines()[-1]), **sides}
    print(f"{'':<44}" + "".join(f"{s:>8}" for s in sides))
    for key in sides["now"]:
        print(f"{key:<44}" + "".join(f"{side[key]:>8}" for side in sides.values()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(sides, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
