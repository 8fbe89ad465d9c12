"""What the user requires, read from their messages: the sentences that require or forbid,
and within a task an agent harness wraps (an issue in ``<pr_description>``, SWE-agent's
``ISSUE:`` section) what the task expects or proposes; with the Markdown an issue is
written in (headings, fenced code, HTML comments) read as it renders. Pure functions over
text, for the checkpoint extraction (:mod:`ctxsvc.checkpoints`)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ctxsvc.transcripts import clip, sentences, without_code

# A Markdown heading ("## Expected behavior"), or a line that is all bold; matched against
# a line without its trailing spaces, so that it takes one pass.
_HEADING = re.compile(r"^ {0,3}(?:#{1,6}[ \t]+(.*)|\*\*([^*]+)\*\*:?)$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_OBSERVATION = re.compile(r"<returncode>|<output>|^OBSERVATION:", re.M)
_TASK_OPEN = re.compile(r"<(pr_description|issue|task|problem_statement)>")
_ISSUE_HEAD = re.compile(r"^ISSUE:[ \t]*$", re.M)
_ISSUE_END = re.compile(r"^(?:INSTRUCTIONS|IMPORTANT TIPS):[ \t]*$", re.M)
# What a task says its result should do, or proposes: "Please add ...", "The fix is ...",
# "It would be worth adding ...", "This can be fixed in X by ...", "Allow a leading +".
# Counted inside a harness's task only: in a chat, "that should work" is no requirement.
_EXPECT = re.compile(
    r"\b(?:should|expected|i(?:'d| would) expect|(?:i|we) (?:suggest|propose|plan to)|"
    r"please (?:add|make|allow|support|fix|change|keep|use|remove|avoid|consider adding)|"
    r"would be (?:\w+ )?(?:helpful|nice|good|better|great|worth|wise)|(?:is|be) (?:\w+ )?wise to|"
    r"the fix (?:is|would)|(?:can|could) be (?:fixed|solved|resolved)|(?:needs?|has|have) to)\b|"
    r"^(?:add|allow|support|make|use|change|remove|avoid)\s",
    re.I,
)
# The user's requirements and prohibitions.
_CONSTRAINT = re.compile(
    r"\b(?:must(?:n't| not)?|do not|don't|never|should(?:n't| not)|make sure|ensure|"
    r"keep(?:ing)? (?:the|its|this|that|them|all|existing|backward|compatib)|"
    r"without (?:chang|break|touch|modify)|only (?:change|touch|modify|edit)|"
    r"no (?:new )?(?:dependenc|breaking|changes? to)|is required|are required)",
    re.I,
)
# A heading that says what is expected: "### Expected behavior", "**Expected outcome**",
# "What you expected to happen", "Describe the solution you'd like".
_EXPECT_HEAD = re.compile(
    r"^\W*(?:expect|desired|what (?:you|i|we) (?:expect|want|would like)|what should|"
    r"describe the solution|(?:proposed |suggested )?(?:solution|fix)\b|requirements?\b|"
    r"acceptance criteria)",
    re.I,
)
# What an issue form leaves when a section is not filled in.
_PLACEHOLDER = re.compile(r"^[\W_]*(?:no response|n/?a|tbd|-+)[\W_]*$", re.I)
# A section that shows how to reproduce: its sentences are steps, not requirements.
_STEPS_HEAD = re.compile(
    r"\b(?:reproduc\w*|steps|example|traceback|output|logs?|environment)\b", re.I
)
# A section that only lists what the reporter ran or has: no words of the task's.
_LISTING_HEAD = re.compile(
    r"\b(?:environment|versions?|system|platform|installation|logs?|output|traceback|"
    r"checks|(?:additional|other) (?:context|info\w*))\b",
    re.I,
)
_IMPORT = re.compile(r"\s*(?:import\s|from\s+\S+\s+import\s|#include\b|package\s|using\s)")
# A line that introduces what follows it: "Consider the following PR description:".
_INTRO = re.compile(r".*\b(?:following|below|here is|here's)\b.*:", re.I)
_CHECKLIST = re.compile(r"[-*+] \[[ xX]\]")  # "- [x] I have checked ..."
# "I don't think ...", "I do not know ...": a view, not a prohibition.
_NOT_A_RULE = re.compile(
    r"\b(?:i|we)\s+(?:do not|don't|dont)\s+(?:think|know|see|believe|understand|recall|"
    r"remember|care|get|expect)\b",
    re.I,
)
# "We don't have to keep the old API", "You don't need tests": leave, not a rule.
_NO_NEED = re.compile(r"\b(?:i|we|you)\s+(?:do not|don't|dont)\s+(?:have|need|mind)\b", re.I)
# A line of a traceback pasted into an issue ("django.db.utils.ProgrammingError: ... must
# return one column"): what went wrong, not what is required.
_TRACE = re.compile(r'(?:File "|Traceback \(|[\w.]*(?:Error|Exception)\b(?::|$)|at [\w.$]+\()')


def requirements(text: str) -> list[str]:
    """The user's requirements in a user message: its sentences that require or forbid;
    within a task an agent harness wraps (mini-SWE-agent's ``<pr_description>``,
    SWE-agent's ``ISSUE:`` section) only the task's, and there also what it says the
    result should do or proposes ("should", "expected", "please add", "the fix is") and the
    first words under a heading that says what is expected ("### Expected behavior"),
    headed by it. HTML comments (an issue template's guidance) are not the user's words,
    and a command's output sent as a user message (``<returncode>``) gives none."""
    if _OBSERVATION.search(without_code(text)):
        return []
    task = task_text(text)
    out: list[str] = []
    heading: str | None = None  # an expectation heading whose section's first words come next
    steps = False  # under a heading that shows how to reproduce

    def rule(s: str) -> bool:
        if s.endswith(("?", ":")) or len(s) > 300 or _NO_NEED.search(s) or _TRACE.match(s):
            return False
        if steps and not _CONSTRAINT.search(s):  # a step there, unless it says must or never
            return False
        return bool(_CONSTRAINT.search(_NOT_A_RULE.sub("", s))) or (
            task is not None and bool(_EXPECT.search(s))
        )

    for kind, block in blocks(without_comments(text if task is None else task)):
        if kind == "heading":
            expects = task is not None and _EXPECT_HEAD.search(block)
            heading = block if expects else None
            steps = not expects and bool(_STEPS_HEAD.search(block))
            if not expects and _CONSTRAINT.search(block):  # "## Do not modify the tests"
                out.append(clip(block, 200))
            continue
        said = block.strip().splitlines()[0] if kind == "code" else None
        for s in [said] if said is not None else sentences(block):
            if heading is not None:
                if not _PLACEHOLDER.match(s) and not s.endswith("?") and len(s) <= 300:
                    out.append(clip(f"{heading}: {s}", 200))
                heading = None
            elif kind == "prose" and rule(s):
                out.append(clip(s, 200))
        heading = None
    return out


def gist(task: str, limit: int) -> str:
    """A task as it reads, on one line of at most ``limit`` characters: an issue's words
    without what rendering hides or a form adds (HTML comments, headings but a title
    before any words, checklists ("- [x] I have checked ..."), unfilled fields, a one-word
    field label such as "Description", a line introducing the task ("Consider the following
    PR description:")), and without the sections that only list what the reporter ran or has
    (environment, versions, logs, output, a traceback); fenced code on one line without its
    imports, as it is the issue's own example."""
    words: list[str] = []
    skip = False  # under a heading of a listing section
    for kind, block in blocks(without_comments(task)):
        if kind == "heading":
            skip = (
                len(block.split()) <= 4
                and bool(_LISTING_HEAD.search(block))
                and not _EXPECT_HEAD.search(block)
                and not re.search(r"\bactual\b", block, re.I)
            )
            if not words and not skip:  # a title
                words.append(block)
            continue
        if skip:
            continue
        if kind == "code":  # its example, without the imports every example starts with
            block = " ".join(ln for ln in block.splitlines() if not _IMPORT.match(ln))
        lines = block.splitlines() if kind == "prose" else [" ".join(block.split())]
        for i, line in enumerate(lines):
            bare = line.strip()
            if kind == "prose" and (
                _CHECKLIST.match(bare)
                or _PLACEHOLDER.match(bare)
                or (words and len(bare.split()) == 1 and bare.rstrip(":").isalpha())
                or (not words and i == 0 and _INTRO.fullmatch(bare))
            ):
                continue
            words.append(bare)
        if len(" ".join(words)) > limit:
            break
    return clip(" ".join(words), limit) or clip(without_comments(task), limit)


def task_text(text: str) -> str | None:
    """The task inside a harness's message (a tag's body, an ``ISSUE:`` section), or None.
    Each search runs once, forward: an unclosed tag costs one scan, not one per tag."""
    if opened := _TASK_OPEN.search(text):
        close = text.find(f"</{opened.group(1)}>", opened.end())
        return text[opened.end() : close if close != -1 else len(text)]
    if head := _ISSUE_HEAD.search(text):
        end = _ISSUE_END.search(text, head.end())
        return text[head.end() : end.start() if end else len(text)]
    return None


def without_comments(text: str) -> str:
    """``text`` without its HTML comments (an issue template's guidance, unseen when it
    renders); one never closed runs to the end, unless it is inline code (`` `<!--` ``).
    One pass, however many there are."""
    out: list[str] = []
    at = 0
    while (start := text.find("<!--", at)) != -1:
        end = text.find("-->", start + 4)
        if end == -1:
            if text.count("`", 0, start) % 2 == 0:  # not inside a code span: cut off
                return "".join(out) + text[at:start]
            break
        out.append(text[at:start])
        at = end + 3
    out.append(text[at:])
    return "".join(out)


def blocks(text: str) -> Iterator[tuple[str, str]]:
    """``text`` as Markdown blocks in order: ``heading`` (its words: ``## ...``, or a short
    line all in bold that ends in no ``.`` or ``!``), ``code`` (a fenced block's
    body, closed by a fence of its character at least as long; an unclosed one is prose,
    as ``without_code`` reads it) and ``prose`` (the lines between)."""
    prose: list[str] = []
    code: list[str] | None = None
    fence = ""
    for line in text.splitlines():
        opened = _FENCE.match(line)
        if code is not None:
            closer = opened.group(1) if opened else ""
            if (
                closer[:1] == fence[0]
                and len(closer) >= len(fence)
                and not line.strip(" " + fence[0])
            ):
                if any(c.strip() for c in code):
                    yield "code", "\n".join(code)
                code = None
            else:
                code.append(line)
            continue
        if opened and opened.group(1) not in line.strip()[len(opened.group(1)) :]:
            # (a fence closed on its own line, ```x()```, is inline code)
            if prose:
                yield "prose", "\n".join(prose)
            prose, code, fence = [], [], opened.group(1)
            continue
        head = _HEADING.match(line.rstrip())
        words = (head.group(1) or head.group(2)).strip().rstrip("#").strip() if head else ""
        if (
            head
            and words
            and (head.group(1) or (len(words.split()) <= 8 and words[-1] not in ".!"))
        ):
            if prose:
                yield "prose", "\n".join(prose)
            prose = []
            yield "heading", words.rstrip(":").strip()
        elif line.strip() or prose:
            prose.append(line)
    if code is not None:  # never closed: prose after all
        prose = [fence, *code]
    if prose:
        yield "prose", "\n".join(prose)
