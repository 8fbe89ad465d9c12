"""The grep-agent baseline: the terms it greps, the order it reads files in, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxsvc.bench.baselines import Doc, GrepAgent, file_docs, pack_reads, query_terms
from ctxsvc.bench.gitrepo import PreparedTree
from ctxsvc.bench.runner import SYSTEMS, run_repo
from ctxsvc.bench.tasks import Task
from ctxsvc.cli.parser import build_parser
from ctxsvc.service import ContextService
from ctxsvc.tokens import TiktokenCounter


def lines(prefix: str, n: int) -> str:
    return "\n".join(f"{prefix}_{i} = compute({i})  # a line of some length" for i in range(n))


FILES = {
    "pkg/config.py": "def parse_config(text):\n    return yaml_load(text)\n",
    "pkg/loader.py": "import yaml\n\ndef yaml_load(text):\n    return yaml.safe_load(text)\n",
    "pkg/cache.py": "CACHE = {}\n# yaml yaml yaml yaml yaml yaml\n",
    "pkg/big.py": lines("value", 400) + "\nparse_config\n",
    "README.md": "# Demo\n\nConfiguration is YAML.\n",
}


def agent(files: dict[str, str] = FILES, **kw: int) -> GrepAgent:
    return GrepAgent(file_docs(files), **kw)


def paths(a: GrepAgent, query: str) -> list[str]:
    return [a.docs[i].path for i in a.rank(query)]


@pytest.mark.parametrize(
    ("query", "names", "words"),
    [
        (
            "Fix parseConfig when loading YAML in os.path.join",
            ["parseConfig", "os.path.join"],
            ["loading", "yaml"],
        ),
        (
            "tokio::spawn panics on shutdown_timeout, e.g. with `rt` handles",
            ["tokio::spawn", "shutdown_timeout", "rt"],
            ["handles", "panics"],
        ),
        ("Session.send drops proxies for HTTPAdapter", ["Session.send", "HTTPAdapter"], ["proxies", "drops"]),
        ("Proxy proxy PROXY proxy_url", ["proxy_url"], ["proxy"]),
        ("the and for a fix of it", [], []),
    ],
)  # fmt: skip
def test_query_terms_are_identifiers_as_written_then_words_longest_first(
    query: str, names: list[str], words: list[str]
) -> None:
    assert query_terms(query) == (names, words)


def test_a_file_matching_more_distinct_terms_is_read_first() -> None:
    assert paths(agent(), "parse_config yaml") == [
        "pkg/config.py",  # both terms (twice in all)
        "pkg/cache.py",  # one term, six matches
        "pkg/loader.py",  # one term, three matches
        "pkg/big.py",  # one term, one match: the identifier...
        "README.md",  # ... before the word ("YAML")
    ]


def test_identifiers_come_before_words() -> None:
    files = {"a_words.py": "loader\n", "b_names.py": "parse_config\n"}
    # Equal in distinct terms and matches: the file holding the identifier is read first,
    # though the word comes first in the query and in path order.
    kept, order = agent(files).search("loader parse_config")
    assert kept == ["parse_config", "loader"]
    assert [files_of(files, i) for i in order] == ["b_names.py", "a_words.py"]
    # With one search allowed, the agent greps the identifier, not the word.
    assert agent(files, max_terms=1).search("loader parse_config")[0] == ["parse_config"]


def files_of(files: dict[str, str], i: int) -> str:
    return sorted(files)[i]


def test_words_are_kept_rarest_first_and_terms_found_nowhere_cost_nothing() -> None:
    a = agent(max_terms=2)
    # "yaml" is in four files, "cache" in one (case-insensitive), "zebra" in none.
    assert a.search("zebra yaml cache")[0] == ["cache", "yaml"]


def test_a_qualified_name_found_nowhere_is_searched_by_its_tails() -> None:
    files = {
        "src/instant.rs": "impl Instant {\n    pub fn saturating_duration_since(&self) {}\n}\n"
    }
    query = "time: fix typo in Instant::saturating_duration_since docs"
    assert agent(files).search(query) == (["saturating_duration_since"], [0])
    files["CHANGELOG.md"] = "- fix `Instant::saturating_duration_since`\n"
    assert agent(files).search(query)[0][0] == "Instant::saturating_duration_since"


def test_the_order_is_deterministic_whatever_the_input_order() -> None:
    query = "parse_config yaml cache demo"
    first = paths(agent(), query)
    assert first == paths(agent(), query)
    reversed_files = dict(reversed(list(FILES.items())))
    shuffled = GrepAgent(sorted(file_docs(reversed_files), key=lambda d: d.path, reverse=True))
    assert paths(shuffled, query) == first


def test_no_terms_give_an_empty_context(counter: TiktokenCounter) -> None:
    a = agent()
    for query in ("", "the and for it", "zebra giraffe"):
        assert a.rank(query) == []
        packed = pack_reads([a.docs[i] for i in a.rank(query)], 2000, counter)
        assert (packed.docs, packed.tokens, packed.rendered, packed.delivered) == ((), 0, "", {})


@pytest.mark.parametrize("budget", [0, 5, 20, 37, 60, 100, 250, 1000, 3000, 7000, 100_000])
def test_files_are_read_whole_in_order_the_last_cut_and_the_budget_never_overrun(
    counter: TiktokenCounter, budget: int
) -> None:
    a = agent()
    ranked = [a.docs[i] for i in a.rank("parse_config yaml demo")]
    sizes = counter.count_many([d.render() for d in ranked])
    for packed in (
        pack_reads(ranked, budget, counter),
        pack_reads(ranked, budget, counter, sizes=sizes),
    ):
        assert packed.tokens == counter.count(packed.rendered) <= budget
        got = list(packed.docs)
        # A prefix of the reading order: all whole but perhaps the last, each from line 1.
        assert [d.path for d in got] == [d.path for d in ranked[: len(got)]]
        assert got[:-1] == ranked[: max(len(got) - 1, 0)]
        for d, whole in zip(got, ranked, strict=False):
            assert d.start_line == 1 and whole.text.startswith(d.text)
        if len(got) < len(ranked) and got:
            # The first file that did not fit whole is cut as long as the budget allows.
            last, whole = got[-1], ranked[len(got) - 1]
            if last != whole:
                longer = Doc(
                    last.path,
                    1,
                    last.end_line + 1,
                    "\n".join(whole.text.split("\n")[: last.end_line + 1]),
                )
                blocks = [d.render() for d in got[:-1]] + [longer.render()]
                assert counter.count("\n".join(blocks)) > budget
    assert pack_reads(ranked, 100_000, counter).docs == tuple(ranked)


def test_the_runner_scores_the_grep_agent_within_budget(
    service: ContextService, repo: Path
) -> None:
    assert "grep-agent" in SYSTEMS
    task = Task(
        id="demo-000", repo="demo", snapshot="HEAD", commit="HEAD",
        query="Store.get returns None for a missing key", gold=("app/store.py",),
        regions={"app/store.py": ((10, 11),)},
    )  # fmt: skip
    run = run_repo(
        service, "demo", [task], PreparedTree(repo), index="demo",
        budgets=(30, 400, 8000), systems=("grep-agent",),
    )  # fmt: skip
    by = {s.budget: s for s in run.scores}
    assert sorted(by) == [30, 400, 8000] and all(s.system == "grep-agent" for s in run.scores)
    assert all(s.tokens <= s.budget and not s.overrun for s in run.scores)
    assert (by[8000].file_hit, by[8000].region_recall) == (1.0, 1.0)
    assert by[8000].latency_ms is not None


def test_the_cli_offers_the_grep_agent(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert "grep-agent" in parser.parse_args(["bench"]).systems.split(",")
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--help"])
    assert "grep-agent" in "".join(capsys.readouterr().out.split())  # wrapped at "-"
