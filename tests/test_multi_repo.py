"""Several repositories in one call: context and search over two real indexes (real
tree-sitter, real LanceDB, the hash embedder), through the library, HTTP and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from conftest import make_repo

from ctxsvc.cli.main import main
from ctxsvc.errors import InvalidRequest, RepoNotFound
from ctxsvc.http import create_app
from ctxsvc.models import ContextPack
from ctxsvc.multi import merge, normalised
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.tokens import TiktokenCounter

QUERY = "compute the invoice total with tax and send the overdue payment reminder email"
# Both repositories hold app/main.py: the two files must stay apart in the answer.
BILLING = {
    "app/main.py": '''"""Invoices."""


def invoice_total(lines: list[tuple[int, float]], tax: float) -> float:
    """Compute the invoice total of the lines, with tax."""
    net = sum(qty * price for qty, price in lines)
    return round(net * (1 + tax), 2)
''',
    "app/units.py": "def metres(x: float) -> float:\n    return x * 1000\n",
}
MAILER = {
    "app/main.py": '''"""Reminders."""


def send_reminder_email(address: str, days_overdue: int) -> str:
    """Send the overdue payment reminder email to the address."""
    body = f"Your payment is {days_overdue} days overdue."
    return f"to={address}\\n{body}"
''',
    "app/colors.py": "def rgb(r: int, g: int, b: int) -> str:\n    return f'#{r:02x}{g:02x}{b:02x}'\n",
}


@pytest.fixture
def two(service: ContextService, tmp_path: Path) -> ContextService:
    """Two indexes, billing and mailer, each holding one function the query is about."""
    service.index(make_repo(tmp_path / "billing", BILLING))
    service.index(make_repo(tmp_path / "mailer", MAILER))
    return service


def headings(pack: ContextPack) -> list[str]:
    return re.findall(r"^## (.+)$", pack.rendered, flags=re.M)


def test_a_two_repository_query_answers_from_both(
    two: ContextService, counter: TiktokenCounter
) -> None:
    pack = two.context("billing", QUERY, 600, repos=["mailer"])
    assert pack.repos == ("billing", "mailer") and pack.index is None
    assert set(pack.indexes) == {"billing", "mailer"}
    assert all(v.generation == 1 and v.commit for v in pack.indexes.values())
    assert {i.repo for i in pack.items} == {"billing", "mailer"}
    best: dict[str, str | None] = {}
    for i in pack.items:  # in rank order
        best.setdefault(i.repo, i.symbol)
    assert best == {"billing": "invoice_total", "mailer": "send_reminder_email"}
    # Each heading names its repository: the two app/main.py stay two files.
    assert "billing: app/main.py" in headings(pack) and "mailer: app/main.py" in headings(pack)
    assert all(h.split(": ", 1)[0] in ("billing", "mailer") for h in headings(pack))
    assert pack.tokens_used == counter.count(pack.rendered) <= 600
    assert all(i.text in pack.rendered for i in pack.items)  # quoted byte for byte
    assert all(o.repo in ("billing", "mailer") for o in pack.omitted)
    # Scores are normalised per repository: each one's best is 1.
    assert max(i.score for i in pack.items if i.repo == "billing") == 1.0
    assert max(i.score for i in pack.items if i.repo == "mailer") == 1.0


def test_a_single_repository_answer_names_it_without_labels(two: ContextService) -> None:
    pack = two.context("billing", QUERY, 600)
    assert pack.repos == ("billing",) and set(pack.indexes) == {"billing"}
    assert pack.items and all(i.repo == "billing" for i in pack.items)
    assert headings(pack)[0] == "app/main.py"  # one repository: headings as ever
    found = two.search("mailer", QUERY)
    assert found.repos == ("mailer",) and all(f.repo == "mailer" for f in found.files)


def test_repos_alone_and_budgets_too_small_for_both(
    two: ContextService, counter: TiktokenCounter
) -> None:
    pack = two.context(None, QUERY, 1000, repos=["mailer", "billing"])
    assert pack.repos == ("mailer", "billing") and pack.repo == "mailer,billing"
    for budget in (0, 40, 120):
        small = two.context(None, QUERY, budget, repos=["mailer", "billing"])
        assert small.tokens_used == counter.count(small.rendered) <= budget


def test_a_repository_with_many_strong_matches_cannot_crowd_out_the_other(
    service: ContextService, tmp_path: Path, counter: TiktokenCounter
) -> None:
    # "big" has twenty functions all about the query; "small" one, and weaker ones after.
    big = {
        f"app/m{i}.py": (
            f"def invoice_total_{i}(lines: list[float], tax: float) -> float:\n"
            f'    """Invoice total with tax, then the overdue payment reminder email {i}."""\n'
            f"    total = sum(lines) * (1 + tax)\n    reminder = 'overdue payment email'\n"
            f"    return total + {i}\n"
        )
        for i in range(20)
    }
    small = {
        **MAILER,
        **{
            f"app/w{i}.py": (
                f"def payment_{i}(amount: float) -> float:\n"
                f'    """A payment of some amount, number {i}."""\n'
                f"    fee = amount * 0.0{i % 9 + 1}\n    return amount + fee\n"
            )
            for i in range(12)
        },
    }
    service.index(make_repo(tmp_path / "big", big))
    service.index(make_repo(tmp_path / "small", small))
    budget = 1200
    pack = service.context("big", QUERY, budget, repos=["small"])
    assert pack.tokens_used == counter.count(pack.rendered) <= budget

    def room(repo: str) -> int:  # its blocks and its files' headings, as rendered
        files = {i.path for i in pack.items if i.repo == repo}
        heads = sum(counter.count(f"## {repo}: {p}\n") + 1 for p in files)
        return heads + sum(i.tokens for i in pack.items if i.repo == repo)

    biggest = max(i.tokens for i in pack.items if i.repo == "small")
    # Guaranteed half the room (give or take one candidate that did not fit what was left).
    assert room("small") >= budget // 2 - biggest - 20
    assert room("big") >= budget // 2 - 100  # and what small does not use goes to big
    alone = service.context("big", QUERY, budget)  # big alone fills the budget by itself
    assert sum(i.tokens for i in alone.items) > budget * 0.8


def test_a_session_is_not_sent_again_what_it_holds_of_either(two: ContextService) -> None:
    first = two.context("billing", QUERY, 2000, repos=["mailer"], session_id="s-multi")
    sent = {(i.repo, i.path, i.start_line) for i in first.items}
    assert {r for r, _, _ in sent} == {"billing", "mailer"}
    assert two.queries.ledger is not None
    for repo in ("billing", "mailer"):  # the ledger keys spans by repository
        held = two.queries.ledger.delivered("s-multi", repo)
        assert {s.path for s in held} == {p for r, p, _ in sent if r == repo}
    again = two.context("billing", QUERY, 2000, repos=["mailer"], session_id="s-multi")
    assert not sent & {(i.repo, i.path, i.start_line) for i in again.items}
    assert {s.repo for s in again.already_sent} == {"billing", "mailer"}
    assert again.degraded == ()  # no workspace: nothing said of drift warnings
    assert "mailer: app/main.py" in again.rendered  # the note names the repository
    # The other repository alone still holds nothing of the session's billing spans.
    assert not any(s.repo == "billing" for s in two.context("mailer", QUERY, 2000).already_sent)


def test_unknown_duplicate_and_too_many_repositories_are_refused(two: ContextService) -> None:
    with pytest.raises(RepoNotFound, match="nope"):
        two.context("billing", QUERY, 500, repos=["mailer", "nope"])
    with pytest.raises(RepoNotFound, match="nope"):
        two.search("nope", QUERY, repos=["billing"])
    with pytest.raises(InvalidRequest, match="named twice"):
        two.context("billing", QUERY, 500, repos=["billing"])
    root = str(Path(two.resolve("billing").root))
    with pytest.raises(InvalidRequest, match="same index"):
        two.context("billing", QUERY, 500, repos=[root])
    with pytest.raises(InvalidRequest, match="at most 8"):
        two.search("billing", QUERY, repos=[f"r{i}" for i in range(8)])
    with pytest.raises(InvalidRequest, match="repo or repos"):
        two.context(None, QUERY, 500)
    with pytest.raises(InvalidRequest, match="diff"):
        two.context("billing", QUERY, 500, repos=["mailer"], diff="HEAD")


def test_search_over_two_repositories(two: ContextService) -> None:
    found = two.search("billing", QUERY, 4, repos=["mailer"])
    assert found.repos == ("billing", "mailer") and found.repo == "billing,mailer"
    symbols = {(s.repo, s.symbol.name) for s in found.symbols}
    assert {("billing", "invoice_total"), ("mailer", "send_reminder_email")} <= symbols
    assert {f.repo for f in found.files} == {"billing", "mailer"} and len(found.files) <= 4
    assert [s.score for s in found.symbols] == sorted(
        (s.score for s in found.symbols), reverse=True
    )
    assert set(found.indexes) == {"billing", "mailer"}  # each index's version is said
    assert all(v.generation >= 1 for v in found.indexes.values())


def test_scores_are_normalised_and_merged_by_head() -> None:
    assert normalised([3.0, 2.0, 1.0]) == [1.0, 0.5, 0.0]
    assert normalised([-4.0, -6.0]) == [1.0, 0.0]  # a learned ranker's margins may be negative
    assert normalised([0.2, 0.2]) == [1.0, 1.0]
    # Each list keeps its own order; ties go to the list named first.
    merged = merge([[("a1", 1.0), ("a2", 0.2)], [("b1", 1.0), ("b2", 0.9), ("b3", 0.0)]])
    assert [e for _, e, _ in merged] == ["a1", "b1", "b2", "a2", "b3"]


# -- the adapters ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_context_and_search_with_repos(two: ContextService, tmp_path: Path) -> None:
    app = create_app(two, allowed_roots=[tmp_path])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        r = await c.post(
            "/v1/context",
            json={"repos": ["billing", "mailer"], "query": QUERY, "budget_tokens": 600},
        )
        assert r.status_code == 200, r.text
        pack = r.json()
        assert pack["repos"] == ["billing", "mailer"] and 0 < pack["tokens_used"] <= 600
        assert {i["repo"] for i in pack["items"]} == {"billing", "mailer"}
        assert set(pack["indexes"]) == {"billing", "mailer"}

        r = await c.post(
            "/v1/search", json={"repo": "billing", "repos": ["mailer"], "query": QUERY}
        )
        assert r.status_code == 200, r.text
        assert {s["repo"] for s in r.json()["symbols"]} == {"billing", "mailer"}

        r = await c.post("/v1/context", json={"repos": ["billing", "nope"], "query": QUERY})
        assert r.status_code == 404 and r.json()["code"] == "repo_not_found"
        assert "nope" in r.json()["detail"]
        r = await c.post("/v1/search", json={"repos": [f"r{i}" for i in range(9)], "query": QUERY})
        assert r.status_code == 422 and r.json()["code"] == "validation_error"
        r = await c.post("/v1/context", json={"query": QUERY})
        assert r.status_code == 422 and "repo or repos" in r.json()["detail"]


@pytest.mark.anyio
async def test_the_python_client_sends_repos(two: ContextService, tmp_path: Path) -> None:
    from ctxsvc.client import AsyncClient

    app = create_app(two, allowed_roots=[tmp_path])
    async with AsyncClient("http://localhost", transport=httpx.ASGITransport(app=app)) as client:
        pack = await client.context(None, QUERY, budget_tokens=600, repos=["billing", "mailer"])
        assert pack.repos == ("billing", "mailer")
        assert {i.repo for i in pack.items} == {"billing", "mailer"}
        assert pack.indexes["mailer"].generation == 1
        found = await client.search("billing", QUERY, repos=["mailer"])
        assert {s.repo for s in found.symbols} == {"billing", "mailer"}


def test_cli_query_and_search_with_repeated_repo(
    two: ContextService, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(settings.home)]
    common = ["--no-vectors", "--no-server", "--json"]
    code = main([*home, "query", "billing", QUERY, "--repo", "mailer", "--budget", "600", *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    pack = json.loads(out.out)
    assert pack["repos"] == ["billing", "mailer"] and pack["tokens_used"] <= 600
    assert {i["repo"] for i in pack["items"]} == {"billing", "mailer"}

    code = main([*home, "search", "mailer", QUERY, "--repo", "billing", *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert {s["repo"] for s in json.loads(out.out)["symbols"]} == {"billing", "mailer"}

    code = main([*home, "search", "mailer", QUERY, "--repo", "billing", "--no-vectors"])
    out = capsys.readouterr()
    assert code == 0 and "billing: app/main.py::invoice_total" in out.out

    code = main([*home, "query", "billing", QUERY, "--repo", "nope", "--no-vectors"])
    err = capsys.readouterr().err
    assert code == 3 and "repo_not_found" in err and "nope" in err


def test_mcp_tools_take_repos(two: ContextService) -> None:
    from ctxsvc.mcp.tools import TOOLS, ToolContext

    tools = {t.name: t for t in TOOLS}
    ctx = ToolContext(two, None)
    get = tools["get_context"]
    answer = get.run(
        ctx, get.args(repo="billing", repos=["mailer"], query=QUERY, budget_tokens=600)
    )
    code, notes = answer.texts
    assert "## billing: app/main.py" in code and "## mailer: app/main.py" in code
    assert "index generation billing 1, mailer 1" in notes
    search = tools["search_code"]
    answer = search.run(ctx, search.args(repo="mailer", repos=["billing"], query=QUERY))
    assert "billing: app/main.py::invoice_total" in answer.texts[0]
    assert {s.repo for s in answer.data.symbols} == {"billing", "mailer"}
    # repos alone, on a server without a default repository, as over HTTP; and with a
    # default, repos that name it are taken as they are (not the default added twice).
    answer = search.run(ctx, search.args(repos=["billing", "mailer"], query=QUERY))
    assert answer.data.repos == ("billing", "mailer")
    with_default = ToolContext(two, "billing")
    answer = get.run(
        with_default, get.args(repos=["billing", "mailer"], query=QUERY, budget_tokens=600)
    )
    assert answer.data.repos == ("billing", "mailer")


def test_a_workspace_session_is_told_its_warnings_wait(two: ContextService) -> None:
    session = two.start_session("billing", "invoices and reminders", workspace="team")
    pack = two.context("billing", QUERY, 600, repos=["mailer"], session_id=session.id)
    assert {i.repo for i in pack.items} == {"billing", "mailer"}
    assert any("not given in an answer over several" in d for d in pack.degraded)


def test_the_cli_sends_every_repository_to_a_server_as_it_takes_them(tmp_path: Path) -> None:
    from ctxsvc.cli.remote import _sent

    (tmp_path / "other").mkdir()
    ref, call = _sent("billing", {"repos": ["mailer", str(tmp_path / "other")], "limit": 3})
    assert ref == "billing" and call == {"repos": ["mailer", str(tmp_path / "other")], "limit": 3}
    # A path only this process sees: the command answers here.
    assert _sent("billing", {"repos": [str(tmp_path / "missing")]})[0] is None
