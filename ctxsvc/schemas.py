"""The request and response models of the HTTP API and the MCP tools, declared once.

Every bound a request is checked against is written here, so that
``/openapi.json`` and the MCP tools' input schemas say it too, and every field
is described for the person or the model that reads those schemas. The MCP
tools take the same models; where a tool may omit ``repo`` (a server with a
default repository), ``ctxsvc.mcp.tools`` derives the variant.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ctxsvc.limits import (
    MAX_BUDGET,
    MAX_LINE,
    MAX_PATTERNS,
    MAX_QUERY_CHARS,
    MAX_REPOS,
    MAX_RESULTS,
    MAX_SYMBOL_CHARS,
    NAME_PATTERN,
    SESSION_PATTERN,
)
from ctxsvc.models import IndexSummary


def _text(value: str) -> str:
    # JSON may carry lone surrogates, which no later stage can encode: refuse them here.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


def _budget(default: int, what: str, low: int = 0) -> Any:
    return Field(
        default, ge=low, le=MAX_BUDGET, description=f"Most tokens (cl100k_base) {what}.",
        examples=[default],
    )  # fmt: skip


Text = Annotated[str, AfterValidator(_text)]
REPO_DOC = (
    "Index name or root directory of an indexed repository (the status of indexes lists them)."
)
# "~user" is not expanded on the server (and an unknown user would be an error).
RepoRef = Annotated[Text, Field(min_length=1, max_length=4096, pattern=r"^[^~]")]
ONE_OF_DOC = " Give repo, repos or both (repo first)."
REPOS_DOC = (
    f"More indexes to answer from in the same call (up to {MAX_REPOS} in all, each named "
    "once): scores are made comparable across them, each gets a fair share, and each item, "
    "left-out entry and hit names its index ('repo')."
)
Repos = Annotated[list[RepoRef], Field(min_length=1, max_length=MAX_REPOS)]
# Examples the fields share (the sample names of README's examples).
REPO_EXAMPLE = "backend"
SESSION_EXAMPLE = "s-3f2a9c0b1d4e5f60"
# Not blank (a pattern, so that the schema says it too; Python's idea of whitespace).
QueryText = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        pattern=r"^\s*\S",
        description="The task or question in words: what you want to do or understand, an error "
        "message, names of functions, classes or files you know.",
    ),
]
SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_PATTERN,
        description="A session id from start_session (any 1-128 of A-Z a-z 0-9 . _ : - also "
        "works for getting context and expand).",
    ),
]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Glob = Annotated[Text, Field(min_length=1, max_length=256)]
Globs = Annotated[list[Glob], Field(max_length=MAX_PATTERNS)]
Line = Annotated[int, Field(ge=1, le=MAX_LINE)]
Item = Annotated[Text, Field(max_length=2000)]
Items = Annotated[list[Item], Field(max_length=200)]
Subject = Annotated[Text, Field(min_length=1, max_length=1000)]
IDEMPOTENCY_DOC = (
    "Any unique printable string: a retry with the same key returns what was written the "
    "first time and never writes a second one."
)
IdempotencyKey = Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,255}$", description=IDEMPOTENCY_DOC)]
SYMBOL_DOC = (
    "One definition: its id ('app/store.py::Store.get', as search results give it), a qualified "
    "name ('Store.get') or a name ('get'). A name several definitions have is refused with "
    "their ids (error ambiguous_symbol): ask again with one of them."
)
SymbolRef = Annotated[Text, Field(min_length=1, max_length=MAX_SYMBOL_CHARS)]
# What git allows in a branch name, roughly: no space, control character or ~^:?*[\.
BranchRef = Annotated[
    Text, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x20\x7f~^:?*\[\\]+$")
]
BRANCH_DOC = (
    "A branch the working tree has left (or a commit of a version kept, 7 hex digits at "
    "least) whose index version is kept: the answer comes from it, as indexed then, and says "
    "so. index_status lists the snapshots kept."
)
DETAIL_DOC = (
    "How much of each file: 'map' (ranked files with their key symbols, cheapest), "
    "'skeleton' (signatures and docstrings), 'snippets' (the relevant functions and "
    "sections), 'full' (whole files)."
)


class Request(BaseModel):
    """A request body (or an MCP tool's arguments): unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


# -- context ---------------------------------------------------------------------------


class ContextRequest(Request):
    repo: RepoRef | None = Field(None, description=REPO_DOC + ONE_OF_DOC, examples=[REPO_EXAMPLE])
    repos: Repos | None = Field(
        None, description=REPOS_DOC + ONE_OF_DOC, examples=[["backend", "frontend"]]
    )
    query: QueryText = Field(examples=["how is a refund issued?"])
    budget_tokens: int = _budget(8000, "of context to return, headings and fences included")
    detail: Literal["snippets", "skeleton", "map", "full"] = Field(
        "snippets", description=DETAIL_DOC, examples=["snippets"]
    )
    session_id: SessionId | None = Field(
        None,
        description="Code this session already received unchanged is not sent again.",
        examples=[SESSION_EXAMPLE],
    )
    include: Globs | None = Field(
        None,
        description="Only paths matching one of these globs, e.g. ['src/*', '*.py'].",
        examples=[["src/*", "*.py"]],
    )
    exclude: Globs | None = Field(
        None,
        description="Never paths matching one of these globs, e.g. ['tests/*'].",
        examples=[["tests/*"]],
    )
    refresh: bool = Field(
        False, description="Re-index files changed on disk first.", examples=[False]
    )
    diff: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None,
        description="A base (HEAD, a branch, a commit): context for the working tree's change "
        "against it, the diff first, then what it changed, its callers, callees, tests and "
        "co-changed files, ranked with what the query finds. The changed files are "
        "re-indexed first.",
        examples=["HEAD"],
    )
    branch: BranchRef | None = Field(None, description=BRANCH_DOC, examples=["main"])


class ExpandRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    symbol: SymbolRef | None = Field(
        None, description=SYMBOL_DOC, examples=["app/store.py::Store.get"]
    )
    path: Annotated[Text, Field(min_length=1, max_length=4096)] | None = Field(
        None,
        description="A repository-relative file path, as in the '## path' headings.",
        examples=["app/store.py"],
    )
    start_line: Line | None = Field(
        None, description="First line (with path; 1-based).", examples=[10]
    )
    end_line: Line | None = Field(
        None, description="Last line, inclusive (with path).", examples=[40]
    )
    budget_tokens: int = _budget(4000, "to return")
    callers: bool = Field(
        False, description="Also the code that calls or uses the symbol.", examples=[True]
    )
    callees: bool = Field(
        False, description="Also the definitions the symbol calls.", examples=[False]
    )
    session_id: SessionId | None = Field(
        None, description="Record what is sent in this session.", examples=[SESSION_EXAMPLE]
    )
    branch: BranchRef | None = Field(None, description=BRANCH_DOC, examples=["main"])


class ImpactRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    symbol: SymbolRef = Field(description=SYMBOL_DOC, examples=["app/store.py::Store.get"])
    depth: int = Field(
        2, ge=1, le=5, description="Levels of dependents to follow (1 to 5).", examples=[2]
    )
    limit: int = Field(
        30,
        ge=1,
        le=500,
        description="Dependents listed (and followed) per depth, resolved first.",
        examples=[30],
    )


class ReferencesRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    symbol: SymbolRef = Field(description=SYMBOL_DOC, examples=["app/store.py::Store.get"])
    limit: int = Field(100, ge=1, le=MAX_RESULTS, description="Most uses to list.", examples=[100])


class DefinitionRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    symbol: SymbolRef = Field(
        description="The name as it is used (a qualified one narrows it).",
        examples=["Store.get"],
    )
    path: Annotated[Text, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="The file of the use (repository-relative).", examples=["app/main.py"]
    )
    line: Line | None = Field(
        None, description="The line of the use (1-based, with path).", examples=[12]
    )


class SearchRequest(Request):
    repo: RepoRef | None = Field(None, description=REPO_DOC + ONE_OF_DOC, examples=[REPO_EXAMPLE])
    repos: Repos | None = Field(
        None, description=REPOS_DOC + ONE_OF_DOC, examples=[["backend", "frontend"]]
    )
    query: QueryText = Field(examples=["refund"])
    limit: int = Field(
        20,
        ge=1,
        le=MAX_RESULTS,
        description="Most files and most symbols to list.",
        examples=[20],
    )
    branch: BranchRef | None = Field(None, description=BRANCH_DOC, examples=["main"])


class MapRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    budget_tokens: int = _budget(2000, "of map to return")


class RepoRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])


class RegisterRequest(Request):
    path: Annotated[Text, Field(min_length=2, max_length=4096, pattern=r"^/")] = Field(
        description="Absolute path of the repository root on the server.",
        examples=["/srv/repos/backend"],
    )
    name: Name | None = Field(
        None, description="Index name (default: the directory name).", examples=[REPO_EXAMPLE]
    )
    vectors: bool = Field(
        True, description="Embed chunks (false: full text and symbols only).", examples=[True]
    )


# -- agent memory ----------------------------------------------------------------------


class SessionRequest(Request):
    repo: RepoRef = Field(description=REPO_DOC, examples=[REPO_EXAMPLE])
    task: Annotated[Text, Field(min_length=1, max_length=MAX_QUERY_CHARS)] = Field(
        description="What the session is for, in words.",
        examples=["fix the rounding of partial refunds"],
    )
    agent: Name | None = Field(
        None, description="The agent's name, for the record.", examples=["claude-code"]
    )
    workspace: Name | None = Field(
        None,
        description="A workspace shared by sessions of agents working in parallel.",
        examples=["refund-rework"],
    )


class CheckpointFields(Request):
    goal: Item | None = Field(
        None,
        description="The overall goal, if it changed.",
        examples=["partial refunds round to the cent, as the provider does"],
    )
    constraints: Items | None = Field(
        None,
        description="Requirements the work must keep (what must or must not change); carried "
        "in every later summary.",
        examples=[["don't change the public API of Refund"]],
    )
    done: Items | None = Field(
        None, description="Steps done.", examples=[["found the rounding in Refund.amount"]]
    )
    decisions: Items | None = Field(
        None,
        description="Decisions with their reasons.",
        examples=[["round half-even: the provider's API does"]],
    )
    open_tasks: Items | None = Field(
        None, description="What is left to do.", examples=[["a test for a 0.005 refund"]]
    )
    next_step: Item | None = Field(
        None, description="The very next step.", examples=["run tests/test_refunds.py"]
    )
    notes: Items | None = Field(
        None,
        description="Anything else worth keeping.",
        examples=[["Refund.amount is also used by the reports"]],
    )

    def fields(self) -> dict[str, object]:
        """The fields that were given, as the service takes them."""
        return self.model_dump(include=set(CheckpointFields.model_fields), exclude_none=True)


class CheckpointRequest(CheckpointFields):
    messages: Annotated[list[dict[str, Any]], Field(max_length=20_000)] = Field(
        [],
        description="OpenAI-style chat messages since the last checkpoint ({role, content, "
        "tool_calls}); files, decisions, errors and next steps are extracted from them.",
        examples=[
            [
                {"role": "user", "content": "partial refunds are off by a cent"},
                {"role": "assistant", "content": "Refund.amount rounds half-up; fixing it."},
            ]
        ],
    )
    budget_tokens: int = _budget(300, "of the summary", low=20)


class CheckpointCall(CheckpointRequest):
    """A new checkpoint of a session: messages and/or fields, and an idempotency key."""

    session_id: SessionId = Field(examples=[SESSION_EXAMPLE])
    idempotency_key: IdempotencyKey | None = Field(
        None,
        description=IDEMPOTENCY_DOC,
        examples=["9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"],
    )


class ResumeRequest(Request):
    session_id: SessionId = Field(examples=[SESSION_EXAMPLE])
    budget_tokens: int = _budget(2000, "to return: summary, changes and fresh code")
    refresh: bool = Field(
        True,
        description="Re-index files changed on disk first (false: compare with the index as is).",
        examples=[True],
    )


class DecisionRequest(Request):
    session_id: SessionId = Field(examples=[SESSION_EXAMPLE])
    decision: Annotated[Text, Field(min_length=1, max_length=300)] = Field(
        description="What was decided, as one sentence.",
        examples=["round partial refunds half-even"],
    )
    reason: Annotated[Text, Field(min_length=1, max_length=300)] | None = Field(
        None,
        description="Why (what it rules out, what it depends on). Decision and reason are kept "
        "to 300 characters together.",
        examples=["the provider's API rounds half-even"],
    )
    idempotency_key: IdempotencyKey | None = Field(
        None,
        description=IDEMPOTENCY_DOC,
        examples=["9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"],
    )


class EventRequest(Request):
    text: Annotated[Text, Field(min_length=1, max_length=2000)] = Field(
        description="What was decided or changed, e.g. 'renamed interface Store to Repository'.",
        examples=["renamed interface Store to Repository"],
    )
    kind: Literal["decision", "renamed", "removed", "changed", "note"] | None = Field(
        None,
        description="Read from the text when absent ('renamed ...', 'removed ...').",
        examples=["renamed"],
    )
    session_id: SessionId | None = Field(
        None, description="The session it comes from.", examples=[SESSION_EXAMPLE]
    )
    agent: Name | None = Field(None, description="The agent's name.", examples=["claude-code"])
    paths: Annotated[list[Subject], Field(max_length=50)] = Field(
        [],
        description="Files it is about (also read from the text).",
        examples=[["app/store.py"]],
    )
    symbols: Annotated[list[Subject], Field(max_length=50)] = Field(
        [], description="Symbols it is about (also read from the text).", examples=[["Store"]]
    )
    new_path: Subject | None = Field(
        None, description="A file's new path, for a move.", examples=["app/repository.py"]
    )
    new_symbol: Subject | None = Field(
        None, description="A symbol's new name, for a rename.", examples=["Repository"]
    )


# -- responses -------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str
    message: str
    type: str


class SymbolCandidate(BaseModel):
    """One definition an ambiguous symbol name could mean: its id, kind and first line."""

    id: str
    kind: str
    line: int


class Problem(BaseModel):
    """An RFC 9457 problem: what happened, whether a retry helps, what to do next."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
    hint: str = ""
    request_id: str
    errors: list[FieldError] | None = None
    candidates: list[SymbolCandidate] | None = None  # ambiguous_symbol: the ids to choose from


class JobResponse(BaseModel):
    id: str
    kind: Literal["index", "refresh"]
    repo: str
    root: str
    state: Literal["queued", "running", "done", "failed"]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: dict[str, dict[str, int | None]]
    events: list[dict[str, Any]]
    result: IndexSummary | None
    error: dict[str, Any] | None


class Readiness(BaseModel):
    ready: bool
    model: dict[str, Any]
    store: dict[str, Any]
    repos: int
    degraded: list[str]
