"""Context packs through the library API: budgets, detail levels, sessions, expand."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SAMPLE, write_tree

from ctxsvc.compose import build_service
from ctxsvc.errors import InvalidRequest
from ctxsvc.service import ContextService

MORE = {
    f"app/handlers/h{i}.py": (
        f'"""Handler {i}."""\nfrom app.store import Store\n\n\n'
        f"def handle_{i}(store: Store, key: str) -> str:\n"
        f'    """Look up key {i} in the store."""\n'
        f"    value = store.get(key)\n    return value or 'missing {i}'\n"
    )
    for i in range(12)
}


@pytest.fixture
def indexed(service: ContextService, repo: Path) -> ContextService:
    write_tree(repo, MORE)
    service.index(repo)
    return service


@pytest.mark.parametrize("detail", ["snippets", "skeleton", "map", "full"])
def test_a_budget_of_zero_is_an_empty_answer_with_a_manifest(
    indexed: ContextService, detail: str
) -> None:
    pack = indexed.context("demo", "how does the store persist a value", 0, detail=detail)
    assert pack.rendered == "" and pack.tokens_used == 0 and pack.items == ()
    assert pack.omitted  # what would have come: how to ask for it


@pytest.mark.parametrize("budget", [1, 20, 60, 150, 400, 1000, 5000])
@pytest.mark.parametrize("detail", ["snippets", "skeleton", "map", "full"])
def test_never_over_budget_and_counted_exactly(
    indexed: ContextService, budget: int, detail: str
) -> None:
    pack = indexed.context("demo", "how does the store persist a value", budget, detail=detail)
    assert pack.tokens_used == indexed.tokens.count(pack.rendered) <= budget
    assert pack.budget_tokens == budget and pack.encoding == "cl100k_base" and pack.detail == detail
    for item in pack.items:
        assert item.kind == {"snippets": "snippet", "full": "file"}.get(detail, detail)
        assert 1 <= item.start_line <= item.end_line and item.tokens > 0
        assert item.path in pack.rendered


def test_snippets_carry_the_relevant_code_and_what_was_left_out(
    indexed: ContextService, repo: Path
) -> None:
    pack = indexed.context("demo", "Store.put writes the data as JSON to the path", 300)
    top = pack.items[0]
    assert top.path == "app/store.py" and top.why
    lines = (repo / top.path).read_text().split("\n")
    assert "def put" in "\n".join(lines[top.start_line - 1 : top.end_line])
    assert pack.omitted and all(o.tokens > 0 for o in pack.omitted)
    assert pack.index is not None and pack.index.commit and pack.index.changed_since == ()
    # The path is given once per file, even when several snippets of it are sent.
    assert pack.rendered.count("## app/store.py") == 1


def test_map_and_skeleton_name_symbols(indexed: ContextService) -> None:
    m = indexed.context("demo", "server handles a request", 2000, detail="map")
    assert any(i.path == "app/server.py" and "Server.handle" in i.text for i in m.items)
    s = indexed.context("demo", "server handles a request", 2000, detail="skeleton")
    server = next(i for i in s.items if i.path == "app/server.py")
    assert (
        "def handle(self, path: str) -> str" in server.text and "Answer one request." in server.text
    )


def test_full_detail_sends_whole_files(indexed: ContextService, repo: Path) -> None:
    pack = indexed.context("demo", "key value store persisted as JSON", 3000, detail="full")
    item = next(i for i in pack.items if i.path == "app/store.py")
    assert item.start_line == 1 and item.end_line == len(
        (repo / "app/store.py").read_text().rstrip("\n").split("\n")
    )


def test_include_and_exclude(indexed: ContextService) -> None:
    only = indexed.context("demo", "store get key", 2000, include=["app/handlers/*"])
    assert only.items and all(i.path.startswith("app/handlers/") for i in only.items)
    none = indexed.context("demo", "store get key", 2000, exclude=["app/*"])
    assert all(not i.path.startswith("app/") for i in none.items)


def test_session_gets_new_material_and_survives_restart(indexed: ContextService, settings) -> None:  # type: ignore[no-untyped-def]
    first = indexed.context("demo", "handler looks up a key in the store", 400, session_id="s1")
    sent = {(i.path, i.start_line) for i in first.items}
    assert sent and first.already_sent == ()
    # A new service over the same files: the ledger is durable.
    again = build_service(indexed.settings, store=indexed.store, tokens=indexed.tokens,
                          embedder=indexed.embedder)  # fmt: skip
    second = again.context("demo", "handler looks up a key in the store", 400, session_id="s1")
    assert not sent & {(i.path, i.start_line) for i in second.items}
    assert {(s.path, s.start_line) for s in second.already_sent} >= sent
    assert "Already sent in this session" in second.rendered
    other = again.context("demo", "handler looks up a key in the store", 400, session_id="s2")
    assert {(i.path, i.start_line) for i in other.items} == sent
    assert again.forget("s1") > 0
    assert (
        again.context(
            "demo", "handler looks up a key in the store", 400, session_id="s1"
        ).already_sent
        == ()
    )


@pytest.mark.parametrize("budget", [1, 10, 25, 60])
def test_the_already_sent_note_fits_any_budget(indexed: ContextService, budget: int) -> None:
    query = "handler looks up a key in the store"
    assert indexed.context("demo", query, 2000, session_id="s1").items
    pack = indexed.context("demo", query, budget, session_id="s1")
    assert pack.already_sent and pack.tokens_used == indexed.tokens.count(pack.rendered) <= budget
    assert budget > 1 or pack.rendered == ""


def test_a_merged_block_names_every_definition_it_holds(indexed: ContextService) -> None:
    pack = indexed.context("demo", "Store.put writes the data as JSON to the path", 300)
    store = next(i for i in pack.items if i.path == "app/store.py")
    names = "Store, Store.__init__, Store.get, Store.put"
    assert store.text.split("\n")[0] == f"lines {store.start_line}-{store.end_line} ({names}):"


def test_changed_file_is_resent_to_the_session(indexed: ContextService, repo: Path) -> None:
    first = indexed.context("demo", "Store.put writes JSON", 300, session_id="s")
    assert any(i.path == "app/store.py" for i in first.items)
    store = repo / "app" / "store.py"
    store.write_text(
        store.read_text().replace("json.dump(self.data, f)", "json.dump(self.data, f, indent=2)")
    )
    second = indexed.context("demo", "Store.put writes JSON", 300, session_id="s", refresh=True)
    assert second.index is not None and second.index.changed_since == ()
    assert any(i.path == "app/store.py" and "indent=2" in i.text for i in second.items)


def test_changed_files_are_listed_until_refreshed(indexed: ContextService, repo: Path) -> None:
    (repo / "app" / "server.py").write_text("PORT = 1\n")
    (repo / "app" / "extra.py").write_text("def extra():\n    return 1\n")
    pack = indexed.context("demo", "port", 500)
    assert pack.index is not None and set(pack.index.changed_since) == {
        "app/server.py",
        "app/extra.py",
    }
    pack = indexed.context("demo", "extra", 500, refresh=True)
    assert pack.index is not None and pack.index.changed_since == ()
    assert any(i.path == "app/extra.py" for i in pack.items)


def test_expand_symbol_with_callers_and_callees(indexed: ContextService) -> None:
    pack = indexed.expand("demo", symbol="Store.get", budget_tokens=3000, callers=True)
    assert pack.items[0].symbol == "Store.get" and pack.items[0].path == "app/store.py"
    callers = {i.path for i in pack.items[1:]}
    assert "app/server.py" in callers and any(p.startswith("app/handlers/") for p in callers)
    pack = indexed.expand("demo", symbol="handle", budget_tokens=3000, callees=True)
    assert pack.items[0].symbol == "Server.handle"
    assert any(i.symbol == "Store.get" for i in pack.items)


def test_expand_path_and_lines(indexed: ContextService, repo: Path) -> None:
    pack = indexed.expand(
        "demo", path="app/server.py", start_line=9, end_line=12, budget_tokens=500
    )
    (item,) = pack.items
    lines = (repo / "app/server.py").read_text().split("\n")
    assert (item.start_line, item.end_line) == (9, 12) and lines[10] in item.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"symbol": "NoSuchThing"}, "no definition named"),
        ({"path": "../etc/passwd"}, "not an indexed file"),
        ({"path": "app/server.py", "start_line": 5, "end_line": 2}, "invalid line range"),
        ({}, "needs a symbol"),
    ],
)
def test_expand_rejects_bad_targets(
    indexed: ContextService, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        indexed.expand("demo", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "budget", "kwargs", "message"),
    [
        ("", 100, {}, "empty"),
        ("x" * 9000, 100, {}, "longer than"),
        ("q", -1, {}, "budget_tokens"),
        ("q", 10**9, {}, "budget_tokens"),
        ("q", 100, {"detail": "everything"}, "unknown detail"),
        ("q", 100, {"session_id": "bad id!"}, "session"),
    ],
)
def test_bad_requests_are_refused(
    indexed: ContextService, query: str, budget: int, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        indexed.context("demo", query, budget, **kwargs)  # type: ignore[arg-type]


def test_sample_is_untouched() -> None:
    assert "app/server.py" in SAMPLE


def test_unknown_home_directory_is_a_clear_error(indexed: ContextService) -> None:
    from ctxsvc.errors import InvalidPath, RepoNotFound

    with pytest.raises(RepoNotFound):
        indexed.context("~no-such-user-xyz/repo", "q", 100)
    with pytest.raises(InvalidPath, match="unknown user"):
        indexed.index("~no-such-user-xyz/repo")
