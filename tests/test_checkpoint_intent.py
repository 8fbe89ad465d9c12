"""What a checkpoint keeps of an agent's intent, one defect at a time: the next step and
the open tasks said in prose, the user's constraints, files named but never opened, and a
failing test kept with why it fails; and the order in which the 300-token budget keeps
them (``ctxsvc.checkpoints.extract``, ``ctxsvc.summaries.fit``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ctxsvc.checkpoints import IndexFacts, extract
from ctxsvc.records import Summary
from ctxsvc.summaries import fit
from ctxsvc.tokens import TiktokenCounter

INDEX = IndexFacts(
    files={p: "0" * 64 for p in ("context.go", "context_test.go", "docs/doc.md", "gin.go")},
    symbols={},
)
TASK = "Redirect should keep the X-Forwarded-Prefix header"
GO_TEST_OUTPUT = """--- FAIL: TestContextRedirectWithPrefix (0.00s)
    context_test.go:1187: expected "/api/v1/login", got "/login"
FAIL
FAIL\tgithub.com/gin-gonic/gin\t0.412s
FAIL
<returncode>1</returncode>"""


def call(n: int, command: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": f"c{n}", "type": "function", "function": {
            "name": "bash", "arguments": json.dumps({"command": command})}}],
    }  # fmt: skip


def result(n: int, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"c{n}", "content": text}


# A realistic session of about 900 tokens, the one the issue reports.
SESSION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a coding agent. Use the bash tool."},
    {"role": "user", "content": (
        "In gin, c.Redirect drops the X-Forwarded-Prefix header set by a proxy, so users end "
        "up at /login instead of /api/v1/login. Please make Redirect honour it. Don't change "
        "the default behaviour when the header is absent. The public API must stay as it is."
    )},
    call(1, "grep -n 'func (c \\*Context) Redirect' context.go"),
    result(1, "1032:func (c *Context) Redirect(code int, location string) {"),
    call(2, "sed -n 1025,1045p context.go"),
    result(2, "func (c *Context) Redirect(code int, location string) {\n"
              "\tc.Render(-1, render.Redirect{Code: code, Location: location, Request: c.Request})\n}"),
    {"role": "assistant", "content": (
        "The redirect renders the location as given. I decided to prefix it in Redirect "
        "itself instead of in render.Redirect, because render has no access to the headers."
    )},
    call(3, "sed -i 's|Location: location,|Location: prefixed(c, location),|' context.go"),
    result(3, "<returncode>0</returncode>"),
    call(4, "go test -run TestContextRedirectWithPrefix ./..."),
    result(4, GO_TEST_OUTPUT),
    {"role": "assistant", "content": (
        "The prefix is applied, but the test fails because it never sets the header on its "
        "request. Next I'll add c.Request.Header.Set(\"X-Forwarded-Prefix\", \"/api/v1\") to "
        "the test before the redirect. Still to do: document X-Forwarded-Prefix in docs/doc.md."
    )},
]  # fmt: skip


@pytest.fixture(scope="module")
def state() -> Summary:
    return extract(SESSION, None, INDEX, task=TASK)


@pytest.fixture(scope="module")
def summary(state: Summary) -> Summary:
    return fit(state, 300, TiktokenCounter("cl100k_base"))


def test_the_next_step_said_in_a_sentence_is_kept(state: Summary, summary: Summary) -> None:
    assert state.next_step.startswith('add c.Request.Header.Set("X-Forwarded-Prefix"')
    assert "Next: add c.Request.Header.Set" in summary.rendered


def test_what_is_still_to_do_is_an_open_task(state: Summary, summary: Summary) -> None:
    assert state.open_tasks == ("document X-Forwarded-Prefix in docs/doc.md.",)
    assert "- document X-Forwarded-Prefix in docs/doc.md." in summary.rendered


def test_a_file_only_named_is_not_listed_as_read(state: Summary, summary: Summary) -> None:
    files = {a.path: a for a in state.files if a.symbol is None}
    assert files["docs/doc.md"].read is False and not files["docs/doc.md"].edited
    assert files["context.go"].edited
    read = next((ln for ln in summary.rendered.splitlines() if ln.startswith("Read:")), "")
    assert "docs/doc.md" not in read
    assert "docs/doc.md" in {a.path for a in state.files}  # resume still looks at it


def test_the_users_constraints_are_kept_word_for_word(state: Summary, summary: Summary) -> None:
    assert state.constraints == (
        "Don't change the default behaviour when the header is absent.",
        "The public API must stay as it is.",
    )
    lines = summary.rendered.splitlines()
    assert lines[1] == "Constraints:" and lines[2].startswith("- Don't change the default")


def test_a_failing_test_is_kept_with_why_it_fails(state: Summary, summary: Summary) -> None:
    (error,) = state.errors
    assert error.startswith("`go test -run TestContextRedirectWithPrefix ./...`:")
    assert 'context_test.go:1187: expected "/api/v1/login", got "/login"' in error
    assert "--- FAIL: TestContextRedirectWithPrefix" in error
    assert 'expected "/api/v1/login", got "/login"' in summary.rendered


def test_the_decision_is_kept_too(summary: Summary) -> None:
    assert any("instead of in render.Redirect" in d for d in summary.decisions)


def test_constraints_are_carried_to_every_later_checkpoint(state: Summary) -> None:
    later = extract(
        [{"role": "assistant", "content": "I added the header to the test; it passes now."}],
        None, INDEX, task=TASK, previous=state,
    )  # fmt: skip
    assert later.constraints == state.constraints
    assert (
        "Don't change the default behaviour"
        in fit(later, 300, TiktokenCounter("cl100k_base")).rendered
    )


def test_the_budget_keeps_constraints_next_step_and_tasks_before_the_rest() -> None:
    many = [f"chose option {i} over option {i + 1} because of benchmark {i}" for i in range(40)]
    state = extract(SESSION, {"decisions": many}, INDEX, task=TASK)
    small = fit(state, 120, TiktokenCounter("cl100k_base"))
    assert small.tokens <= 120
    assert small.constraints == state.constraints and small.next_step == state.next_step
    assert small.open_tasks == state.open_tasks
    assert small.dropped.get("decisions", 0) > 30  # counted, and kept in the state
    assert "Dropped for the budget:" in small.rendered


@pytest.mark.parametrize(
    "said, expected",
    [
        ("Then I need to update the changelog.", "update the changelog."),
        ("My next step is to run the whole suite.", "run the whole suite."),
        ("Next step: rerun go vet.", "rerun go vet."),
        ("Let me run the tests again.", "run the tests again."),  # the last message's intent
    ],
)
def test_the_ways_an_agent_says_its_next_step(said: str, expected: str) -> None:
    messages = [{"role": "user", "content": TASK}, {"role": "assistant", "content": said}]
    assert extract(messages, None, INDEX, task=TASK).next_step == expected


def test_the_newest_step_not_yet_done_is_the_next_one() -> None:
    messages = [
        {"role": "assistant", "content": "Next, I'll rename the helper."},
        {"role": "assistant", "content": "Let me look at gin.go first."},
    ]
    assert extract(messages, None, INDEX, task=TASK).next_step == "look at gin.go first."
    # An intent whose command ran is done, not next: the last statement still open wins.
    ran = {**call(7, "go test ./..."), "content": "Let me run the tests."}
    done = [messages[0], ran, result(7, "ok\n<returncode>0</returncode>")]
    assert extract(done, None, INDEX, task=TASK).next_step == "rename the helper."
    # Nor is a closing courtesy a step.
    bye = [{"role": "assistant", "content": "Let me know if you need anything else."}]
    assert extract(bye, None, INDEX, task=TASK).next_step == ""


def test_a_list_under_still_to_do_gives_one_task_per_item() -> None:
    text = "Done with the code.\n\nStill to do:\n- a test for an empty prefix\n- the changelog\n"
    state = extract([{"role": "assistant", "content": text}], None, INDEX, task=TASK)
    assert state.open_tasks == ("a test for an empty prefix", "the changelog")


def test_a_python_failure_keeps_its_assertion() -> None:
    out = (
        "============ FAILURES ============\n"
        "___ test_round ___\n"
        "    def test_round():\n"
        ">       assert refund(0.005) == 0.01\n"
        "E       assert 0.0 == 0.01\n"
        "E        +  where 0.0 = refund(0.005)\n"
        "tests/test_refund.py:12: AssertionError\n"
        "FAILED tests/test_refund.py::test_round - assert 0.0 == 0.01\n"
        "1 failed in 0.03s\n<returncode>1</returncode>"
    )
    messages = [call(1, "pytest tests/test_refund.py"), result(1, out)]
    (error,) = extract(messages, None, INDEX, task=TASK).errors
    assert error.startswith("`pytest tests/test_refund.py`:") and "assert 0.0 == 0.01" in error
    # Where it failed and the value that was wrong, besides the assertion.
    assert "tests/test_refund.py:12: AssertionError" in error
    assert "where 0.0 = refund(0.005)" in error


def test_constraints_come_from_the_task_not_the_harness_rules_or_command_output() -> None:
    harness = (
        "<pr_description>\nSorting must be stable. Don't touch the CLI flags.\n"
        "</pr_description>\n\nYour response must contain exactly ONE bash code block. "
        "Do not use interactive commands."
    )
    output = "<returncode>0</returncode>\n<output>\nvalue must be positive\n</output>"
    messages = [{"role": "user", "content": harness}, {"role": "user", "content": output}]
    assert extract(messages, None, INDEX, task=TASK).constraints == (
        "Sorting must be stable.",
        "Don't touch the CLI flags.",
    )


def test_an_issue_under_a_harness_template_gives_only_its_own_constraints() -> None:
    template = (
        "We're currently solving the following issue within our repository. "
        "Here's the issue text:\nISSUE:\nThe parser must accept a trailing comma.\n\n"
        "INSTRUCTIONS:\nAlways make sure to look at the currently open file. When editing a "
        "file, make sure to insert appropriate indentation before each line!\n"
    )
    state = extract([{"role": "user", "content": template}], None, INDEX, task=TASK)
    assert state.constraints == ("The parser must accept a trailing comma.",)


def test_the_first_constraints_stated_are_kept_first() -> None:
    said = " ".join(f"Rule {i} must hold." for i in range(8))
    state = extract([{"role": "user", "content": said}], None, INDEX, task=TASK)
    small = fit(state, 60, TiktokenCounter("cl100k_base"))
    assert small.constraints and small.constraints == state.constraints[: len(small.constraints)]


def test_what_the_task_expects_is_a_constraint_and_a_missing_command_a_failure() -> None:
    messages = [
        {"role": "user", "content": "<pr_description>\nxr.where drops attributes. The result "
                                    "should keep the attributes of cond.\n</pr_description>"},
        call(1, "javac Repro.java"),
        result(1, "bash: javac: command not found\n<returncode>127</returncode>"),
    ]  # fmt: skip
    state = extract(messages, None, INDEX, task=TASK)
    assert state.constraints == ("The result should keep the attributes of cond.",)
    assert state.errors == ("`javac Repro.java`: bash: javac: command not found",)


def test_the_same_command_failing_again_is_one_error_and_fixed_when_it_passes() -> None:
    messages = [
        call(1, "go test ./..."), result(1, GO_TEST_OUTPUT),
        call(2, "go test ./..."), result(2, GO_TEST_OUTPUT.replace("0.00s", "0.02s")),
    ]  # fmt: skip
    (error,) = extract(messages, None, INDEX, task=TASK).errors
    assert "0.02s" in error  # the newest run's words
    passed = [*messages, call(3, "go test ./..."), result(3, "ok\n<returncode>0</returncode>")]
    (fixed,) = extract(passed, None, INDEX, task=TASK).errors
    assert fixed.endswith("(fixed later)")


def test_in_a_chat_only_requirements_are_constraints() -> None:
    chat = (
        "That should work. Thanks! Keep it up! Keep the indentation style of the file. "
        "Please don't break the open file API. Don\u2019t change the public API."
    )
    state = extract([{"role": "user", "content": chat}], None, INDEX, task=TASK)
    assert state.constraints == (
        "Keep the indentation style of the file.",
        "Please don't break the open file API.",
        "Don't change the public API.",
    )


def test_an_unclosed_task_tag_is_read_once() -> None:
    # 200 KB of tags never closed: a scan from each to the end would take minutes.
    text = "<issue>The result must be sorted. " + "<issue> x " * 20_000
    state = extract([{"role": "user", "content": text}], None, INDEX, task=TASK)
    assert state.constraints == ("The result must be sorted.",)  # the task: after the first


def test_a_list_under_a_bold_head_after_a_blank_line() -> None:
    text = "**Still to do:**\n\n1. the changelog\n2. a test for the empty prefix\n\nThat is all."
    state = extract([{"role": "assistant", "content": text}], None, INDEX, task=TASK)
    assert state.open_tasks == ("the changelog", "a test for the empty prefix")


def test_checkpoints_written_by_another_version_load() -> None:
    from dataclasses import asdict

    from ctxsvc.stores.checkpoints import summary_from_dict

    newer = asdict(extract(SESSION, None, INDEX, task=TASK))
    newer["a_field_of_a_later_version"] = 1
    newer["files"][0]["another"] = True
    assert summary_from_dict(newer).constraints  # read, the unknown left out
    older = {k: v for k, v in asdict(extract(SESSION, None, INDEX, task=TASK)).items()
             if k != "constraints"}  # fmt: skip
    for a in older["files"]:
        a.pop("read")
    loaded = summary_from_dict(older)
    assert loaded.constraints == () and all(a.read for a in loaded.files)
