"""The one exception hierarchy of ctxsvc.

Every failure a user can meet is one of these. Each class knows whether a
retry can help (``retryable``), a stable machine code (``code``), the HTTP
status and the CLI exit code it maps to, and carries a ``hint`` saying what
to do next. Adapters (CLI, HTTP) translate; nothing else catches broadly.
The Python client (``ctxsvc.client``) raises the same classes from a
server's problem responses, chosen by ``code``, so callers catch one tree.

    CtxError
    ├── UserError                  not retryable: fix the input
    │   ├── ConfigError            a setting or option is invalid
    │   ├── InvalidPath            outside the root, missing, not a directory
    │   │   └── RootChanged        an index's root is no longer the directory it indexed
    │   ├── InvalidRequest         malformed arguments (budget, query, ...)
    │   │   └── AmbiguousSymbol    a symbol name several definitions have: the candidates
    │   ├── NotFound               no such session, checkpoint or job
    │   │   ├── RepoNotFound       no index under that name or path
    │   │   └── BranchNotIndexed   no snapshot of that branch (or commit) is kept
    │   ├── NoTasks                no commit of a history qualifies as a benchmark task
    │   ├── ModelMismatch          index built with another embedding model
    │   ├── Unauthorized           the server wants another bearer token
    │   ├── Forbidden              a foreign Host or Origin (DNS rebinding)
    │   └── ReadOnly               a write (index, delete) asked of a read-only replica
    ├── IndexBusy                  retryable: another run holds the repo lock
    ├── ModelUnavailable           not retryable: the embedding model cannot load
    ├── RankerUnavailable          not retryable: the learned ranker's model file (fusion ranks)
    ├── GitFailed                  not retryable: git is missing or failed reading a diff
    ├── SummarizerFailed           retryable: the optional LLM summarizer did not answer
    ├── Overloaded                 retryable: the server has too many requests in flight
    ├── DeadlineExceeded           retryable: the request ran past its deadline
    ├── SlowRequest                retryable: the request body did not arrive in time
    ├── Unreachable                retryable: no answer from the server (raised by the client)
    └── StoreError                 retryable: LanceDB read or write failed
        └── StoreCorrupt           not retryable: the index needs a rebuild
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict, Unpack


class _Differs(TypedDict, total=False):
    """What a subclass of ``CtxError`` may state besides its ``code``."""

    retryable: bool
    http_status: int
    exit_code: int


class CtxError(Exception):
    """Base of every ctxsvc failure.

    A subclass states its ``code`` and whatever differs from its base as class
    keywords: ``class NotFound(UserError, code="not_found", http_status=404)``.
    """

    code = "internal"
    retryable = False
    http_status = 500
    exit_code = 1
    # Set on errors that ``ctxsvc.client`` raises from a server's problem response.
    request_id: str | None = None
    problem: dict[str, object] | None = None

    def __init_subclass__(cls, *, code: str, **differs: Unpack[_Differs]) -> None:
        super().__init_subclass__()
        cls.code = code
        for name, value in differs.items():
            setattr(cls, name, value)

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, object]:
        """The error as plain data, for JSON output."""
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            **self.extensions(),
        }

    def extensions(self) -> dict[str, object]:
        """What this error says beyond its message, as JSON values: the extension
        members of its problem (RFC 9457), the data of its MCP tool error."""
        return {}

    def restore(self, members: Mapping[str, object]) -> None:
        """Take back what :meth:`extensions` gave, from a problem's members (the client)."""


# Exit codes 69, 74 and 75 are sysexits' EX_UNAVAILABLE, EX_IOERR and EX_TEMPFAIL.
class UserError(CtxError, code="bad_input", http_status=400, exit_code=2): ...


class ConfigError(UserError, code="bad_config"): ...


class InvalidPath(UserError, code="invalid_path"): ...


class RootChanged(InvalidPath, code="root_changed", http_status=409):
    """The directory at an index's root is not the one indexed (replaced, now a link)."""


class InvalidRequest(UserError, code="invalid_request", http_status=422): ...


class AmbiguousSymbol(InvalidRequest, code="ambiguous_symbol"):
    """A name that several definitions have, where one was wanted.

    ``candidates`` are (id, kind, line) of each, ids being ``path::Qualified.name``;
    the message names the first ``SHOWN``, so that the caller can ask again with
    one, and the data (``extensions``) lists the first ``LISTED``.
    """

    SHOWN = 10
    LISTED = 100

    def __init__(
        self, message: str, *, hint: str = "", candidates: Sequence[tuple[str, str, int]] = ()
    ) -> None:
        super().__init__(message, hint=hint)
        self.candidates = tuple(candidates)

    @classmethod
    def listing(
        cls, name: str, repo: str, candidates: Sequence[tuple[str, str, int]]
    ) -> AmbiguousSymbol:
        """The error for ``name`` in ``repo``: "did you mean" and the candidates."""
        shown = "; ".join(f"{i} ({kind}, line {line})" for i, kind, line in candidates[: cls.SHOWN])
        more = len(candidates) - cls.SHOWN
        return cls(
            f"{name!r} names {len(candidates)} definitions in {repo!r}; did you mean: "
            f"{shown}{f'; and {more} more' if more > 0 else ''}",
            hint="give one of these ids (path::Qualified.name), or a qualified name that only "
            "one definition has",
            candidates=candidates,
        )

    def extensions(self) -> dict[str, object]:
        listed = self.candidates[: self.LISTED]
        return {"candidates": [{"id": i, "kind": kind, "line": line} for i, kind, line in listed]}

    def restore(self, members: Mapping[str, object]) -> None:
        listed = members.get("candidates")
        self.candidates = tuple(
            (c["id"], c["kind"], c["line"])
            for c in (listed if isinstance(listed, list) else [])
            if isinstance(c, dict)
            and isinstance(c.get("id"), str)
            and isinstance(c.get("kind"), str)
            and isinstance(c.get("line"), int)
        )


class NotFound(UserError, code="not_found", http_status=404, exit_code=3): ...


class RepoNotFound(NotFound, code="repo_not_found"): ...


class BranchNotIndexed(NotFound, code="branch_not_indexed"):
    """A query for a branch (or a detached commit) of which the index keeps no snapshot:
    never indexed there, or evicted since; the hint lists the branches kept."""


class NoTasks(UserError, code="no_tasks", http_status=422): ...


class ModelMismatch(UserError, code="model_mismatch", http_status=409, exit_code=4): ...


class Unauthorized(UserError, code="unauthorized", http_status=401): ...


class Forbidden(UserError, code="forbidden", http_status=403):
    """A request naming a host or origin the server does not serve."""


class ReadOnly(UserError, code="read_only", http_status=403):
    """An index or a delete asked of a read-only replica of a shared index
    (``CTXSVC_READ_ONLY``): the indexer host writes it, through the job queue."""


class IndexBusy(CtxError, code="index_busy", retryable=True, http_status=409, exit_code=75): ...


class ModelUnavailable(CtxError, code="model_unavailable", http_status=503, exit_code=5): ...


class RankerUnavailable(CtxError, code="ranker_unavailable", http_status=503, exit_code=5): ...


class GitFailed(CtxError, code="git_failed", http_status=503, exit_code=5):
    """git is missing, or failed reading a repository (a diff): not the request's fault."""


class SummarizerFailed(
    CtxError, code="summarizer_failed", retryable=True, http_status=502, exit_code=69
):
    """Raised inside the service only: the offline summary answers instead, and says so."""


class Overloaded(CtxError, code="overloaded", retryable=True, http_status=503, exit_code=75): ...


class DeadlineExceeded(
    CtxError, code="deadline_exceeded", retryable=True, http_status=504, exit_code=75
): ...


class SlowRequest(CtxError, code="slow_request", retryable=True, http_status=408, exit_code=75): ...


class Unreachable(CtxError, code="unreachable", retryable=True, http_status=503, exit_code=69): ...


class StoreError(CtxError, code="store_error", retryable=True, http_status=503, exit_code=74): ...


class StoreCorrupt(StoreError, code="store_corrupt", retryable=False):
    """An index (or the state database) that cannot be read as written: damaged
    files, another schema version. 503: that index is unavailable until rebuilt."""
