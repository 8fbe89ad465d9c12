"""Context for the change at hand: ``context(diff=BASE)`` and ``impact`` on git fixtures.

Each fixture (Python, TypeScript, Go) has a definition that is changed in the
working tree, a caller in another module (through an import, or the Go
package), a test that calls the caller, a callee, and decoys that share words
with the change but do not use it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, git, run_cli, write_tree

from ctxsvc.diffs import parse_diff, working_diff
from ctxsvc.errors import InvalidRequest
from ctxsvc.http import create_app
from ctxsvc.impact import DIFF_WEIGHTS
from ctxsvc.service import ContextService

PY = {
    "shop/pricing.py": '''"""Prices."""


def round_cents(value: float) -> float:
    return round(value, 2)


def total_price(items: list[float], rate: float) -> float:
    """The total of items with tax."""
    subtotal = sum(items)
    return round_cents(subtotal * (1 + rate))
''',
    "shop/cart.py": '''"""The cart."""
from shop.pricing import total_price


class Cart:
    def __init__(self) -> None:
        self.items: list[float] = []

    def checkout(self, rate: float) -> float:
        return total_price(self.items, rate)
''',
    "shop/report.py": """from shop.pricing import round_cents


def report(value: float) -> str:
    return f"{round_cents(value)}"
""",
    "shop/decoy.py": '''"""Decoy: talks about the total price and tax but uses none of it."""


def describe_total_price_and_tax() -> str:
    return "the total price includes tax on items"
''',
    "tests/test_cart.py": """from shop.cart import Cart


def test_checkout() -> None:
    assert Cart().checkout(0.2) == 0.0
""",
}
PY_EDIT = (
    "shop/pricing.py",
    "    subtotal = sum(items)\n",
    "    subtotal = sum(i for i in items if i > 0)\n",
)

TS = {
    "src/format.ts": """export function formatMoney(cents: number): string {
  return (cents / 100).toFixed(2);
}

export function pad(text: string): string {
  return text.padStart(10);
}
""",
    "src/invoice.ts": """import { formatMoney } from './format';

export function renderInvoice(total: number): string {
  return 'Total: ' + formatMoney(total);
}
""",
    "src/unrelated.ts": """export function money(): string {
  return 'format money elsewhere';
}
""",
}
TS_EDIT = (
    "src/format.ts",
    "  return (cents / 100).toFixed(2);\n",
    "  return '$' + (cents / 100).toFixed(2);\n",
)

GO = {
    "go.mod": "module example.com/app\n\ngo 1.21\n",
    "store/keys.go": """package store

func NormalizeKey(key string) string {
	return key + "/"
}
""",
    "store/get.go": """package store

func Get(m map[string]string, key string) string {
	return m[NormalizeKey(key)]
}
""",
    "store/other.go": """package store

func Size(m map[string]string) int {
	return len(m)
}
""",
}
GO_EDIT = ("store/keys.go", '	return key + "/"\n', '	return strings.ToLower(key) + "/"\n')


def make(tmp_path: Path, files: dict[str, str], edit: tuple[str, str, str]) -> Path:
    root = tmp_path / "app"
    write_tree(root, dict(files))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    path, old, new = edit
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new))
    return root


def item_paths(pack: object) -> list[str]:
    return [i.path for i in pack.items]  # type: ignore[attr-defined]


def test_python_diff_brings_the_change_its_caller_and_the_test(
    tmp_path: Path, service: ContextService
) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    service.index(root)
    pack = service.context("app", "skip negative items in the total", 3000, diff="HEAD")
    assert pack.rendered.startswith("## Your changes against HEAD")
    assert "+    subtotal = sum(i for i in items if i > 0)" in pack.rendered
    paths = item_paths(pack)
    # The changed definition (as it is now, re-indexed), then who depends on it.
    assert paths[0] == "shop/pricing.py"
    assert "sum(i for i in items if i > 0)" in pack.items[0].text
    assert {"shop/cart.py", "tests/test_cart.py"} <= set(paths)
    assert paths.index("shop/cart.py") < paths.index("tests/test_cart.py")
    assert pack.tokens_used <= 3000
    why = {i.path: " ".join(i.why) for i in pack.items}  # the links are said
    assert "uses total_price" in why["shop/cart.py"]
    assert "uses a caller, Cart.checkout" in why["tests/test_cart.py"]
    # Words in common rank with the query's other hits (a strong one may come before a
    # caller's test) but are not said to use the change.
    assert "uses" not in why["shop/decoy.py"]


def test_typescript_diff_follows_the_import(tmp_path: Path, service: ContextService) -> None:
    root = make(tmp_path, TS, TS_EDIT)
    service.index(root)
    pack = service.context("app", "currency sign", 2000, diff="HEAD")
    paths = item_paths(pack)
    assert paths[0] == "src/format.ts" and "src/invoice.ts" in paths
    assert paths.index("src/invoice.ts") < paths.index("src/unrelated.ts")


def test_go_diff_reaches_the_callers_in_its_package(
    tmp_path: Path, service: ContextService
) -> None:
    root = make(tmp_path, GO, GO_EDIT)
    service.index(root)
    pack = service.context("app", "lower-case keys", 2000, diff="HEAD")
    paths = item_paths(pack)
    assert paths[0] == "store/keys.go" and "store/get.go" in paths
    assert paths.index("store/get.go") < paths.index("store/other.go")


def test_the_users_of_a_removed_definition_come_with_the_diff(
    tmp_path: Path, service: ContextService
) -> None:
    edit = (
        "shop/pricing.py",
        "def round_cents(value: float) -> float:\n    return round(value, 2)\n",
        "",
    )
    root = make(tmp_path, PY, edit)
    service.index(root)
    pack = service.context("app", "inline the rounding", 3000, diff="HEAD")
    why = {i.path: " ".join(i.why) for i in pack.items}
    assert "uses round_cents, removed" in why["shop/report.py"]
    assert "-def round_cents(value: float) -> float:" in pack.rendered


def test_impact_groups_dependents_by_depth_with_their_resolution(
    tmp_path: Path, service: ContextService
) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    service.index(root)
    found = service.impact("app", "total_price", depth=2)
    assert found.ids == ("shop/pricing.py::total_price",)
    (first,), (second,) = found.levels
    assert (first.id, first.via, first.resolution) == (
        "shop/cart.py::Cart.checkout",
        "shop/pricing.py::total_price",
        "resolved",
    )
    assert second.id == "tests/test_cart.py::test_checkout" and second.test
    assert second.via == "shop/cart.py::Cart.checkout"
    assert found.totals == (1, 1)
    assert service.impact("app", "total_price", depth=1).totals == (1,)
    with pytest.raises(InvalidRequest, match="depth"):
        service.impact("app", "total_price", depth=9)
    with pytest.raises(InvalidRequest, match="defined nowhere"):
        service.impact("app", "no_such_thing", depth=1)


def test_a_base_that_is_no_commit_or_an_option_is_refused(tmp_path: Path) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    for bad in ("--output=/tmp/x", "no-such-branch", "HEAD..main", "a b", ""):
        with pytest.raises(InvalidRequest):
            working_diff(root, bad)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InvalidRequest, match="not in a git working tree"):
        working_diff(plain, "HEAD")


def test_the_diff_against_a_branch_and_untracked_files(tmp_path: Path) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    git(root, "branch", "base")
    git(root, "commit", "-qam", "edit")
    (root / "shop" / "new.py").write_text("def fresh() -> int:\n    return 1\n")
    assert working_diff(root, "HEAD").paths == ["shop/new.py"]  # only the untracked one
    change = working_diff(root, "base")
    assert change.paths == ["shop/pricing.py", "shop/new.py"]
    pricing, new = change.files
    assert pricing.status == "modified" and pricing.hunks[0].added == (10,)
    assert new.status == "untracked" and new.hunks[0].added == (1, 2)


def test_hostile_working_trees_are_read_safely(tmp_path: Path) -> None:
    import os

    root = make(tmp_path, {**PY, "sp ace.py": "a = 1\n", 'q"uote.py': "b = 1\n"}, PY_EDIT)
    (root / "sp ace.py").write_text("a = 2\n")
    (root / 'q"uote.py').write_text("b = 2\n")
    secret = tmp_path / "outside.txt"
    secret.write_text("the secret\n")
    (root / "leak.py").symlink_to(secret)  # untracked, pointing outside the repository
    os.mkfifo(tmp_path / "pipe")
    (root / "pipe.py").symlink_to(tmp_path / "pipe")  # would block an open() for ever
    os.chmod(root / "shop" / "cart.py", 0o755)  # a mode change only
    change = working_diff(root, "HEAD")
    by_path = {f.path: f for f in change.files}
    assert by_path["sp ace.py"].hunks[0].added == (1,)
    assert by_path['q"uote.py'].hunks[0].added == (1,)
    assert by_path["shop/cart.py"].status == "mode" and not by_path["shop/cart.py"].hunks
    assert not by_path["leak.py"].hunks and not by_path["pipe.py"].hunks
    from ctxsvc.tokens import TiktokenCounter

    text = change.render(TiktokenCounter("cl100k_base"), 10_000)
    assert "the secret" not in text and "+++ b/leak.py (untracked)" in text
    assert "old mode 100644\nnew mode 100755" in text
    small = change.render(TiktokenCounter("cl100k_base"), 60)
    assert small.startswith("## Your changes") and "more hunks" in small


def test_the_diff_and_the_changed_files_take_their_share_of_the_budget(
    tmp_path: Path, service: ContextService
) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    service.index(root)
    pack = service.context("app", "the total", 1600, diff="HEAD")
    head = pack.rendered.split("\n## shop/")[0]
    assert head.startswith("## Your changes") and service.tokens.count(head) <= 1600 // 8
    # No share for the changed files: their chunks rank by the query alone ...
    mute = replace(service.queries, diff_weights=replace(DIFF_WEIGHTS, own_files=0.0))
    why = {i.path: i.why for i in mute.context("app", "the total", 1600, diff="HEAD").items}
    assert "changed" not in why.get("shop/pricing.py", ())
    # ... and with it, what the diff touched is said to be changed.
    assert "changed" in {i.path: i.why for i in pack.items}["shop/pricing.py"]


def test_a_removal_at_the_end_of_a_definition_reaches_its_callers(
    tmp_path: Path, service: ContextService
) -> None:
    edit = ("shop/pricing.py", "    return round_cents(subtotal * (1 + rate))\n", "")
    root = make(tmp_path, PY, edit)
    service.index(root)
    pack = service.context("app", "the total", 3000, diff="HEAD")
    why = {i.path: " ".join(i.why) for i in pack.items}
    assert "uses total_price" in why["shop/cart.py"]


def test_an_index_rooted_below_the_top_of_the_repository(
    tmp_path: Path, service: ContextService
) -> None:
    top = tmp_path / "mono"
    write_tree(top, {f"pkg/{k}": v for k, v in PY.items()} | {"other/x.py": "x = 1\n"})
    git(top, "init", "-q")
    git(top, "add", "-A")
    git(top, "commit", "-qm", "init")
    path, old, new = PY_EDIT
    target = top / "pkg" / path
    target.write_text(target.read_text().replace(old, new))
    (top / "other" / "x.py").write_text("x = 2\n")  # outside the index: not in its diff
    service.index(top / "pkg")
    change = working_diff(top / "pkg", "HEAD")
    assert change.paths == ["shop/pricing.py"]
    pack = service.context("pkg", "negative items", 2000, diff="HEAD")
    assert pack.items[0].path == "shop/pricing.py"


def test_parse_diff_numbers_lines_in_the_working_tree() -> None:
    text = (
        "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n"
        "@@ -3,4 +3,3 @@ def f\n ctx\n-gone\n-gone too\n+new\n ctx\n"
        "@@ -20,0 +19,2 @@\n+a\n+b\n"
        "diff --git a/y.py b/y.py\ndeleted file mode 100644\n--- a/y.py\n+++ /dev/null\n"
        "@@ -1 +0,0 @@\n-y\n"
    )
    x, y = parse_diff(text)
    assert (x.path, x.status) == ("x.py", "modified")
    assert x.hunks[0].added == (4,) and x.hunks[0].removed_at == (3, 4)  # either side of the gap
    assert x.hunks[1].added == (19, 20)
    assert (y.path, y.old_path, y.status) == ("", "y.py", "deleted")


def test_http_context_takes_a_diff(tmp_path: Path, service: ContextService) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    service.index(root)
    app = create_app(service)
    transport = httpx.ASGITransport(app=app)

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            body = {"repo": "app", "query": "negative items", "budget_tokens": 2000}
            ok = await c.post("/v1/context", json={**body, "diff": "HEAD"})
            bad = await c.post("/v1/context", json={**body, "diff": "--upload-pack=x"})
            dep = await c.get("/v1/repos/app/impact", params={"name": "total_price", "depth": 2})
            return ok, bad, dep

    import anyio

    ok, bad, dep = anyio.run(run)
    assert ok.status_code == 200, ok.text
    assert ok.json()["rendered"].startswith("## Your changes against HEAD")
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"
    assert dep.status_code == 200
    assert [d["id"] for d in dep.json()["levels"][0]] == ["shop/cart.py::Cart.checkout"]


def test_cli_query_diff_and_impact(tmp_path: Path) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    env = cli_env(tmp_path / "home")
    assert run_cli(env, "index", str(root), "--no-vectors").returncode == 0
    done = run_cli(
        env, "query", "app", "negative items", "--diff", "--no-vectors", "--no-server", "--json"
    )
    assert done.returncode == 0, done.stderr
    pack = json.loads(done.stdout)
    assert pack["rendered"].startswith("## Your changes against HEAD")
    assert pack["items"][0]["path"] == "shop/pricing.py"
    done = run_cli(env, "impact", "app", "total_price", "--depth", "2", "--json")
    assert done.returncode == 0, done.stderr
    levels = json.loads(done.stdout)["levels"]
    assert [[d["id"] for d in level] for level in levels] == [
        ["shop/cart.py::Cart.checkout"],
        ["tests/test_cart.py::test_checkout"],
    ]
    bad = run_cli(env, "query", "app", "x", "--diff", "nope", "--no-vectors", "--no-server")
    assert bad.returncode == 2 and "names no commit" in bad.stderr
    done = run_cli(env, "references", "app", "round_cents", "--json")
    assert done.returncode == 0, done.stderr
    assert "shop/report.py::report" in [u["id"] for u in json.loads(done.stdout)["links"]]
    done = run_cli(env, "definition", "app", "total_price", "--at", "shop/cart.py:10")
    assert done.returncode == 0, done.stderr
    assert "shop/pricing.py::total_price" in done.stdout and "guess" not in done.stdout


def test_references_and_definition_say_how_each_link_was_resolved(
    tmp_path: Path, service: ContextService
) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    service.index(root)
    uses = service.references("app", "round_cents", 10)
    by_path = {u.path: u for u in uses.links}
    # Through the import in report.py, and from inside total_price in its own module.
    assert by_path["shop/report.py"].id == "shop/report.py::report"
    assert {u.resolution for u in uses.links} == {"resolved"}
    assert by_path["shop/pricing.py"].id == "shop/pricing.py::total_price"
    # Go to definition from the use in cart.py: the import leads to pricing.py.
    line = (root / "shop/cart.py").read_text().splitlines().index(
        "        return total_price(self.items, rate)"
    ) + 1
    found = service.definition("app", "total_price", "shop/cart.py", line)
    assert [(d.id, d.resolution) for d in found.links] == [
        ("shop/pricing.py::total_price", "resolved")
    ]
    assert found.at == f"shop/cart.py:{line}"
    # No use there: every definition of the name, each marked a guess.
    anywhere = service.definition("app", "total_price", "shop/decoy.py", 1)
    assert [(d.id, d.resolution) for d in anywhere.links] == [
        ("shop/pricing.py::total_price", "name")
    ]
    with pytest.raises(InvalidRequest, match="not an indexed file"):
        service.definition("app", "total_price", "../etc/passwd", 1)


def test_the_diff_shows_only_the_lines_of_files_the_index_serves(
    tmp_path: Path, service: ContextService
) -> None:
    files = {
        **PY,
        "dist/bundle.py": "SECRET_BUILT = 'tracked in a pruned directory'\n",
        "app.min.js": "var a=1;\n",
        "docs/notes.py": "def notes() -> str:\n    return 'excluded by a glob'\n",
    }
    root = make(tmp_path, files, PY_EDIT)
    (root / "dist" / "bundle.py").write_text("SECRET_BUILT = 'changed in a pruned directory'\n")
    (root / "app.min.js").write_text("var a=2;var SECRET_MIN=1;\n")
    (root / "docs" / "notes.py").write_text("def notes() -> str:\n    return 'SECRET_GLOB'\n")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "dep.py").write_text("SECRET_UNTRACKED = 1\n")
    git(root, "rm", "-q", "dist/bundle.py", "--cached")  # deleted at the base, kept on disk
    service.index(root)
    pack = service.context(
        "app", "skip negative items in the total", 3000, diff="HEAD", exclude=["docs/*"]
    )
    text = pack.rendered
    assert "+    subtotal = sum(i for i in items if i > 0)" in text  # an indexed file: in full
    assert "SECRET" not in text
    # Refused files are named with the reason, their lines left out; an excluded one is counted.
    assert "app.min.js\n(not indexed: minified; lines not shown)" in text
    assert "node_modules/dep.py (untracked)\n(not indexed: not where the index looks" in text
    assert (
        "--- a/dist/bundle.py\n+++ /dev/null\n(not indexed: where the index does not look" in text
    )
    assert "1 outside the include/exclude globs" in text
    assert "docs/notes.py" not in text


def test_a_deleted_file_shows_its_lines_when_the_index_served_it(tmp_path: Path) -> None:
    root = make(tmp_path, PY, PY_EDIT)
    (root / "shop" / "report.py").unlink()
    (root / "package-lock.json").write_text("{}\n")
    git(root, "add", "package-lock.json")
    git(root, "commit", "-qm", "lock")
    (root / "package-lock.json").unlink()
    (root / "env" / "lib").mkdir(parents=True)
    (root / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "env" / "lib" / "site.py").write_text("SECRET_VENV = 1\n")
    git(root, "add", "-f", "env/lib/site.py")
    git(root, "commit", "-qm", "a tracked file in a virtualenv")
    (root / "env" / "lib" / "site.py").unlink()
    change = working_diff(root, "HEAD").served(root, {}, max_file_bytes=10**6, max_line_chars=1000)
    shown = {f.old_path: f for f in change.files if not f.path}
    assert shown["shop/report.py"].hunks  # source the index would serve: its removed lines
    assert not shown["package-lock.json"].hunks
    assert "(not indexed: generated; lines not shown)" in shown["package-lock.json"].header
    # A virtualenv (a directory holding pyvenv.cfg) is pruned by the walk, whatever its name.
    assert not shown["env/lib/site.py"].hunks
    assert "where the index does not look" in shown["env/lib/site.py"].header
