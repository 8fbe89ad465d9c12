"""Which files a shell command writes or removes, as agents with only a shell edit."""

from __future__ import annotations

import pytest

from ctxsvc.shell_edits import effects, simple_commands

CASES = [
    ("cd /testbed && sed -i '889s/a = 1/a = 2/' ./pkg/mod.py 2>/dev/null", [("./pkg/mod.py", "write", (889,))]),
    ("sed -i '123,125c\\    return x' pkg/a.py pkg/b.py", [("pkg/a.py", "write", (123, 125)), ("pkg/b.py", "write", (123, 125))]),
    ("sed -i.bak -e 's/x/y/' -e '/^#/d' pkg/a.py", [("pkg/a.py", "write", ())]),
    ("sed -n '10,20p' pkg/a.py", []),
    ("sed -i \"s/a/b/\" pkg/a.py && \\\n  sed -i 's/c/d/' pkg/b.py", [("pkg/a.py", "write", ()), ("pkg/b.py", "write", ())]),
    ("perl -pi -e 's/x/y/' lib/a.pm", [("lib/a.pm", "write", ())]),
    ("ed -s pkg/main.py <<EOF\n514a\n    pass\n.\nw\nq\nEOF", [("pkg/main.py", "write", (514,))]),
    ("cat > repro.py << 'EOF'\nprint(1 > 0)\nEOF\npython repro.py", [("repro.py", "write", ())]),
    ("cat <<'EOF' > fix.py\nwith open('pkg/a.py', 'w') as f:\n    f.write(s)\nEOF", [("fix.py", "write", ()), ("pkg/a.py", "write", ())]),
    ("python3 -c \"from pathlib import Path; Path('pkg/a.py').write_text('x')\"", [("pkg/a.py", "write", ())]),
    ("python - <<EOF\nopen('pkg/a.py', 'a').write('x')\nEOF", [("pkg/a.py", "write", ())]),
    ("python -c \"print(open('pkg/a.py').read())\"", []),
    ("echo x | tee -a log.txt > out.txt 2>&1", [("out.txt", "write", ()), ("log.txt", "write", ())]),
    ("cp pkg/a.py pkg/a.py.orig && mv pkg/a.py.orig pkg/a.py", [("pkg/a.py.orig", "copy", ()), ("pkg/a.py", "copy", ())]),
    ("rm -f repro.py test_x.py", [("repro.py", "remove", ()), ("test_x.py", "remove", ())]),
    ("grep -rn 'a > b' pkg | head -5 > /dev/null", []),
    ("FOO=1 sudo sed -i 's/a/b/' pkg/a.py", [("pkg/a.py", "write", ())]),
    ('echo "unbalanced', []),
    ("bash -c 'echo x > pkg/a.py'", [("pkg/a.py", "write", ())]),
    ("cat <<'EOF' > run.sh\nmkdir -p d\necho 'assert 0' > d/__init__.py\nEOF\n./run.sh", [("run.sh", "write", ()), ("d/__init__.py", "write", ())]),
    # A continuation with the next command at the start of its line.
    ("sed -i '/def f/a\\    print(1)' pkg/a.py && \\\nsed -i '/def g/d' pkg/b.py", [("pkg/a.py", "write", ()), ("pkg/b.py", "write", ())]),
    ("mkdir -p app && touch app/__init__.py app/models.py && touch -d yesterday stamp", [("app/__init__.py", "create", ()), ("app/models.py", "create", ()), ("stamp", "create", ())]),
    ("sed -i '3a\\\nnew line' pkg/a.py", [("pkg/a.py", "write", (3,))]),  # quoted: no continuation
]  # fmt: skip


@pytest.mark.parametrize(("command", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_effects(command: str, expected: list[tuple[str, str, tuple[int, ...]]]) -> None:
    assert [(e.path, e.kind, e.lines) for e in effects(command)] == expected


def test_heredoc_body_is_the_written_text() -> None:
    (e,) = effects("cat > pkg/new.py <<EOF\ndef helper():\n    return 1\nEOF")
    assert e.path == "pkg/new.py" and "def helper" in e.text


SIMPLE = [
    ("cd /t && timeout 5 grep -n 'a|b' x.py; echo done", [["cd", "/t"], ["grep", "-n", "a|b", "x.py"], ["echo", "done"]]),
    ("python r.py 2>&1 | tail -5", [["python", "r.py"], ["tail", "-5"]]),
    ("FOO=1 sudo sed -i s/a/b/ f", [["sed", "-i", "s/a/b/", "f"]]),
    ("cat x.py  # look at it\npython t.py", [["cat", "x.py"], ["python", "t.py"]]),
    ("grep '#include' x.c", [["grep", "#include", "x.c"]]),  # quoted: no comment
    ("make && \\\n  make test", [["make"], ["make", "test"]]),
    ('echo "unbalanced', [["echo", '"unbalanced']]),  # by whitespace, as it stands
]  # fmt: skip


@pytest.mark.parametrize(("command", "expected"), SIMPLE, ids=[c[0][:30] for c in SIMPLE])
def test_simple_commands(command: str, expected: list[list[str]]) -> None:
    assert simple_commands(command) == expected


def test_a_comment_hides_no_edit_on_the_next_line_and_touch_c_creates_nothing() -> None:
    edits = effects("ls  # what is there\nsed -i 's/#.*//' pkg/a.py\ntouch -c pkg/b.py")
    assert [(e.path, e.kind) for e in edits] == [("pkg/a.py", "write")]
