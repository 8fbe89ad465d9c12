"""The one object every adapter drives: index, status and context queries."""

from __future__ import annotations

import re
from pathlib import Path

from ctxsvc.errors import InvalidPath, InvalidRequest, RepoNotFound
from ctxsvc.indexing import Reporter, index_repository
from ctxsvc.models import ContextPack, IndexSummary, IndexVersion, RepoStatus
from ctxsvc.packing import pack
from ctxsvc.retrieval import retrieve
from ctxsvc.settings import Settings
from ctxsvc.stores.lance import IndexMeta, LanceStore
from ctxsvc.tokens import TokenCounter
from indexers.discover import discover
from indexers.embed import Embedder

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_BUDGET = 200_000
MAX_QUERY_CHARS = 8_000


def repo_name_for(root: Path) -> str:
    """A valid index name derived from a directory name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-.") or "repo"
    return name[:64]


class ContextService:
    """Indexes repositories and answers context queries over them.

    The heavy parts come in through the constructor: the store, the token
    counter and (optionally) the embedder. ``embedder_error`` says why there
    is no embedder, when loading one failed: indexing then degrades to full
    text and symbols and says so.
    """

    def __init__(
        self,
        settings: Settings,
        store: LanceStore,
        tokens: TokenCounter,
        embedder: Embedder | None = None,
        *,
        embedder_error: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.embedder = embedder
        self.embedder_error = embedder_error

    # -- indexing -----------------------------------------------------------

    def index(
        self,
        path: str | Path,
        name: str | None = None,
        *,
        vectors: bool = True,
        reembed: bool = False,
        rebuild: bool = False,
        reporter: Reporter | None = None,
    ) -> IndexSummary:
        """Index (or re-index incrementally) the directory at ``path``."""
        root = _directory(path)
        name = name or repo_name_for(root)
        if not _NAME.match(name):
            raise InvalidRequest(
                f"invalid index name {name!r}",
                hint="use letters, digits, '.', '_' or '-', 64 characters at most",
            )
        existing = self.store.meta(name)
        if existing is not None and Path(existing.root) != root and not rebuild:
            raise InvalidRequest(
                f"the name {name!r} already indexes {existing.root}",
                hint="choose another --name, or pass --rebuild to re-point it",
            )
        if rebuild and existing is not None:
            self.store.drop(name)
        status = "complete" if vectors and self.embedder else ("missing" if vectors else "disabled")
        return index_repository(
            self.store,
            root,
            name,
            self.settings,
            self.tokens,
            self.embedder if vectors else None,
            vectors=status,
            reembed=reembed,
            reporter=reporter,
        )

    # -- status -------------------------------------------------------------

    def resolve(self, name_or_path: str) -> IndexMeta:
        """The index named ``name_or_path``, or the one whose root is that directory."""
        meta = self.store.meta(name_or_path) if _NAME.match(name_or_path) else None
        if meta is not None:
            return meta
        candidate = Path(name_or_path).expanduser()
        if candidate.is_dir():
            root = str(candidate.resolve())
            for m in self.store.list_meta():
                if m.root == root:
                    return m
        raise RepoNotFound(
            f"no index named or rooted at {name_or_path!r}",
            hint="run `ctxsvc index PATH` first; `ctxsvc status` lists what is indexed",
        )

    def status(self, name_or_path: str) -> RepoStatus:
        """What is indexed, how fresh it is, and what is degraded."""
        meta = self.resolve(name_or_path)
        files = self.store.reader(meta.name).files()
        changed: list[str] = []
        added: list[str] = []
        root = Path(meta.root)
        degraded: list[str] = []
        if root.is_dir():
            found = discover(root, max_file_bytes=self.settings.max_file_bytes)
            current = {f.path: f for f in found.files}
            for path, f in current.items():
                rec = files.get(path)
                if rec is None:
                    added.append(path)
                elif (rec.size, rec.mtime_ns) != (f.size, f.mtime_ns):
                    changed.append(path)
            skipped = {s.path for s in found.skipped}
            deleted = [p for p in files if p not in current and p not in skipped]
        else:
            degraded.append(f"root {meta.root} no longer exists")
            deleted = list(files)
        if meta.vectors != "complete":
            degraded.append(f"vectors {meta.vectors}: vector search is off or partial")
        stats = meta.stats
        return RepoStatus(
            name=meta.name,
            root=meta.root,
            commit=meta.commit,
            indexed_at=meta.indexed_at,
            files=int(stats.get("files", 0)),
            chunks=int(stats.get("chunks", 0)),
            symbols=int(stats.get("symbols", 0)),
            model=meta.model,
            dimension=meta.dimension,
            tokenizer=meta.tokenizer,
            vectors=meta.vectors,
            changed=tuple(sorted(changed)),
            added=tuple(sorted(added)),
            deleted=tuple(sorted(deleted)),
            degraded=tuple(degraded),
            skipped=dict(stats.get("skipped", {})),
            version=meta.generation,
        )

    def repos(self) -> list[IndexMeta]:
        return self.store.list_meta()

    # -- context ------------------------------------------------------------

    def context(self, name_or_path: str, query: str, budget_tokens: int) -> ContextPack:
        """The snippets most relevant to ``query``, within ``budget_tokens``."""
        if not query.strip():
            raise InvalidRequest("the query is empty", hint="describe the task in words")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= budget_tokens <= MAX_BUDGET:
            raise InvalidRequest(
                f"budget_tokens must be between 1 and {MAX_BUDGET}, got {budget_tokens}"
            )
        meta = self.resolve(name_or_path)
        reader = self.store.reader(meta.name)
        # Enough candidates to fill the budget with chunks of the target size, twice over.
        limit = max(60, 2 * budget_tokens // self.settings.chunk_target_tokens)
        hits, degraded = retrieve(reader, query, self.embedder, limit=limit)
        status = self.status(meta.name)
        version = IndexVersion(
            commit=meta.commit,
            indexed_at=meta.indexed_at,
            generation=meta.generation,
            changed_since=status.changed + status.added + status.deleted,
        )
        return pack(
            meta.name, query, hits, budget_tokens, self.tokens, index=version, degraded=degraded
        )


def _directory(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidPath(f"{p} does not exist")
    if not p.is_dir():
        raise InvalidPath(f"{p} is not a directory", hint="give the repository's root directory")
    return p.resolve()
