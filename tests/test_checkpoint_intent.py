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


def tool(call_id: str, name: str, **args: str) -> dict[str, Any]:
    """An assistant message calling a tool other than the shell."""
    fn = {"name": name, "arguments": json.dumps(args)}
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": call_id, "type": "function", "function": fn}]}  # fmt: skip


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


def test_with_no_step_ahead_the_agent_goes_on_with_what_it_did_last() -> None:
    look = {**call(1, "grep -n 'class _LocIndexer' pandas/core/indexing.py"),
            "content": "Let's look at the `_LocIndexer` class:"}  # fmt: skip
    messages = [look, result(1, "1120:class _LocIndexer(_LocationIndexer):")]
    assert extract(messages, None, INDEX, task=TASK).next_step == (
        "continue: look at the `_LocIndexer` class"
    )
    # An intent older than the last two turns is no longer what it was doing.
    later = [*messages, call(2, "ls"), result(2, "a.py"), call(3, "pwd"), result(3, "/w")]
    assert extract(later, None, INDEX, task=TASK).next_step == ""
    # Nor is it once the next checkpoint's turns went on.
    first = extract(messages, None, INDEX, task=TASK)
    assert extract(later[2:], None, INDEX, task=TASK, previous=first).next_step == ""
    # Nor once the agent wrapped up (its last turn calls no tool), nor after it submitted.
    wrapped = [*messages, {"role": "assistant", "content": "The fix is complete."}]
    assert extract(wrapped, None, INDEX, task=TASK).next_step == ""
    submit = {**call(9, "submit"), "content": "Let's submit the fix."}
    assert extract([submit, result(9, "ok")], None, INDEX, task=TASK).next_step == ""
    tidy = {**call(8, "rm reproduce.py"), "content": "Now let me remove the reproduction script:"}
    done = [tidy, result(8, ""), {**call(9, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"),
                                  "content": "Let me finish the task."}, result(9, "")]  # fmt: skip
    assert extract(done, None, INDEX, task=TASK).next_step == ""


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


ISSUE_FORM = """<pr_description>
hist() no longer respects range=... when density=True
<!--To help us understand and resolve your issue, please fill out the form.
Please make sure to minimize the number of dependencies required.-->

**Code for reproduction**

```python
_, bins, _ = plt.hist(np.random.rand(10), "auto", range=(0, 1), density=True)
```

**Expected outcome**

Some array where the first value is 0 and the last one is 1.

#### Expected Output

```
{'foo': 'bar'}
```

### What you expected to happen
Attributes should be preserved (e.g. pass `keep_attrs=True` to `apply_ufunc`).
I don't think this is a numpy problem.
</pr_description>"""


def test_an_issue_forms_expectations_are_constraints_under_their_heading() -> None:
    state = extract([{"role": "user", "content": ISSUE_FORM}], None, INDEX, task=TASK)
    assert state.constraints == (
        "Expected outcome: Some array where the first value is 0 and the last one is 1.",
        "Expected Output: {'foo': 'bar'}",  # the first line of the code under the heading
        "What you expected to happen: Attributes should be preserved (e.g. pass "
        "`keep_attrs=True` to `apply_ufunc`).",  # "e.g." ends no sentence
    )  # no template comment ("Please make sure ..."), no bare heading, no "I don't think"


def test_the_goal_reads_as_the_task_renders_without_template_comments() -> None:
    task = "hist() ignores range <!--A short 1-2 sentences that describe the bug--> with density"
    state = extract([], None, INDEX, task=task)
    assert state.goal == "hist() ignores range with density"
    # A task cut inside its comment: the rest would not render either.
    assert extract([], None, INDEX, task="xr.where drops attrs <!-- Please include").goal == (
        "xr.where drops attrs"
    )


def test_the_goal_is_the_issues_words_not_its_form() -> None:
    task = (
        "Consider the following PR description:\n"
        "BUG: [pyarrow] 'Index' object has no attribute 'freq'\n\n"
        "### Pandas version checks\n\n- [X] I have checked that this issue has not already been "
        "reported.\n\n### Reproducible Example\n\n```python\nimport numpy as np\n"
        "from pandas import read_parquet\ndf2 = read_parquet('f.parquet', dtype_backend='pyarrow')"
        "\n```\n\n### Issue Description\n\nDescription\n\nThe `loc` lookup reads `key.freq`.\n\n"
        "### Installed Versions\n\npandas 2.1.0\nnumpy 1.25\n\n### Expected Behavior\n\n"
        "_No response_\n"
    )
    assert extract([], None, INDEX, task=task).goal == (
        "BUG: [pyarrow] 'Index' object has no attribute 'freq' df2 = read_parquet('f.parquet', "
        "dtype_backend='pyarrow') The `loc` lookup reads `key.freq`."
    )
    # A heading before any words is the title; a goal read again is itself.
    titled = extract([], None, INDEX, task="# Fix the parser\n\nIt reads `x` twice.").goal
    assert titled == "Fix the parser It reads `x` twice."
    assert extract([], None, INDEX, task=titled).goal == titled
    # An introduction before the title, a listing section first: neither is the title.
    intro = "Consider the following PR description:\n\n## Fix the parser\n\nIt reads `x` twice."
    assert extract([], None, INDEX, task=intro).goal == "Fix the parser It reads `x` twice."
    versions = "### Pandas version checks\n\n- [X] checked\n\n### Issue\n\n`pd.f()` crashes."
    assert extract([], None, INDEX, task=versions).goal == "Issue `pd.f()` crashes."
    # All of it form: the task as written, without its comments, rather than nothing.
    form = "- [x] I have checked <!-- tick it -->\n- [ ] I have read"
    assert extract([], None, INDEX, task=form).goal == "- [x] I have checked - [ ] I have read"
    # However long the issue, the goal is as long as before: what is left is the task's.
    long = "Crash in `f`\n\n" + "The parser reads `x` twice. " * 40
    goal = extract([], None, INDEX, task=long).goal
    assert goal.startswith("Crash in `f` The parser reads `x` twice.") and len(goal) == 300


def test_the_harness_talking_after_its_task_gives_no_constraints() -> None:
    messages = [
        {"role": "user", "content": "<pr_description>\nThe cache must be cleared on reload.\n"
                                    "</pr_description>"},
        {"role": "user", "content": "No tool calls found. Every response MUST include at "
                                    "least one tool call."},
    ]  # fmt: skip
    state = extract(messages, None, INDEX, task=TASK)
    assert state.constraints == ("The cache must be cleared on reload.",)
    # Without a harness, a person's later message still counts.
    chat = [{"role": "user", "content": "Fix the cache."}, messages[1]]
    assert extract(chat, None, INDEX, task=TASK).constraints == (
        "Every response MUST include at least one tool call.",
    )


def test_a_search_finding_nothing_is_no_failure_but_a_failing_command_is() -> None:
    empty = "<returncode>1</returncode>\n<output>\n</output>"
    messages = [
        call(1, "grep -rn 'def where' xarray/ | grep ops"), result(1, empty),
        call(2, "cd /testbed && git grep -n keep_attrs"), result(2, empty),
        call(3, "python -m pytest -q"), result(3, empty),
        call(4, "grep -rn where missing_dir/"),
        result(4, "grep: missing_dir/: No such file or directory\n<returncode>2</returncode>"),
    ]  # fmt: skip
    errors = extract(messages, None, INDEX, task=TASK).errors
    assert errors == (
        "`python -m pytest -q`: exit 1",
        "`grep -rn where missing_dir/`: grep: missing_dir/: No such file or directory",
    )


def test_a_script_that_exits_0_saying_it_reproduced_the_bug_is_a_failure() -> None:
    messages = [
        call(1, "python reproduce_issue.py"),
        result(1, "<returncode>0</returncode>\n<output>\nResult attributes: {}\n"
                  "Issue reproduced: Attributes are lost.\n</output>"),
        call(2, "python repro_dtype.py"),
        result(2, "<returncode>0</returncode>\n<output>\nBUG: dtype isn't kept (int64)\n</output>"),
        call(3, "python edge_cases.py"),  # an edge case caught as it should be: no failure
        result(3, "<returncode>0</returncode>\n<output>\nCaught expected ValueError: bad\n"
                  "Issue not reproduced.\nFailed: 0\nThe issue has been reproduced: no\n</output>"),
        call(4, "plan"),  # a report in prose
        result(4, "<returncode>0</returncode>\nThe Reproducer says how the issue is reproduced."),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == (
        # with the value it printed right before saying so: the evidence
        "`python reproduce_issue.py`: Result attributes: {} | Issue reproduced: Attributes are lost.",
        "`python repro_dtype.py`: BUG: dtype isn't kept (int64)",
    )
    # Once the script no longer says so, the failure is fixed.
    fixed = [*messages, call(5, "python reproduce_issue.py"),
             result(5, "<returncode>0</returncode>\n<output>\nResult attributes: {'a': 1}\n</output>")]  # fmt: skip
    assert (
        "`python reproduce_issue.py`: Result attributes: {} | Issue reproduced: Attributes are "
        "lost. (fixed later)" in extract(fixed, None, INDEX, task=TASK).errors
    )


def test_a_scripts_own_catch_all_saying_it_failed_is_a_failure() -> None:
    messages = [
        call(1, "python reproduce.py"),
        result(1, "Applying...\nAn error occurred during setup: UNIQUE constraint failed: "
                  "auth_user.username\n"),
        call(2, "python3 reproduce_issue.py"),
        result(2, "<returncode>0</returncode>\n<output>\nAttempting to remove...\n\nFailed to "
                  "remove index_together: Found wrong number (2) of constraints\n</output>"),
        call(3, "python check.py"),  # a count, a heading, what did not or should fail: none
        result(3, "<returncode>0</returncode>\n<output>\nFailed: 0\nFailed: 0 of 10\n"
                  "Failed to parse:\nExpected failure: bad input\nNo bug: fine\nNot a bug: ok\n"
                  "Fixed bug: x\nThis should fail: True\nFailed to reproduce: it is fixed\n"
                  "No error occurred: result = 3\nError: bad input, as it should be\n"
                  "Expected error occurred: ValueError\nError occurred as expected: x: y\n</output>"),
        call(4, "python debug_apps.py"),
        result(4, "<returncode>0</returncode>\n<output>\ncontenttypes: <Config>\n"
                  "Contenttypes failed: No installed app with label 'Contenttypes'.\n</output>"),
        call(5, "python repro.py"), result(5, "T\nNo RuntimeError caught, issue reproduced.\n"),
        call(6, "./mvnw test"), result(6, "Error: JAVA_HOME is not defined correctly.\n"),
        call(7, "create repro.py"),  # an editor's listing says nothing of why
        result(7, "Error: File 'repro.py' already exists.\n13: print(f'Caught as expected: {e}')"
                  "\n36:import org.junit.Assert;"),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == (
        "`python reproduce.py`: An error occurred during setup: UNIQUE constraint failed: "
        "auth_user.username",
        "`python3 reproduce_issue.py`: Failed to remove index_together: Found wrong number (2) of "
        "constraints",
        "`python debug_apps.py`: contenttypes: <Config> | Contenttypes failed: No installed app "
        "with label 'Contenttypes'.",
        "`python repro.py`: No RuntimeError caught, issue reproduced.",
        "`./mvnw test`: Error: JAVA_HOME is not defined correctly.",
        "`create repro.py`: Error: File 'repro.py' already exists.",
    )


@pytest.mark.parametrize(
    "chained",
    [
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    ],
)
def test_a_chained_exception_keeps_its_cause(chained: str) -> None:
    output = (
        'Traceback (most recent call last):\n  File "reproduce.py", line 9, in f\n'
        f"    re.compile(pattern)\nre.error: bad escape \\p at position 1\n\n{chained}\n\n"
        'Traceback (most recent call last):\n  File "reproduce.py", line 11, in f\n'
        '    raise RuntimeError(f"Simulated: {exc}")\nRuntimeError: Simulated: bad escape\n'
    )
    (error,) = extract([call(1, "python reproduce.py"), result(1, output)], None, INDEX,
                       task=TASK).errors  # fmt: skip
    assert error == (
        "`python reproduce.py`: re.error: bad escape \\p at position 1 | RuntimeError: Simulated: "
        "bad escape"
    )


def test_a_viewers_complaint_fails_it_where_the_harness_states_no_status() -> None:
    messages = [
        call(1, "cd fastjson/"),
        result(1, "/bin/bash: line 17871: cd: fastjson/: No such file or directory"),
        call(2, "cat notes.txt"),  # what it shows is no complaint of its own
        result(2, "cat: see below\nfatal: not a repo\nls: x: No such file or directory"),
        call(3, "ls missing || true"),  # said exit 0: it did not fail
        result(3, "ls: missing: No such file or directory\nExit code: 0"),
        call(4, "find / -name x.py"),  # what a search skips is no failure of it
        result(4, "/w/x.py\nfind: '/proc/1/task': Permission denied"),
        call(5, "cd src"), result(5, "sh: 1: cd: can't cd to src"),  # dash says it so
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == (
        "`cd fastjson/`: cd: fastjson/: No such file or directory",
        "`cd src`: cd: can't cd to src",
    )
    # With a status stated, the status says it, and the complaint why.
    stated = [call(1, "cat gone.txt"), result(1, "cat: gone.txt: No such file\nExit code: 1")]
    assert extract(stated, None, INDEX, task=TASK).errors == (
        "`cat gone.txt`: cat: gone.txt: No such file",
    )


def test_a_log_line_that_starts_with_a_time_still_says_why() -> None:
    out = "12:00:01 ERROR ValueError: bad config\nExit code: 1"
    (error,) = extract([call(1, "python app.py"), result(1, out)], None, INDEX, task=TASK).errors
    assert error == "`python app.py`: 12:00:01 ERROR ValueError: bad config"


def test_a_warning_with_its_location_is_not_why_it_failed() -> None:
    output = (
        "/testbed/xarray/core/groupby.py:207: FutureWarning: is_monotonic is deprecated\n"
        "  return index.is_monotonic\n"
        "ValueError: The truth value of an array with more than one element is ambiguous\n"
        "<returncode>1</returncode>"
    )
    (error,) = extract([call(1, "python t.py"), result(1, output)], None, INDEX, task=TASK).errors
    assert error == (
        "`python t.py`: ValueError: The truth value of an array with more than one element is "
        "ambiguous"
    )


def test_a_harness_task_describing_the_bug_gives_no_decisions() -> None:
    issue = (
        "<pr_description>\nxr.where returns int64 instead of int8. The dtype should be kept.\n"
        "</pr_description>\nYou should create a small edit tool instead of using sed."
    )
    messages = [
        {"role": "user", "content": issue},
        {"role": "assistant", "content": "I'll use np.result_type instead of casting, because "
                                         "it follows numpy's promotion rules."},
    ]  # fmt: skip
    state = extract(messages, None, INDEX, task=TASK)
    assert state.decisions == (
        "I'll use np.result_type instead of casting, because it follows numpy's promotion rules.",
    )
    chat = [{"role": "user", "content": "We decided to keep SQLite instead of Postgres."}]
    assert extract(chat, None, INDEX, task=TASK).decisions == (
        "We decided to keep SQLite instead of Postgres.",
    )


def test_an_editors_own_commands_are_no_shell_commands_run() -> None:
    edit = tool("e1", "str_replace_editor", command="str_replace", path="/testbed/gin.go",
                old_str="a", new_str="b")  # fmt: skip
    messages = [edit, result(0, "The file /testbed/gin.go has been edited."), call(1, "go vet")]
    state = extract(messages, None, INDEX, task=TASK)
    assert state.facts == ("ran `go vet`",)
    assert [a.path for a in state.files if a.edited] == ["gin.go"]


def test_a_file_touch_makes_is_edited_but_touching_an_indexed_one_changes_nothing() -> None:
    messages = [call(1, "touch gin.go app/__init__.py"), result(1, "<returncode>0</returncode>")]
    state = extract(messages, None, INDEX, task=TASK)
    assert [a.path for a in state.files if a.edited] == ["app/__init__.py"]
    assert "gin.go" in [a.path for a in state.files]  # named by the command, not edited


def test_paths_after_a_lone_cd_are_read_from_that_directory() -> None:
    index = IndexFacts(
        files={p: "0" * 64 for p in ("src/enums/EnumTest.java", "src/json/EnumTest.java")},
        symbols={},
    )
    messages = [
        call(1, "cd src/enums"), result(1, ""),
        call(2, "sed -i 's/a/b/' EnumTest.java && touch Extra.java"), result(2, ""),
        call(3, "cd ../.. && ls"), result(3, ""),  # a cd with more: this command's own
    ]  # fmt: skip
    state = extract(messages, None, index, task=TASK)
    assert [a.path for a in state.files if a.edited] == [
        "src/enums/EnumTest.java",
        "src/enums/Extra.java",
    ]


def test_hostile_headings_comments_fences_and_long_lines_take_one_pass() -> None:
    # Each would take minutes to seconds with a backtracking pattern.
    for text in (
        "# a" + " " * 200_000 + "b",
        "**a" + " " * 200_000,
        "<!--" * 50_000,
        "```\n" * 50_000,
    ):
        extract([{"role": "user", "content": f"<issue>{text}</issue>"}], None, INDEX, task=TASK)
    long_line = "x error " * 25_000 + "\n<returncode>0</returncode>"
    assert (
        extract([call(1, "python t.py"), result(1, long_line)], None, INDEX, task=TASK).errors == ()
    )


def test_a_scripts_source_or_a_log_saying_caught_is_no_failure() -> None:
    source = 'try:\n    f()\nexcept TypeError as e:\n    print(f"Caught expected TypeError: {e}")\n'
    view = tool("v1", "str_replace_editor", command="view", path="/testbed/repro.py")
    messages = [
        call(1, "cat repro.py"), result(1, source + "<returncode>0</returncode>"),
        view, result(0, '     4\t    print("Issue reproduced: Attributes are lost.")'),
        call(2, "grep -rn reproduced ."), result(2, "repro.py:4: Issue reproduced: lost\n"),
        call(3, "python server.py"),
        result(3, "INFO Caught exception in request handler, retrying\nFailed: 0\n"
                  "Error wasn't reproduced\n<returncode>0</returncode>"),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == ()


def test_the_harness_is_remembered_by_the_next_checkpoint() -> None:
    first = extract(
        [{"role": "user", "content": "<pr_description>\nThe cache must be cleared.\n</pr_description>"}],
        None, INDEX, task=TASK,
    )  # fmt: skip
    later = [{"role": "user", "content": "Every response MUST include at least one tool call. "
                                         "We decided nothing instead of something."}]  # fmt: skip
    second = extract(later, None, INDEX, task=TASK, previous=first)
    assert first.harness and second.harness
    assert second.constraints == ("The cache must be cleared.",) and second.decisions == ()


def test_constraints_said_in_bold_or_beside_inline_code_are_kept() -> None:
    chat = (
        "**Do not modify the tests.**\n"
        "```foo()``` is slow.\nYou must not change bar.\n"
        "```python\nx = 1\n"  # a fence never closed: prose after all
        "Never push to main.\n"
    )
    assert extract([{"role": "user", "content": chat}], None, INDEX, task=TASK).constraints == (
        "Do not modify the tests.",
        "You must not change bar.",
        "Never push to main.",
    )
    pasted = "Here is the log:\n```\n<output>\nfailed\n</output>\n```\nKeep the log format."
    assert extract([{"role": "user", "content": pasted}], None, INDEX, task=TASK).constraints == (
        "Keep the log format.",
    )


def test_an_unclosed_comment_and_an_unfilled_form_lose_nothing_and_add_nothing() -> None:
    goal = "Parser crashes on `<!--` without closing; it must handle it"
    assert extract([], None, INDEX, task=goal).goal == goal
    form = (
        "<issue>\n### Expected behavior\n\n_No response_\n\n### Expected output\n\n"
        "Shouldn't it return 1?\n\n### Proposal\n\nPlease add a `strict` flag. The fix is to "
        "escape the prefix with re.escape(). This can be fixed in Field.__lt__ by comparing "
        "the model too. We don't have to keep the old API.\n</issue>"
    )
    assert extract([{"role": "user", "content": form}], None, INDEX, task=TASK).constraints == (
        "Please add a `strict` flag.",
        "The fix is to escape the prefix with re.escape().",
        "This can be fixed in Field.__lt__ by comparing the model too.",
    )


def test_a_search_is_no_failure_only_when_it_says_nothing_else() -> None:
    empty = "<returncode>1</returncode>\n<output>\n</output>"
    messages = [
        call(1, "grep -E 'a|b' x.py\n"), result(1, empty),  # a quoted pipe, a trailing newline
        call(2, "timeout 5 grep \"a\\|b\" x.py;"), result(2, empty),
        call(3, "python repro.py && grep -n foo x.py"),
        result(3, "AssertionError: 1 != 2\n<returncode>1</returncode>"),
        call(4, "python t.py | diff - expected.txt"),
        result(4, "1c1\n< 3\n---\n> 2\n<returncode>1</returncode>"),
    ]  # fmt: skip
    errors = extract(messages, None, INDEX, task=TASK).errors
    assert [e.split("`: ")[0] for e in errors] == [
        "`python repro.py && grep -n foo x.py",
        "`python t.py | diff - expected.txt",
    ]


def test_a_warning_that_is_the_error_is_kept_as_why() -> None:
    output = "E   DeprecationWarning: pkg_resources is deprecated\nFAILED t.py::test_a\n"
    (error,) = extract(
        [call(1, "pytest -W error"), result(1, output)], None, INDEX, task=TASK
    ).errors
    assert "DeprecationWarning: pkg_resources is deprecated" in error


def test_what_a_viewer_shows_is_no_failure_but_its_own_complaint_is() -> None:
    log = 'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: bad\nFAILED t::x'
    messages = [
        call(1, "sed -n '1,40p' ci.log | head -20"), result(1, log + "\n<returncode>0</returncode>"),
        call(2, "git show HEAD:tests/test_x.py"), result(2, "FAILED = 1\nerror = None"),
        call(3, "cat missing.py"),
        result(3, "cat: missing.py: No such file or directory\n<returncode>1</returncode>"),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == (
        "`cat missing.py`: cat: missing.py: No such file or directory",
    )


def test_a_long_failing_command_keeps_the_test_it_runs() -> None:
    command = "cd /testbed && python -m pytest -q -p no:cacheprovider tests/test_views.py::test_redirect_keeps_prefix"
    (error,) = extract([call(1, command), result(1, GO_TEST_OUTPUT)], None, INDEX, task=TASK).errors
    # Cut in the middle, without the `cd` to the repository that opens it.
    assert error.startswith("`python -m pytest -q") and "test_redirect_keeps_prefix`:" in error


def test_exit_status_is_the_harnesss_not_a_number_in_the_output() -> None:
    messages = [
        call(1, "nl -ba main.py | grep -C 5 collect"),
        result(1, "<returncode>0</returncode>\n<output>\n17 import exit\n18    exit 18\n</output>"),
        call(2, "cat run.sh"), result(2, "#!/bin/sh\nfatal: not a repo\nexit 1\n"),
        call(3, "python run.py"), result(3, "started\nExit code: 3"),
        call(5, "python ok.py"), result(5, "done\nexit code 0"),
        call(4, "git -C /testbed show HEAD:ci.log"),
        result(4, "error: build failed\nTraceback (most recent call last):\nValueError: x"),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == ("`python run.py`: exit 3",)


def test_a_viewing_tool_shows_a_log_without_failing() -> None:
    log = "Traceback (most recent call last):\nValueError: bad\n1 failed"
    read = tool("r1", "Read", file_path="/w/ci.log")
    answer = {"role": "tool", "tool_call_id": "r1", "content": log}
    assert extract([read, answer], None, INDEX, task=TASK).errors == ()


def test_a_failed_cd_moves_nothing_and_subshells_keep_no_directory() -> None:
    index = IndexFacts(files={p: "0" * 64 for p in ("src/a.py", "a.py")}, symbols={})
    failed_cd = [
        call(1, "cd src"), result(1, "bash: cd: src: No such file or directory\nExit code: 1"),
        call(2, "sed -i 's/x/y/' a.py"), result(2, ""),
        call(3, "touch ../new.py"), result(3, ""),  # above the top: no file of the repository
    ]  # fmt: skip
    state = extract(failed_cd, None, index, task=TASK)
    assert [a.path for a in state.files if a.edited] == ["a.py"]
    subshell = [
        call(1, "cd src"), result(1, "<returncode>0</returncode>"),
        call(2, "sed -i 's/x/y/' a.py"), result(2, "<returncode>0</returncode>"),
    ]  # fmt: skip
    assert [a.path for a in extract(subshell, None, index, task=TASK).files if a.edited] == ["a.py"]


def test_a_tag_pasted_later_in_a_chat_makes_no_harness() -> None:
    messages = [
        {"role": "user", "content": "The export is broken."},
        {"role": "user", "content": "Here is the bug: <issue>Export drops rows.</issue> "
                                    "Don't touch the tests."},
        {"role": "user", "content": "Never push to main."},
    ]  # fmt: skip
    state = extract(messages, None, INDEX, task=TASK)
    assert not state.harness and state.constraints[-1] == "Never push to main."


def test_proposals_count_but_requests_for_detail_and_steps_do_not() -> None:
    issue = (
        "<issue>\nPlease describe. Please consider the following trivial Java code:\n"
        "Please add a `strict` flag.\n\n### Steps to reproduce\n\nRemove the cache directory "
        "and it works again. Change the order of fields in the JSON:\n\n"
        "### Traceback\n\nValueError: size must be positive\n</issue>"
    )
    assert extract([{"role": "user", "content": issue}], None, INDEX, task=TASK).constraints == (
        "Please add a `strict` flag.",
    )


def test_the_harness_flag_survives_storage() -> None:
    from dataclasses import asdict

    from ctxsvc.stores.checkpoints import summary_from_dict

    state = extract([{"role": "user", "content": "<issue>It must sort.</issue>"}], None, INDEX,
                    task=TASK)  # fmt: skip
    assert summary_from_dict(json.loads(json.dumps(asdict(state)))).harness is True
    old = {k: v for k, v in asdict(state).items() if k != "harness"}  # written before the field
    assert summary_from_dict(old).harness is False


def test_a_viewers_own_complaint_says_why_and_printed_code_is_no_verdict() -> None:
    messages = [
        call(1, "git -C /testbed show HEAD~9:gin.go"),
        result(1, "fatal: invalid object name 'HEAD~9'.\n<returncode>128</returncode>"),
        call(2, "python show_source.py"),
        result(2, '<returncode>0</returncode>\n<output>\n    print("Issue reproduced: lost")\n</output>'),
    ]  # fmt: skip
    assert extract(messages, None, INDEX, task=TASK).errors == (
        "`git -C /testbed show HEAD~9:gin.go`: fatal: invalid object name 'HEAD~9'.",
    )


def test_the_next_checkpoint_keeps_the_shells_directory_and_forgets_a_removed_scratch_file() -> (
    None
):
    index = IndexFacts(files={"src/enums/EnumTest.java": "0" * 64}, symbols={})
    first = extract(
        [call(1, "cd src/enums"), result(1, ""), call(2, "touch Repro.java"), result(2, "")],
        None, index, task=TASK,
    )  # fmt: skip
    assert first.cwd == "src/enums"
    assert [a.path for a in first.files if a.edited] == ["src/enums/Repro.java"]
    later = [call(3, "sed -i 's/a/b/' EnumTest.java && rm Repro.java"), result(3, "")]
    second = extract(later, None, index, task=TASK, previous=first)
    assert [a.path for a in second.files if a.edited] == ["src/enums/EnumTest.java"]
