"""Branch-aware indexes: a switch re-embeds only what it changed, answers say their branch
and commit, and the version of a branch the working tree left answers for it.

Real git in a temp dir, real LanceDB, the hashlib fake embedder (which counts what it embeds).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import cli_env, git, run_cli
from fakes import HashEmbedder

from ctxsvc.branches import BranchViews
from ctxsvc.compose import build_service
from ctxsvc.errors import BranchNotIndexed
from ctxsvc.http import create_app
from ctxsvc.indexers.gitref import Head, read_head
from ctxsvc.indexing import NullReporter
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores import lance_snapshots, lance_writer
from ctxsvc.stores.lance import RepoReader
from ctxsvc.tokens import TiktokenCounter
from ctxsvc.view import RepoView

QUESTION = "store get a value by key"
MAIN_GET = "        return self.data.get(key)\n"
FEATURE_GET = "        found = self.data.get(key.strip().lower())\n        return found or None\n"


@pytest.fixture
def branchy(repo: Path) -> Path:
    """The demo repository with its one commit on a branch named main."""
    git(repo, "branch", "-M", "main")
    return repo


def service_of(
    home: Path, counter: TiktokenCounter, model: HashEmbedder, **env: str
) -> ContextService:
    settings = Settings.from_env(env, home=home)
    return build_service(settings, tokens=counter, embedder=model)


def chunk_hashes(service: ContextService) -> set[str]:
    return {c.content_hash for c in service.store.reader("demo").chunks()}


def to_feature(repo: Path, name: str = "feature", new: str = FEATURE_GET) -> str:
    """Check out a new branch ``name`` changing one function of one file; its commit."""
    git(repo, "checkout", "-qb", name)
    store = repo / "app" / "store.py"
    store.write_text(store.read_text().replace(MAIN_GET, new))
    git(repo, "commit", "-qam", f"{name}: get normalises the key")
    return git(repo, "rev-parse", "HEAD").strip()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def switched(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter
) -> tuple[ContextService, str, str]:
    """Indexed on main, then on feature (checked out): the service, and the two commits."""
    service = service_of(tmp_path / "home", counter, HashEmbedder())
    service.index(branchy)
    main = head(branchy)
    feature = to_feature(branchy)
    service.index(branchy)
    return service, main, feature


def test_a_switch_embeds_only_the_changed_chunks_and_a_switch_back_none(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter
) -> None:
    model = HashEmbedder()
    service = service_of(tmp_path / "home", counter, model)
    first = service.index(branchy)
    assert first.chunks_embedded == model.embedded == len(chunk_hashes(service))
    on_main = chunk_hashes(service)

    to_feature(branchy)
    before = model.embedded
    s = service.index(branchy)
    new = chunk_hashes(service) - on_main
    assert new and s.files_indexed == 1 and s.branch == "feature"
    assert model.embedded - before == s.chunks_embedded == len(new)

    git(branchy, "checkout", "-q", "main")
    before = model.embedded
    back = service.index(branchy)
    assert back.files_indexed == 1 and back.chunks_embedded == 0 and model.embedded == before
    assert back.vectors == "complete" and chunk_hashes(service) == on_main


def test_without_snapshots_a_switch_back_embeds_again(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter
) -> None:
    # The control: with no snapshot kept, the vectors main's chunks lost are embedded again.
    model = HashEmbedder()
    service = service_of(tmp_path / "home", counter, model, CTXSVC_BRANCH_SNAPSHOTS="0")
    service.index(branchy)
    on_main = chunk_hashes(service)
    to_feature(branchy)
    service.index(branchy)
    gone = on_main - chunk_hashes(service)
    git(branchy, "checkout", "-q", "main")
    back = service.index(branchy)
    assert gone and back.chunks_embedded == len(gone)
    assert service.status("demo").snapshots == ()


def test_answers_name_their_branch_and_commit(switched: tuple[ContextService, str, str]) -> None:
    service, main, commit = switched
    pack = service.context("demo", QUESTION, 1500)
    assert pack.index is not None and (pack.index.branch, pack.index.commit) == ("feature", commit)
    found = service.search("demo", QUESTION)
    assert found.index is not None and found.index.branch == "feature"
    mapped = service.repo_map("demo", 500)
    assert mapped.index is not None and mapped.index.commit == commit
    status = service.status("demo")
    assert (status.branch, status.commit) == ("feature", commit)
    [kept] = status.snapshots
    assert (kept.branch, kept.commit) == ("main", main) and kept.indexed_at


def test_a_query_for_the_branch_left_answers_from_its_snapshot(
    branchy: Path, switched: tuple[ContextService, str, str]
) -> None:
    service, main, feature = switched
    # The working tree's own commit is the index itself, no snapshot.
    mine = service.search("demo", QUESTION, branch=feature[:10])
    assert mine.index is not None and mine.index.commit == feature
    assert not any(d.startswith("branch snapshot") for d in mine.degraded)
    # Drift of the working tree too: nothing of it may reach an answer from main.
    store = branchy / "app" / "store.py"
    store.write_text(store.read_text() + "\n\ndef unsaved_edit() -> None:\n    pass\n")

    pack = service.context("demo", QUESTION, 3000, branch="main")
    assert pack.index is not None and (pack.index.branch, pack.index.commit) == ("main", main)
    assert pack.index.changed_since == ()
    text = "\n".join(i.text for i in pack.items if i.path == "app/store.py")
    assert MAIN_GET.strip() in text and "strip().lower()" not in text
    assert "unsaved_edit" not in pack.rendered
    [note] = [d for d in pack.degraded if d.startswith("branch snapshot")]
    assert f"branch main, commit {main[:12]}" in note and "branch feature" in note
    by_commit = service.search("demo", QUESTION, branch=main[:10])  # a kept branch's commit
    assert by_commit.index is not None and by_commit.index.branch == "main"
    assert any(d.startswith("branch snapshot") for d in by_commit.degraded)
    found = service.search("demo", QUESTION, branch="main")
    assert found.index is not None and found.index.branch == "main"
    assert any(d.startswith("branch snapshot") for d in found.degraded)
    # What the snapshot's answer omits is expanded from the snapshot too.
    kept = service.expand("demo", symbol="Store.get", branch="main")
    assert MAIN_GET.strip() in kept.rendered and "strip().lower()" not in kept.rendered
    assert kept.index is not None and kept.index.branch == "main"
    assert any("expand what it omits with the same branch" in d for d in kept.degraded)
    assert "strip().lower()" in service.expand("demo", symbol="Store.get").rendered
    # The working tree's own branch is the index itself, refreshed as ever.
    own = service.context("demo", QUESTION, 3000, branch="feature", refresh=True)
    assert own.index is not None and own.index.branch == "feature"
    assert not any(d.startswith("branch snapshot") for d in own.degraded)
    assert own.index.changed_since == () and own.index.generation == 3


@pytest.mark.anyio
async def test_an_unknown_branch_is_a_typed_error_over_http_and_cli(
    tmp_path: Path, switched: tuple[ContextService, str, str]
) -> None:
    service = switched[0]
    home = service.settings.home
    with pytest.raises(BranchNotIndexed) as caught:
        service.context("demo", QUESTION, 1000, branch="nope")
    assert not caught.value.retryable and "branch main" in caught.value.hint

    app = create_app(service, allowed_roots=[tmp_path])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as client:
        for path in ("/v1/context", "/v1/search", "/v1/expand"):
            ask = {"symbol": "Store.get"} if path == "/v1/expand" else {"query": QUESTION}
            r = await client.post(path, json={"repo": "demo", **ask, "branch": "nope"})
            assert r.status_code == 404, r.text
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["code"] == "branch_not_indexed" and body["retryable"] is False
            assert "branch main" in body["hint"] and "branch feature" in body["hint"]
        r = await client.post(
            "/v1/context", json={"repo": "demo", "query": QUESTION, "branch": "main"}
        )
        assert r.status_code == 200 and r.json()["index"]["branch"] == "main"

    done = run_cli(
        cli_env(home), "query", "demo", QUESTION, "--branch", "nope", "--no-vectors",
        "--no-server",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    [line, hint] = done.stderr.strip().splitlines()
    assert line.startswith("error (branch_not_indexed): ") and "'nope'" in line
    assert "branch main" in hint
    done = run_cli(
        cli_env(home), "expand", "demo", "--symbol", "Store.get", "--branch", "main",
        "--no-server",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert MAIN_GET.strip() in done.stdout and "strip().lower()" not in done.stdout
    status = run_cli(cli_env(home), "status", "demo", "--no-server")
    assert status.returncode == 0 and "branch main" in status.stdout


def test_snapshots_beyond_the_setting_release_the_least_recently_left(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Versions go as soon as nobody pins them (a second after), so what survives is protected.
    monkeypatch.setattr(lance_writer, "KEEP_VERSIONS", timedelta(milliseconds=1))
    monkeypatch.setattr(lance_snapshots, "SNAPSHOT_MARGIN", timedelta(milliseconds=300))
    service = service_of(tmp_path / "home", counter, HashEmbedder(), CTXSVC_BRANCH_SNAPSHOTS="1")
    service.index(branchy)
    main_pins = service.store.meta("demo").versions  # type: ignore[union-attr]
    time.sleep(1.2)
    to_feature(branchy)
    service.index(branchy)
    time.sleep(1.2)
    git(branchy, "checkout", "-q", "main")
    to_feature(branchy, "other", "        return self.data.get(key) or None\n")
    service.index(branchy)
    # main's snapshot survived the prunes of the feature run: it still answers
    # until the run on other evicts it for feature's.
    assert [s.branch for s in service.status("demo").snapshots] == ["feature"]
    assert service.context("demo", QUESTION, 800, branch="feature").items
    with pytest.raises(BranchNotIndexed):
        service.context("demo", QUESTION, 800, branch="main")
    time.sleep(1.2)
    store = branchy / "app" / "store.py"
    store.write_text(store.read_text() + "\n# one more change\n")
    service.index(branchy)
    chunks = service.store.open(service.store.meta("demo").table("chunks"))  # type: ignore[union-attr]
    kept = {v["version"] for v in chunks.list_versions()}
    assert main_pins["chunks"] not in kept  # released: pruned with the rest
    feature = service.store.meta("demo").snapshots[0]  # type: ignore[union-attr]
    assert feature.versions["chunks"] in kept


def test_a_snapshot_survives_prunes_that_would_take_its_versions(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lance_writer, "KEEP_VERSIONS", timedelta(milliseconds=1))
    monkeypatch.setattr(lance_snapshots, "SNAPSHOT_MARGIN", timedelta(milliseconds=300))
    service = service_of(tmp_path / "home", counter, HashEmbedder())
    service.index(branchy)
    time.sleep(1.2)
    to_feature(branchy)
    for n in range(2):  # runs on feature prune everything older than a second but main's pins
        store = branchy / "app" / "store.py"
        store.write_text(store.read_text() + f"\n# change {n}\n")
        service.index(branchy)
        time.sleep(1.2)
    pack = service.context("demo", QUESTION, 3000, branch="main")
    assert MAIN_GET.strip() in pack.rendered and pack.index is not None
    assert pack.index.branch == "main"
    # Its vectors survived too: the vector signal ranked, and nothing says they are missing.
    assert not [d for d in pack.degraded if d.startswith(("vector", "ranking"))], pack.degraded
    assert any(w.startswith("vector") for item in pack.items for w in item.why)


def test_a_detached_head_is_recorded_by_its_commit(
    branchy: Path, tmp_path: Path, counter: TiktokenCounter
) -> None:
    service = service_of(tmp_path / "home", counter, HashEmbedder())
    first = head(branchy)
    store = branchy / "app" / "store.py"
    store.write_text(store.read_text().replace(MAIN_GET, FEATURE_GET))
    git(branchy, "commit", "-qam", "main moves on")
    git(branchy, "checkout", "-q", "--detach", first)
    s = service.index(branchy)
    assert s.branch is None and s.commit == first
    status = service.status("demo")
    assert (status.branch, status.commit) == (None, first)

    git(branchy, "checkout", "-q", "main")
    service.index(branchy)
    [kept] = service.status("demo").snapshots
    assert (kept.branch, kept.commit) == (None, first)
    pack = service.context("demo", QUESTION, 3000, branch=first[:8])
    assert pack.index is not None and (pack.index.branch, pack.index.commit) == (None, first)
    assert MAIN_GET.strip() in pack.rendered
    assert any(f"detached, commit {first[:12]}" in d for d in pack.degraded)


@pytest.fixture
def indexed(branchy: Path, tmp_path: Path, counter: TiktokenCounter) -> ContextService:
    """A service with the demo repository indexed on main."""
    service = service_of(tmp_path / "home", counter, HashEmbedder())
    service.index(branchy)
    return service


class CheckoutMidRun(NullReporter):
    """Checks out ``branch`` as the parse stage starts: a run that began before a checkout
    moved HEAD (git writes the files first, HEAD last)."""

    def __init__(self, repo: Path, branch: str) -> None:
        self.repo, self.branch = repo, branch

    def start(self, stage: str, total: int | None) -> None:
        if stage == "parse":
            git(self.repo, "checkout", "-q", self.branch)


def test_a_run_that_sees_head_move_is_kept_as_no_snapshot(
    branchy: Path, indexed: ContextService
) -> None:
    service = indexed
    feature = to_feature(branchy)
    git(branchy, "checkout", "-q", "main")
    (branchy / "app" / "extra.py").write_text("def extra() -> int:\n    return 1\n")
    s = service.index(branchy, reporter=CheckoutMidRun(branchy, "feature"))
    [warning] = [w for w in s.warnings if w.startswith("HEAD moved while indexing")]
    assert "from branch main" in warning and "now branch feature" in warning
    # Labelled with HEAD as read at the end; main's clean row is not kept either (the run
    # cannot tell which branch it left).
    assert (s.branch, s.commit) == ("feature", feature)
    assert service.status("demo").snapshots == ()
    # The next run, settled, does not keep the mixed row as feature's snapshot.
    git(branchy, "checkout", "-q", "main")
    again = service.index(branchy)
    assert not [w for w in again.warnings if w.startswith("HEAD moved")]
    assert again.branch == "main" and service.status("demo").snapshots == ()
    with pytest.raises(BranchNotIndexed):
        service.context("demo", QUESTION, 800, branch="feature")
    # Settled rows are kept as ever.
    git(branchy, "checkout", "-q", "feature")
    service.index(branchy)
    assert [k.branch for k in service.status("demo").snapshots] == ["main"]


def test_a_run_started_under_a_git_lock_is_kept_as_no_snapshot(
    branchy: Path, indexed: ContextService
) -> None:
    service = indexed
    lock = branchy / ".git" / "index.lock"
    lock.write_text("")
    s = service.index(branchy)
    lock.unlink()
    assert any("a git command held the index lock" in w for w in s.warnings)
    to_feature(branchy)
    service.index(branchy)
    assert service.status("demo").snapshots == ()


def test_a_commit_of_indexed_edits_is_stale_and_a_refresh_names_it(
    branchy: Path, indexed: ContextService
) -> None:
    service = indexed
    store = branchy / "app" / "store.py"
    store.write_text(store.read_text().replace(MAIN_GET, FEATURE_GET))
    service.index(branchy)
    git(branchy, "commit", "-qam", "get normalises the key")
    stale = service.context("demo", QUESTION, 1000)
    assert stale.index is not None and stale.index.commit != head(branchy)
    assert any(d.startswith("HEAD moved: indexed on branch main") for d in stale.degraded)
    fresh = service.context("demo", QUESTION, 1000, refresh=True)
    assert fresh.index is not None and fresh.index.commit == head(branchy)
    assert not any(d.startswith("HEAD moved") for d in fresh.degraded)


def test_a_new_branch_checked_out_is_stale_and_a_refresh_keeps_the_old_one(
    branchy: Path, indexed: ContextService
) -> None:
    service = indexed
    main = head(branchy)
    git(branchy, "checkout", "-qb", "x")
    # The branch checked out now is the index's (stale), not an unknown one.
    pack = service.context("demo", QUESTION, 1000, branch="x")
    assert any(d.startswith("HEAD moved") for d in pack.degraded)
    pack = service.context("demo", QUESTION, 1000, branch="x", refresh=True)
    assert pack.index is not None and (pack.index.branch, pack.index.commit) == ("x", main)
    [kept] = service.status("demo").snapshots
    assert (kept.branch, kept.commit) == ("main", main)


def test_head_is_read_from_files_in_worktrees_and_packed_refs(branchy: Path) -> None:
    commit = head(branchy)
    assert read_head(branchy) == Head("main", commit)
    assert read_head(branchy / "app") == Head("main", commit)
    git(branchy, "pack-refs", "--all")
    assert not (branchy / ".git" / "refs" / "heads" / "main").exists()
    assert read_head(branchy) == Head("main", commit)
    tree = branchy.parent / "wt"
    git(branchy, "worktree", "add", "-q", "-b", "side", str(tree))
    assert read_head(tree) == Head("side", commit)
    git(tree, "checkout", "-q", "--detach")
    assert read_head(tree) == Head(None, commit)
    (branchy / ".git" / "HEAD").write_text("garbage\n")
    assert not read_head(branchy).known
    assert read_head(branchy.parent) == Head(None, None)  # outside git


def test_an_unreadable_snapshot_is_dropped_at_the_next_commit(
    branchy: Path, switched: tuple[ContextService, str, str]
) -> None:
    service = switched[0]
    meta = service.store.meta("demo")
    assert meta is not None
    [snap] = meta.snapshots
    assert service.store.path is not None
    versions = service.store.path / f"{snap.table('chunks')}.lance" / "_versions"
    pinned = snap.versions["chunks"]
    for name in (f"{2**64 - 1 - pinned:020d}.manifest", f"{pinned}.manifest"):
        (versions / name).unlink(missing_ok=True)
    store = branchy / "app" / "store.py"
    store.write_text(store.read_text() + "\n# one more change\n")
    s = service.index(branchy)
    [warning] = [w for w in s.warnings if "cannot be read" in w]
    assert "snapshot of branch main" in warning and "dropped" in warning
    assert service.status("demo").snapshots == ()
    with pytest.raises(BranchNotIndexed):
        service.context("demo", QUESTION, 800, branch="main")
    # Stale-vector deletion is on again: only the working tree's chunks keep a vector.
    vectors = service.store.reader("demo").table("vectors")
    kept = set(vectors.search().select(["content_hash"]).limit(None).to_arrow()["content_hash"])
    assert {str(h) for h in kept} == chunk_hashes(service)


def test_concurrent_first_requests_of_a_snapshot_load_it_once(
    switched: tuple[ContextService, str, str],
) -> None:
    service = switched[0]
    loads = []

    def load(reader: RepoReader) -> RepoView:
        loads.append(reader.meta.branch)
        time.sleep(0.3)
        return RepoView.load(reader)

    views = BranchViews(service.store, load=load)
    meta = service.store.meta("demo")
    assert meta is not None
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: views.view(meta, "main"), range(8)))
    assert loads == ["main"]
    assert all(g is not None and g[0] is got[0][0] for g in got)  # type: ignore[index]
