"""The .gitignore matcher: git's rules case by case, git itself as an oracle, and
patterns that make a backtracking matcher run for ever."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ctxsvc.indexers.ignore import (
    MAX_FILE_WILDCARD_CHARS,
    MAX_PATTERN_CHARS,
    MAX_PATTERN_WILDCARDS,
    IgnoreFile,
    ignored,
)

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

# (.gitignore text, path, is_dir, decide's answer)
CASES: list[tuple[str, str, bool, bool | None]] = [
    # blank lines, comments and escapes
    ("", "a", False, None),
    ("\n\n   \n", "a", False, None),
    ("#a\n", "#a", False, None),
    ("\\#a\n", "#a", False, True),
    (" #a\n", " #a", False, True),
    ("\\!a\n", "!a", False, True),
    ("a\r\nb\r\n", "b", False, True),
    ("\ufeffa\n", "a", False, True),
    ("a", "a", False, True),  # no final newline
    # trailing spaces: trimmed unless escaped; tabs are kept
    ("a  \n", "a", False, True),
    ("a\\ \n", "a ", False, True),
    ("a\\ \n", "a", False, None),
    ("a \\  \n", "a  ", False, True),
    ("a\t\n", "a", False, None),
    ("a\t\n", "a\t", False, True),
    # negation: the last matching pattern wins
    ("!a\n", "a", False, False),
    ("a\n!a\n", "a", False, False),
    ("!a\na\n", "a", False, True),
    ("*.log\n!keep.log\n", "x/keep.log", False, False),
    ("*.log\n!keep.log\n", "x/drop.log", False, True),
    # a trailing slash: directories only
    ("a/\n", "a", True, True),
    ("a/\n", "a", False, None),
    ("a/\n", "x/y/a", True, True),
    ("x/a/\n", "x/a", True, True),
    ("x/a/\n", "x/a", False, None),
    # anchoring: a slash at the start or in the middle
    ("/a\n", "a", False, True),
    ("/a\n", "x/a", False, None),
    ("a/b\n", "a/b", False, True),
    ("a/b\n", "x/a/b", False, None),
    ("a\n", "x/y/a", False, True),
    ("a\n", "x/a/y", False, None),  # the walk, not decide, ignores what is under "a"
    ("//a\n", "a", False, None),  # only one leading slash is the anchor
    # * and ? do not match "/"
    ("*.py\n", "a/b.py", False, True),
    ("a/*.py\n", "a/b.py", False, True),
    ("a/*.py\n", "a/b/c.py", False, None),
    ("x/a*b\n", "x/a/b", False, None),
    ("x/*\n", "x/y", True, True),
    ("x/*\n", "x/y/z", False, None),
    ("a?c\n", "abc", False, True),
    ("a?c\n", "ac", False, None),
    ("x/a?c\n", "x/a/c", False, None),
    ("?\n", "\u00e9", False, None),  # two bytes in UTF-8: git matches bytes
    ("??\n", "\u00e9", False, True),
    # character classes
    ("[ab]c\n", "bc", False, True),
    ("[ab]c\n", "cc", False, None),
    ("[a-c]x\n", "bx", False, True),
    ("[a-c]x\n", "cx", False, True),
    ("[a-c]x\n", "dx", False, None),
    ("[c-a]x\n", "bx", False, None),
    ("[!a]x\n", "bx", False, True),
    ("[!a]x\n", "ax", False, None),
    ("[^a]x\n", "ax", False, None),
    ("[]a]\n", "]", False, True),
    ("[!]a]\n", "]", False, None),
    ("[a-]\n", "-", False, True),
    ("[-a]\n", "-", False, True),
    ("[\\]]\n", "]", False, True),
    ("[a\\-c]\n", "-", False, True),
    ("[a\\-c]\n", "b", False, None),
    ("[[:alpha:]]1\n", "Q1", False, True),
    ("[[:digit:]]\n", "a", False, None),
    ("[[:upper:][:digit:]]\n", "7", False, True),
    ("[![:lower:]]\n", "a", False, None),
    ("[[:space:]]\n", " ", False, True),
    ("[[:punct:]]\n", "_", False, True),
    ("[[:xdigit:]]\n", "g", False, None),
    ("[[:a]\n", ":", False, True),  # no ":]": a plain set of "[", ":" and "a"
    ("[[:foo:]]\n", "f", False, None),  # an unknown class matches nothing
    ("a[b\n", "a[b", False, None),  # an unclosed "[" matches nothing
    ("x/[/]y\n", "x//y", False, None),  # a class never matches "/"
    # backslash escapes
    ("\\*\n", "*", False, True),
    ("\\*\n", "a", False, None),
    ("\\a\n", "a", False, True),
    ("a\\\n", "a", False, None),  # a lone trailing backslash matches nothing
    ("a\\\n", "a\\", False, None),
    # ** forms
    ("**/a\n", "a", False, True),
    ("**/a\n", "x/y/a", False, True),
    ("**/x/a\n", "y/x/a", False, True),
    ("**/x/a\n", "x/a", False, True),
    ("a/**\n", "a/x/y", False, True),
    ("a/**\n", "a", True, None),  # not the directory itself
    ("a/**\n!a/keep\n", "a/keep", False, False),
    ("a/**/b\n", "a/b", False, True),
    ("a/**/b\n", "a/x/y/b", False, True),
    ("a/**/b\n", "ab", False, None),
    ("a/***/b\n", "a/x/b", False, True),
    ("a/**/\n", "a/b/c", True, True),
    ("a/**/\n", "a/b/c", False, None),
    ("**\n", "a/b", False, True),
    ("/**\n", "a/b", False, True),
    ("**/**/a\n", "a", False, True),
    ("x/**/**/a\n", "x/y/a", False, True),
    ("a/**/b*\n", "a/bc", False, True),  # "**/" matching nothing, inside a longer pattern
    ("a/**/b*\n", "a/x/y/bc", False, True),
    ("a/**/b*\n", "a/xbc", False, None),
    ("**/[ab]?\n", "ac", False, True),
    ("**/[ab]?\n", "x/bc", False, True),
    # other runs of stars are one "*"
    ("a**b\n", "axyb", False, True),
    ("x/a**b\n", "x/a/b", False, None),
    ("x/**b\n", "x/y/b", False, None),
    ("foo**/bar\n", "foox/bar", False, True),
    ("foo**/bar\n", "foobar", False, None),  # git before 2.52 said True (a bug it fixed)
    ("foo**/bar\n", "foo/x/bar", False, None),
]


@pytest.mark.parametrize(("text", "path", "is_dir", "expected"), CASES)
def test_gitignore_rules(text: str, path: str, is_dir: bool, expected: bool | None) -> None:
    assert IgnoreFile.parse(text, "t/.gitignore").decide(path, is_dir) is expected


def test_match_names_the_winning_line() -> None:
    rules = IgnoreFile.parse("# header\n*.log\n\n!keep.log\nkeep.log/\n", "x/.gitignore")
    hit = rules.match("a/keep.log", False)
    assert hit is not None and (hit.line, hit.negated, hit.pattern) == (4, True, "!keep.log")
    hit = rules.match("a/keep.log", True)
    assert hit is not None and (hit.line, hit.dir_only) == (5, True)
    assert rules.match("a/keep.txt", False) is None


def test_nested_files_deepest_decides() -> None:
    root = IgnoreFile.parse("*.log\n/top.py\n", ".gitignore")
    sub = IgnoreFile.parse("!keep.log\nlocal.py\n", "sub/.gitignore")
    stack = [("", root), ("sub", sub)]
    assert ignored(stack, "sub/x.log", False)
    assert not ignored(stack, "sub/keep.log", False)
    assert ignored(stack, "sub/local.py", False)
    assert not ignored(stack, "sub/top.py", False)  # "/top.py" is anchored to the root
    assert ignored(stack[:1], "top.py", False)
    assert not ignored(stack, "sub/other.py", False)


def test_oversized_patterns_are_refused_and_named() -> None:
    many = "*a" * (MAX_PATTERN_WILDCARDS + 1)
    long = "x" * (MAX_PATTERN_CHARS + 1)
    rules = IgnoreFile.parse(f"ok.txt\n{many}\n{long}\n", "/repo/.gitignore")
    assert [r.pattern for r in rules.rules] == ["ok.txt"]
    assert len(rules.notes) == 2
    assert "line 2 of /repo/.gitignore" in rules.notes[0]
    assert f"{MAX_PATTERN_WILDCARDS + 1} wildcards" in rules.notes[0]
    assert "line 3 of /repo/.gitignore" in rules.notes[1]
    assert all(n.startswith("gave up on pattern ") for n in rules.notes)
    assert rules.decide("a" * 600, False) is None


def test_a_file_of_too_many_wildcard_patterns_is_cut_and_named() -> None:
    pattern = "*" + "x" * 98 + "?"
    count = MAX_FILE_WILDCARD_CHARS // len(pattern) + 50
    text = "\n".join([pattern] * count + ["plain.txt", "*.tmp"]) + "\n"
    rules = IgnoreFile.parse(text, "big/.gitignore")
    kept = MAX_FILE_WILDCARD_CHARS // len(pattern)
    assert len(rules.rules) == kept + 1  # literal patterns cost nothing and are kept
    assert len(rules.notes) == 1
    assert (
        f"gave up on {count - kept + 1} wildcard pattern(s) from line {kept + 1}" in rules.notes[0]
    )
    assert rules.decide("plain.txt", False) is True
    assert rules.decide("a.tmp", False) is None


def test_many_patterns_at_once_agree_with_each_alone() -> None:
    """A file of many wildcard patterns runs them as one automaton; it must pick
    the same last match as trying each pattern on its own."""
    rng = random.Random(7)
    for _ in range(40):
        lines = [_pattern(rng) for _ in range(rng.randint(17, 60))]
        whole = IgnoreFile.parse("\n".join(lines), "many")
        alone = [(r, IgnoreFile("one", (r,))) for r in whole.rules]
        for path in _paths(rng, 30):
            for is_dir in (False, True):
                hits = [r for r, one in alone if one.match(path, is_dir) is not None]
                assert whole.match(path, is_dir) == (hits[-1] if hits else None), (lines, path)


def test_parse_never_raises_on_garbage() -> None:
    rng = random.Random(14)
    alphabet = "ab/*?[]!^-:\\#\r\n \t\0\ufeff\u00e9\udcff"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        rules = IgnoreFile.parse(text, "g")
        for path in ("a", "a/b", "\u00e9/\udcff", "ab/[/b"):
            rules.decide(path, False)
            rules.decide(path, True)


# Shapes that take a backtracking matcher exponential or high-polynomial time.
BOMBS: list[tuple[str, str, bool | None]] = [
    ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 60 + ".py", None),
    ("*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 60 + "b", True),
    ("*a*a*a*a*a*a*a*a*a*a*a*a*b*", "a" * 60 + ".py", None),
    ("*a*a*a*a*a*a*a*a*a*a*a*a*b*", "a" * 30 + "b" + "a" * 30, True),
    ("x/*a*a*a*a*a*a*a*a*a*a*a*a*b*/y", "x/" + "a" * 60 + "/y", None),
    ("/" + "**/" * 100 + "b", "a/" * 100 + "c", None),
    ("/" + "**/" * 100 + "b", "a/" * 100 + "b", True),
    ("/" + "**/a" * 60 + "**/b", "a/" * 120 + "c", None),
    ("a*" * 200, "a" * 4000, True),
    ("a*" * 200, "a" * 199, None),
    ("[ab]*" * 120 + "c", "ab" * 1000, None),
    ("?*" * 120 + "c?", "a" * 3000 + "c", None),
]


@pytest.fixture(scope="module")
def no_freeze() -> None:
    """Decides the issue's bomb in a child process first: a matcher that holds the
    GIL (as ``re`` does) would hang the in-process thread guard below, so such a
    regression fails here, after a timeout, instead of hanging the run."""
    code = (
        "from ctxsvc.indexers.ignore import IgnoreFile\n"
        "f = IgnoreFile.parse('*a*a*a*a*a*a*a*a*a*a*a*a*b\\n', 'bomb')\n"
        "print(f.decide('a' * 60 + '.py', False))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the matcher froze on the .gitignore bomb (child process timed out)")
    assert done.stdout.decode().strip() == "None", done.stderr.decode()


def _decided_within(call: Callable[[], bool | None], seconds: float) -> bool | None:
    """The call's answer; fails the test if it is still running after ``seconds``
    (a guard against a freeze, not a timing measurement)."""
    answer: list[bool | None] = []
    worker = threading.Thread(target=lambda: answer.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the matcher froze"
    return answer[0]


@pytest.mark.parametrize(("pattern", "path", "expected"), BOMBS)
@pytest.mark.usefixtures("no_freeze")
def test_bombs_are_decided(pattern: str, path: str, expected: bool | None) -> None:
    rules = IgnoreFile.parse(pattern + "\n", "bomb/.gitignore")
    assert rules.notes == ()
    assert _decided_within(lambda: rules.decide(path, False), 10.0) is expected


@pytest.mark.usefixtures("no_freeze")
def test_a_file_of_bombs_is_decided() -> None:
    text = "\n".join(p for p, _, _ in BOMBS) + "\n"
    rules = IgnoreFile.parse(text, "bombs/.gitignore")

    def all_paths() -> bool | None:
        for _, path, _ in BOMBS:
            rules.decide(path, False)
            rules.decide(path, True)
        return True

    assert _decided_within(all_paths, 10.0)


# --- git as the oracle -----------------------------------------------------------

PIECES = ["a", "b", "a", "b", ".", "/", "/", "*", "*", "?", "**", "[ab]", "[!a]"]
RARE = ["[a-b]", "[[:upper:]]", "\\*", "\\a", "!", "A", "[]a]", "-", " ", "\\ ", "***"]
NAME_CHARS = "aab.A-"


def _pattern(rng: random.Random) -> str:
    body = "".join(
        rng.choice(RARE) if rng.random() < 0.12 else rng.choice(PIECES)
        for _ in range(rng.randint(1, 6))
    )
    if rng.random() < 0.2:
        body = "/" + body
    if rng.random() < 0.2:
        body += "/"
    if rng.random() < 0.25:
        body = "!" + body
    return body


def _name(rng: random.Random) -> str:
    while True:
        name = "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 3)))
        if name not in (".", ".."):
            return name


def _paths(rng: random.Random, count: int) -> list[str]:
    found: set[str] = set()
    while len(found) < count:
        found.add("/".join(_name(rng) for _ in range(rng.randint(1, 3))))
    return sorted(found)


def _expected(rules: IgnoreFile, rel: str, is_dir: bool) -> int | None:
    """The line git reports for rel: an ignored ancestor's pattern wins."""
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        hit = rules.match("/".join(parts[:depth]), True)
        if hit is not None and not hit.negated:
            return hit.line
    hit = rules.match(rel, is_dir)
    return None if hit is None else hit.line


def _git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "xdg"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


def _git_has_prefix_bug(repo: Path, env: dict[str, str]) -> bool:
    """Whether this git matches "foo**/bar" against "foobar" (fixed in git 2.52)."""
    probe = repo / "probe"
    probe.mkdir()
    (probe / ".gitignore").write_text("foo**/bar\n")
    (probe / "foobar").write_text("")
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "probe/foobar"],
        cwd=repo,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    shutil.rmtree(probe)
    return done.returncode == 0


def _hits_prefix_bug(pattern: str) -> bool:
    """A pattern whose first wildcard is a "**" right after a literal that is not "/"."""
    body = pattern.removeprefix("!")
    body = body[:-1] if body.endswith("/") else body
    pathname = "/" in body
    body = body.removeprefix("/")
    first = next((i for i, c in enumerate(body) if c in "*?[\\"), None)
    return (
        pathname
        and first is not None
        and first > 0
        and body[first : first + 2] == "**"
        and body[first - 1] != "/"
    )


@needs_git
def test_decide_agrees_with_git(tmp_path: Path) -> None:
    """Random .gitignore files and trees, each file and directory asked of
    ``git check-ignore --no-index -v``: the same winning line, or none. Git also
    reports a path under an ignored directory as ignored (by the directory's
    pattern), which is the walk's rule; ``_expected`` adds it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = _git_env(tmp_path)
    subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True, timeout=60)
    skip_bug = _git_has_prefix_bug(repo, env)
    rng = random.Random(20240614)
    queries: list[str] = []
    expected: dict[str, int | None] = {}
    for round_ in range(60):
        patterns: list[str] = []
        wanted = rng.choice((2, 6, 30, 60))  # 30 and 60 run as one automaton
        while len(patterns) < wanted:
            pattern = _pattern(rng)
            if not (skip_bug and _hits_prefix_bug(pattern)):
                patterns.append(pattern)
        text = "\n".join(patterns) + "\n"
        rules = IgnoreFile.parse(text, "oracle")
        paths = _paths(rng, 40)
        dirs = {p.rsplit("/", 1)[0] for p in paths if "/" in p}
        dirs |= {"/".join(d.split("/")[:n]) for d in set(dirs) for n in (1, 2)}
        for leaf_is_dir in (False, True):
            sub = f"r{round_}{'d' if leaf_is_dir else 'f'}"
            base = repo / sub
            base.mkdir()
            (base / ".gitignore").write_text(text)
            for d in sorted(dirs):
                (base / d).mkdir(parents=True, exist_ok=True)
            nodes = sorted(dirs | set(paths))
            for rel in nodes:
                is_dir = rel in dirs or leaf_is_dir
                if is_dir:
                    (base / rel).mkdir(parents=True, exist_ok=True)
                else:
                    (base / rel).write_text("")
                queries.append(f"{sub}/{rel}")
                expected[f"{sub}/{rel}"] = _expected(rules, rel, is_dir)
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-v", "-n", "-z", "--stdin"],
        cwd=repo,
        env=env,
        input=("\0".join(queries) + "\0").encode(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr.decode()
    fields = done.stdout.split(b"\0")
    answers: dict[str, int | None] = {}
    for i in range(0, len(fields) - 1, 4):
        _source, line, _pattern_text, path = fields[i : i + 4]
        answers[path.decode()] = int(line) if line else None
    assert len(answers) == len(queries)
    wrong = {q: (expected[q], answers[q]) for q in queries if expected[q] != answers[q]}
    assert not wrong, {
        q: (*v, (repo / q.split("/")[0] / ".gitignore").read_text())
        for q, v in list(wrong.items())[:5]
    }
