"""A generated repository of nasty files: indexing completes, every skip has a
reason, and nothing outside the root is read."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import cli_env, run_cli

from ctxsvc.indexers.languages import EXTENSIONS, LANGUAGES
from ctxsvc.service import ContextService

BROKEN = {  # one syntax error per language, by extension
    ".py": "def broken(:\n    return (\n",
    ".js": "function broken( {\n  return [1, 2\n",
    ".ts": "export function broken(x: number {\n  return x +;\n",
    ".tsx": "export const C = () => <div><span></div>;\n",
    ".go": "package main\nfunc broken( {\n  return\n",
    ".rs": "fn broken( -> i32 {\n    let x = ;\n",
    ".java": "class Broken { void m( { int x = ; }\n",
    ".c": "int broken( { return ; \n",
    ".cpp": "class Broken { void m( { }\n",
    ".cs": "class Broken { void M( { var x = ; }\n",
    ".rb": "def broken(\n  if x\n",
    ".php": "<?php function broken( { return ; \n",
    ".kt": "fun broken( { val x = \n",
    ".sh": "broken() { if [ ; then\n",
}


def nasty_repo(root: Path) -> dict[str, str]:
    """Write the repository; returns what each special file must end up as."""
    root.mkdir()
    expect: dict[str, str] = {}

    def put(rel: str, data: bytes, outcome: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[rel] = outcome

    put("ok.py", b"def fine():\n    return 'fine'\n", "indexed")
    put("binary.py", b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8, "skipped:binary")
    with (root / "huge.py").open("wb") as f:  # 50 MB
        line = b"x = 'a fifty megabyte python file of assignments'  # padding\n"
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    expect["huge.py"] = "skipped:too_large"
    put("static/app.min.js", b"var a=" + b"1+" * 10_000 + b"1;\n", "skipped:minified")
    put("invalid_utf8.py", b"# caf\xe9 \xff\xfe\nNAME = 'caf\xe9'\n", "indexed")
    put("utf16.py", "\ufeffdef from_utf16():\n    return 'ü'\n".encode("utf-16"), "indexed")
    nested = "def deep():\n" + "".join("    " * (i + 1) + "if x:\n" for i in range(95))
    nested += "    " * 96 + "return 1\n"
    put("deep_nesting.py", nested.encode(), "indexed")
    put("deep_brackets.js", b"const x = " + b"[\n" * 5_000 + b"]\n" * 5_000 + b";\n", "indexed")
    put("deep_calls.py", b"y = " + b"f(\n" * 3_000 + b"1" + b")\n" * 3_000, "indexed")
    for ext, text in BROKEN.items():
        put(f"broken/broken{ext}", text.encode(), "indexed")
    for name in (
        "with space.py",
        "new\nline.py",
        "ünïcødé_名前.py",
        "-leading-dash.py",
        "--help.py",
    ):
        put(f"names/{name}", b"def named():\n    return 1\n", "indexed")
    (root / "loop").symlink_to(root / "loop")
    expect["loop"] = "skipped:symlink_loop"
    (root / "a").mkdir()
    (root / "a" / "up").symlink_to(root)  # a directory cycle
    (root / "etc").symlink_to("/etc")
    (root / "passwd.py").symlink_to("/etc/passwd")
    expect["passwd.py"] = "skipped:symlink_outside_root"
    return expect


@pytest.mark.slow
def test_nasty_repository_indexes_with_reasons_and_stays_inside(
    service: ContextService, tmp_path: Path
) -> None:
    root = tmp_path / "nasty"
    expect = nasty_repo(root)
    assert {EXTENSIONS[ext] for ext in BROKEN} == set(LANGUAGES)  # every language
    summary = service.index(root, "nasty")
    files = service.store.reader("nasty").files()
    for rel, outcome in expect.items():
        record = files.get(rel)
        assert record is not None, f"{rel!r} is not accounted for"
        got = record.status if record.status == "indexed" else f"skipped:{record.reason}"
        assert got == outcome, (rel, record)
    # Every skip has a reason; syntax errors are flagged, never fatal.
    assert all(r.reason for r in files.values() if r.status == "skipped")
    for ext in BROKEN:
        assert files[f"broken/broken{ext}"].syntax_errors, ext
    assert files["invalid_utf8.py"].lossy and not files["utf16.py"].lossy
    assert summary.files_with_syntax_errors >= len(BROKEN)
    # Nothing outside the root: no path escapes, no byte of /etc is in the index.
    assert all(not p.startswith(("/", "..")) and "/../" not in p for p in files)
    assert not any(p.startswith(("etc/", "a/up/")) for p in files)
    chunks = service.store.reader("nasty").chunks()
    assert not any("root:x:0:0" in c.text for c in chunks)
    # The odd names and the UTF-16 file are searchable like any other.
    pack = service.context("nasty", "from_utf16 named deep", 2000)
    assert {"utf16.py"} <= {i.path for i in pack.items}


@pytest.mark.slow
def test_cli_reports_every_skip_reason(tmp_path: Path) -> None:
    nasty_repo(tmp_path / "nasty")
    env = cli_env(tmp_path / "home")
    done = run_cli(env, "index", str(tmp_path / "nasty"), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    skipped = json.loads(done.stdout)["skipped"]
    assert {"binary", "too_large", "minified", "symlink_loop", "symlink_outside_root"} <= set(
        skipped
    )
    assert os.path.exists(tmp_path / "nasty" / "huge.py")  # nothing was touched
