"""Reading a tool result: did the command fail, and why.

The exit status the harness states, the lines that say why (expected against actual, the
exception and where), a script's own verdict in its own words, a viewer's own complaint.
Pure functions over text, for the checkpoint extraction (:mod:`ctxsvc.checkpoints`)."""

from __future__ import annotations

import re

from ctxsvc.shell_edits import in_place, simple_commands
from ctxsvc.transcripts import clip

# A line saying only the exit status: "Exit code: 1", "(exit status 2)", "returncode=1".
_EXIT = re.compile(
    r"\W*(?:exit(?:ed)?(?: with)? (?:code|status)|return ?code)[ \t:=]*(-?\d+)\W*", re.I
)
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")  # mini-SWE-agent's
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|^FAILED\b|^ERROR\b|\b[1-9]\d* (?:failed|errors?)\b|"
    r"^(?:\w+(?:Error|Exception)|error|fatal)(?::|\b)|: command not found$",
    re.M,
)
# "Error: JAVA_HOME is not defined": a failure unless the command exited 0 (a script that
# prints the error it caught, as it was asked to).
_ERROR_SAID = re.compile(r"^Error: ", re.M)
_ERROR_LINE = re.compile(
    r"^(?:FAILED .*|E\s+\S.*|\w+(?:Error|Exception)\b.*|[Ee]rror[:\[].*|fatal: .*|.*\b[1-9]\d* failed\b.*|"
    r".*: command not found)$",
    re.M,
)
# A line that says why a test or command failed.
_REASON = re.compile(
    r"(?i:\b(?:expected|actual|got|want(?:ed)?|but was|to equal|not equal)\b)|"
    r"(?i:\bassert(?:ion)?\b)|^\s*E\s+\S|\bpanic:|^--- FAIL\b|\s(?:!=|==)\s|"
    r"\b\w+(?:Error|Exception)\b:|^\S+\.\w+:\d+:",  # the last: where (file.py:12:)
)
# A script's own words, from the start of a line, that it reproduced the bug or failed
# ("Issue reproduced: ...", "BUG: ...", "FAIL: ...", "Contenttypes failed: ...", its own
# catch-all "An error occurred: ...", "Failed to remove index_together: ..."), not that it
# did not ("Failed: 0", "No bug: ...", "Failed to reproduce: ...", "This should fail: ...",
# "No error occurred: ...", "Expected error occurred: ..."); matched against one short line
# at a time.
_NOT_SAID = r"(?:expected|no|not|fixed|should|will|would|must|can|may|to)\b"
_REPRODUCED = re.compile(
    r"\W*+(?:(?:the )?(?:issue|bug|error|problem)s? (?:is |was |still |has been |been )?"
    r"reproduced\b(?!\W*(?:no|not|false)\b)|"
    rf"(?:(?!{_NOT_SAID})\w[\w.-]* ){{0,2}}(?:bug|fail(?:ed|ure)?)\b\s*[:!]"
    r"(?!\s*(?:0\b|(?:none|no|false)\W*$))|"
    r"(?:an? )?(?:(?!no\b|not\b|expected\b)\w+ )?error occurred\b(?:(?!as expected)[^:]){0,60}:\s*\S|"
    r"failed to (?!reproduce\b|trigger\b)\w[^:]{0,60}:\s*\S)",
    re.I,
)
# ... or at its end: "No RuntimeError caught, issue reproduced."
_REPRODUCED_END = re.compile(r"[,;]\s+(?:the )?(?:issue|bug) (?:is )?reproduced\W*$", re.I)
# A line of a script's output that shows a value ("Set length: 1", "Result attributes: {}",
# "x = 3"): the evidence a verdict after it rests on.
_VALUE = re.compile(r"\s*[A-Za-z_][\w .'()\[\]/-]{0,60}?(?::|\s=)\s+\S.*")
# The end of one exception of a chain, before the next: "re.error: bad escape" ahead of the
# RuntimeError raised while handling it.
_CHAINED = re.compile(
    r"^(\S.*)\n\s*\n(?:During handling of the above exception, another exception occurred|"
    r"The above exception was the direct cause of the following exception):",
    re.M,
)
# A program's complaint that it could not do what it was asked.
# (Not "Permission denied": ``find /`` and ``grep -r`` say so of what they skip, and find.)
_CANNOT = re.compile(
    r"^[\w.-]+: .*(?:No such file or directory|Not a directory|can't cd|"
    r"cannot (?:access|open|stat|read)|invalid option|unrecognized option|command not found)",
    re.I,
)
# A shell's word on a command it ran: "/bin/bash: line 12: cd: x: No such file or
# directory", dash's "sh: 1: cd: can't cd to x".
_SHELL_SAYS = re.compile(r"^(?:/bin/)?(?:ba|z|da)?sh: (?:(?:line )?\d+: )?")
# A line of code or of a listing, not a script's output: `print(...)`, "12:" or "12\t"
# (cat -n, an editor's view), "path:12:" (grep -n), a quoted string.
_CODE_LINE = re.compile(
    r"^\s*(?:\d+[\t:]|\S+:\d+:|[\"'])|\b(?:print|console\.log|println|printf)\("
)
# Commands that only show or find things: a result of theirs reproduces nothing.
_VIEWERS = frozenset({
    "cat", "head", "tail", "less", "more", "nl", "awk", "grep", "egrep", "fgrep", "rg", "ag",
    "ack", "find", "ls", "echo", "printf", "wc", "sort", "uniq", "cut", "cd", "tree", "file",
    "stat", "true", "pwd", "git show", "git log", "git diff", "git status", "git grep",
    "git blame",
    # SWE-agent's viewer
    "open", "goto", "scroll_down", "scroll_up", "search_file", "search_dir", "find_file",
})  # fmt: skip
# Searches whose exit 1 means "none found" (``xargs grep`` exits 123: not one of them).
_FINDERS = frozenset({"grep", "egrep", "fgrep", "rg", "ag", "ack", "test", "[", "[[", "git grep"})
_TAGS = re.compile(r"</?\w+>")
# A numbered line of a listing (an editor's, cat -n), not a time ("12:00:01 ERROR ...").
_LISTED = re.compile(r"\d+(?:\t|:(?!\d))")
# "npm WARN ...", "x.py:207: FutureWarning: ...": not why it failed.
_WARNING = re.compile(r"^(?:\S+ )?(?:WARN(?:ING)?|warning)\b|^\S+:\d+: \w*Warning:")
REASON_SCAN = 400  # lines of a result's end read for reasons
REASON_LINES = 3  # of a failure's output kept in its error line
FAILURE_CHARS = 320
COMMAND_CHARS = 80  # of a failing command in its error line


def _shown(command: str) -> str:
    """A failing command as its error line shows it: without a leading ``cd DIR &&`` when it
    is long, then cut in the middle to ``COMMAND_CHARS``."""
    if len(command) > COMMAND_CHARS:
        command = re.sub(r"^\s*cd\s+\S+\s*&&\s*", "", command)
    return clip_middle(command, COMMAND_CHARS)


def clip_middle(text: str, limit: int) -> str:
    """``text`` on one line, cut in the middle to ``limit`` characters: a command's end (the
    test it runs, ``pytest a.py::test_x``) says as much as its start."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 5
    return text[:head].rstrip() + "…" + text[len(text) - (limit - 1 - head) :].lstrip()


def failure(text: str, command: str | None, *, views: bool = False) -> str | None:
    """One line saying how a tool result failed and why, or None when it did not: the
    command, then the lines that say why (expected against actual, the exception, where,
    the cause a chained exception was raised over), at most ``REASON_LINES`` of them, or a
    script's own verdict with the values it printed before it; ``FAILURE_CHARS`` in all.

    The exit status is the one the harness wraps the result in (``<returncode>1``, a first
    or last line "Exit code: 1"), never a number the output happens to hold. A search that
    finds nothing (``grep`` exiting 1 and saying nothing else) did not fail; a script that
    exits 0 saying in its own words that it reproduced the bug or failed did. What a viewer
    shows (``cat``, ``sed -n``, ``git show``, an editor's view: ``views``) is no failure of
    it, a traceback in a log no more than "FAILED" in a test's source: only its exit status
    and its own complaint ("cat: x: No such file or directory") are, the complaint alone
    where the harness states no status (SWE-agent's) and it says the command could not."""
    simple = simple_commands(command or "")
    viewing = views or (bool(simple) and all(_views(words) for words in simple))
    stated = _stated_status(text)
    status = None if stated in (None, "0") else stated
    failed = (
        None
        if viewing
        else _FAILURE.search(text) or (_ERROR_SAID.search(text) if stated != "0" else None)
    )
    if status == "1" and not failed and _found_nothing(text, simple):
        status = stated = None
    if viewing:  # its own complaint says why, not what it shows
        own = _complaints(text, simple)
        if not status:
            # Where the harness states no exit status (SWE-agent's), a complaint that the
            # shell or the program could not do it says it failed; no line of what it shows.
            own = [ln for ln in own if stated is None and _CANNOT.search(ln)]
            if not own:
                return None
        return _line(command, own[-1:] or [f"exit {status}"])
    if not (failed or status):
        said = _reproduced(text, command)
        return _line(command, said) if said else None
    lines = [ln.strip() for ln in _ERROR_LINE.findall(text) if ln.strip()]
    # The last error line ends a traceback; a FAILED or exception line says more.
    lines = [ln for ln in lines if not re.search(r"\b\d+ (?:failed|passed)\b", ln)] or lines
    why = _reasons(text)
    last = lines[-1] if lines else ""
    parts = [*why, *([last] if last and not any(last in w or w in last for w in why) else [])]
    # In a chain of exceptions, the one the last was raised over: its cause.
    root = [r for r in _roots(text)[-1:] if not any(r in p for p in parts)]
    parts = [*root, *parts[len(root) - REASON_LINES :]] if parts else root
    return _line(command, parts or [f"exit {status}" if status else "failed"])


def _line(command: str | None, parts: list[str]) -> str:
    """A failure's line: the command, then what says why (at most ``REASON_LINES + 1``
    parts, ``FAILURE_CHARS`` in all)."""
    detail = " | ".join(clip(p, 140) for p in parts[-REASON_LINES - 1 :])
    return clip(f"`{_shown(command)}`: {detail}" if command else detail, FAILURE_CHARS)


def _complaints(text: str, simple: list[list[str]]) -> list[str]:
    """A viewer's own complaints in its output ("cat: x: No such file or directory", as the
    shell reports it too: "bash: line 3: cd: x: ..."), not what it shows."""
    own = (*(f"{w[0].rsplit('/', 1)[-1]}: " for w in simple if w), "fatal: ")
    lines = (_SHELL_SAYS.sub("", ln) for ln in text.splitlines())
    return [ln.strip() for ln in lines if ln.startswith(own)]


def _roots(text: str) -> list[str]:
    """The exception lines that end each traceback of a chain but the last, in order: the
    cause ("re.error: bad escape \\p") another exception was raised over."""
    return [
        m.group(1).strip()
        for m in _CHAINED.finditer(text)
        if re.match(r"[\w.]+(?::|$)", m.group(1).strip())
    ]


def _stated_status(text: str) -> str | None:
    """The exit status a tool result's harness states, ``"0"`` included: mini-SWE-agent's
    ``<returncode>1</returncode>``, or a first or last line that says only that ("Exit code:
    1", "[exit status 2]"); None when it states none."""
    if (tagged := _RETURNCODE.search(text)) is not None:
        return tagged.group(1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for line in {lines[0], lines[-1]} if lines else ():
        if (said := _EXIT.fullmatch(line.strip())) is not None:
            return said.group(1)
    return None


def _found_nothing(text: str, simple: list[list[str]]) -> bool:
    """Whether a result is a search finding nothing: it says nothing but its exit status,
    and its command ends in ``grep``, ``rg``, ``test``, ... (the last command of a pipeline
    sets the status) or has one before an ``&&`` (``grep -q x f && echo found``)."""
    if not simple:
        return False
    # Line by line, each matched whole: an unanchored search would rescan a long run of
    # punctuation from each of its characters.
    for line in _TAGS.sub(" ", _RETURNCODE.sub(" ", text)).splitlines():
        if line.strip() and _EXIT.fullmatch(line.strip()) is None:
            return False
    return any(_program(words) in _FINDERS for words in simple)


def _program(words: list[str]) -> str:
    """A simple command's program: git's own command after its options (``git -C d grep``)."""
    prog = words[0].rsplit("/", 1)[-1] if words else ""
    if prog == "git":
        rest = iter(words[1:])
        sub = [w for w in rest if not (w in ("-C", "-c") and next(rest, "")) and w[:1] != "-"]
        return f"git {sub[0]}" if sub else "git"
    return prog


def _views(words: list[str]) -> bool:
    """Whether a simple command only shows or finds things: ``cat``, ``grep``, ``sed -n``
    (not ``sed -i``), ``git show``/``log``/``diff``/``status``, SWE-agent's ``open``, ..."""
    prog = _program(words)
    if prog == "sed":
        return not in_place(prog, words[1:])
    return prog in _VIEWERS


def _reproduced(text: str, command: str | None) -> list[str]:
    """The last two short lines of a command's output that say it reproduced the bug or
    failed (``_REPRODUCED`` from their start, "..., issue reproduced." at their end), after
    up to two values it printed right before them ("Set length: 1"); none for a result
    without a command (an editor's view of the script is no run of it), nor for lines of
    code or of a listing."""
    if not command:
        return []
    lines = text.splitlines()
    said = [
        i
        for i, line in enumerate(lines)
        if len(line) <= 200
        and not _CODE_LINE.search(line)
        and (_REPRODUCED.match(line.strip()) or _REPRODUCED_END.search(line))
    ][-2:]
    if not said:
        return []
    values: list[str] = []  # the values printed right before the verdicts kept
    for line in reversed(lines[: said[0]]):
        if (
            len(values) == 2
            or len(line) > 140
            or _CODE_LINE.search(line)
            or not _VALUE.fullmatch(line)
        ):
            break
        values.insert(0, line.strip())
    return [*values, *(lines[i].strip() for i in said)]


def _reasons(text: str) -> list[str]:
    """The lines of a failure's output that say why: an expected value against the actual
    one, a failed assertion, an exception, a panic; with their location when the line has
    one (``file.go:12:``, ``file.py:12:``). Distinct, in order."""
    out: list[str] = []
    for raw in text.splitlines()[-REASON_SCAN:]:  # a failure's summary ends its output
        line = raw.strip()
        if not line or _WARNING.search(line) or _LISTED.match(line) or not _REASON.search(line):
            continue
        line = line.removeprefix("E").strip() if line.startswith("E ") else line
        if any(line in seen for seen in out):
            continue
        out = [seen for seen in out if seen not in line] + [line]  # the longer says more
    return out[-REASON_LINES:]
