"""What a shell command does to files: the paths it writes or removes; and the simple
commands it is made of.

Agents that only have a shell (mini-SWE-agent and the like) edit with
``sed -i``, ``ed``, heredocs and redirections, ``tee``, ``cp``/``mv``, small
Python scripts and shell scripts (``bash -c``, ``bash <<EOF``, a ``*.sh``
written from a heredoc) rather than with an edit tool. A checkpoint needs those files
as edited, not merely read, and the lines an edit addresses (``sed -i '42s/…/'``)
locate the symbol it changed. Pure functions over the command text; nothing is
executed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_SEPARATORS = frozenset(";&|()\n")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][\w-]*)\1")
_PY_WRITE = re.compile(
    r"""\bopen\(\s*(?:r|f)?(['"])([^'"\n]+)\1\s*,\s*(?:mode\s*=\s*)?['"][^'"]*[wax+]"""
    r"""|Path\(\s*(['"])([^'"\n]+)\3\s*\)\s*\.write_(?:text|bytes)\("""
)
# A line address opening a sed or ed command: "42s/…", "10,12c\…", "514a".
_ADDRESS = re.compile(r"(?:^|[;\n{])\s*(\d+)(?:\s*,\s*(\d+))?\s*[acdisy]", re.M)
_PYTHON = re.compile(r"python[\d.]*$")
_SHELLS = frozenset({"sh", "bash", "zsh", "dash"})
_WRAPPERS = frozenset({"sudo", "command", "env", "timeout", "nice", "time", "nohup", "!", "exec"})


@dataclass(frozen=True)
class FileEffect:
    """One file a command writes (``kind`` "write"; "copy" when only an existing file
    should count, e.g. the destination of ``cp``; "create" when only a new one should,
    e.g. what ``touch`` makes) or removes ("remove")."""

    path: str
    kind: str = "write"
    text: str = ""  # what was written, or the edit expression
    lines: tuple[int, ...] = ()  # the lines the edit addresses, when it says


def effects(command: str) -> list[FileEffect]:
    """The files ``command`` writes or removes, in order; [] when it cannot be parsed."""
    shell, bodies = _split_heredocs(command)
    try:
        tokens = _tokens(shell)
    except ValueError:  # unbalanced quotes: not a command we can read
        return []
    out: list[FileEffect] = []
    words: list[str] = []
    targets: list[str] = []
    heredocs = iter(bodies)
    body = ""
    tokens.append("\n")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok and set(tok) <= set("<>&|;()\n") and ("<" in tok or ">" in tok):
            if words and words[-1].isdigit():
                words.pop()  # the fd of "2>"
            target = tokens[i + 1] if i + 1 < len(tokens) else ""
            if tok.startswith("<<") and tok != "<<<":
                body = next(heredocs, "")
            elif tok in (">", ">>", ">|") and target and not target.startswith("&"):
                targets.append(target)
            i += 2
            continue
        if tok and set(tok) <= _SEPARATORS:
            out += _simple(words, targets, body)
            words, targets, body = [], [], ""
        else:
            words.append(tok)
        i += 1
    for text in bodies:  # python <<EOF, or a script written now and run later
        out += _python_writes(text)
    return [e for e in out if e.path and e.path != "/dev/null" and not e.path.startswith("/dev/")]


def _split_heredocs(command: str) -> tuple[str, list[str]]:
    """The command without its heredoc bodies, and the bodies in order."""
    lines = command.split("\n")
    shell: list[str] = []
    bodies: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        shell.append(line)
        i += 1
        for m in _HEREDOC.finditer(line):
            body: list[str] = []
            while i < len(lines) and lines[i].strip() != m.group(2):
                body.append(lines[i])
                i += 1
            i += 1  # the delimiter
            bodies.append("\n".join(body))
    return "\n".join(shell), bodies


def simple_commands(command: str) -> list[list[str]]:
    """The words of each simple command of ``command`` (split at ``|``, ``&&``, ``;``,
    newlines, ...), quotes read as the shell does, wrappers that run the next word
    (``sudo``, ``env``, ``timeout 5``, ``nice``, ``time``, ``VAR=1``) left out; by
    whitespace when the quotes do not balance."""
    try:
        tokens = _tokens(command)
    except ValueError:
        tokens = re.split(r"\s+|(?=[;&|\n])|(?<=[;&|\n])", command)
    out: list[list[str]] = []
    words: list[str] = []
    tokens.append(";")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok and set(tok) <= _SEPARATORS | {"<", ">"} and ("<" in tok or ">" in tok):
            if words and words[-1].isdigit():
                words.pop()  # the fd of "2>&1"
            i += 1  # and the redirect's target
        elif tok and set(tok) <= _SEPARATORS:
            while words and (words[0] in _WRAPPERS or re.match(r"\w+=", words[0])):
                words = words[2:] if words[0] == "timeout" else words[1:]
            if words:
                out.append(words)
            words = []
        elif tok:
            words.append(tok)
    return out


def _tokens(shell: str) -> list[str]:
    """``shell``'s words and operators as the shell splits them (``ValueError`` when its
    quotes do not balance); newlines kept, as they end commands."""
    lexer = shlex.shlex(_plain(shell), posix=True, punctuation_chars=";&|()<>\n")
    lexer.commenters = ""  # dropped by _plain, which knows what is quoted
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    return list(lexer)


def _plain(shell: str) -> str:
    """``shell`` as the shell reads it before splitting words: line continuations (a
    backslash ending a line, outside single quotes) joined, comments (a ``#`` opening a
    word, outside quotes) dropped to the end of their line. One pass."""
    if "\\\n" not in shell and "#" not in shell:
        return shell
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(shell):
        ch = shell[i]
        if ch == "\\" and quote != "'":
            if shell[i + 1 : i + 2] == "\n":
                i += 2  # a continuation: the shell drops both
                continue
            out.append(shell[i : i + 2])  # an escaped character, kept as it is
            i += 2
            continue
        if ch == "#" and not quote and (not out or out[-1] in " \t\n;&|()"):
            end = shell.find("\n", i)
            i = len(shell) if end == -1 else end  # the newline ends the command
            continue
        if ch in "'\"" and quote in ("", ch):
            quote = "" if quote else ch
        out.append(ch)
        i += 1
    return "".join(out)


def _simple(words: list[str], targets: list[str], body: str) -> list[FileEffect]:
    """What one simple command (its words, redirect targets and heredoc) writes."""
    out = [FileEffect(t, text=body) for t in targets]
    if body and any(t.endswith(".sh") for t in targets):
        out += effects(body)  # a script written now and run later
    while words and (re.match(r"\w+=", words[0]) or words[0] in ("sudo", "command", "env")):
        words = words[1:]
    if not words:
        return out
    prog, args = words[0].rsplit("/", 1)[-1], words[1:]
    if prog in ("sed", "gsed", "perl"):
        out += _in_place(prog, args)
    elif prog in ("ed", "ex"):
        files = [a for a in args if not a.startswith("-")]
        if files:
            out.append(FileEffect(files[0], text=body, lines=_lines(body)))
    elif prog == "tee":
        out += [FileEffect(a, text=body) for a in args if not a.startswith("-")]
    elif prog in ("cp", "mv", "install") and len(paths := _operands(args)) >= 2:
        out.append(FileEffect(paths[-1], kind="copy"))
    elif prog == "rm":
        out += [FileEffect(a, kind="remove") for a in _operands(args)]
    elif prog == "touch" and not any(re.fullmatch(r"-\w*c\w*|--no-create", a) for a in args):
        it = iter(args)  # (-c: touch no file that is not there)
        for a in it:
            if a in ("-d", "-r", "-t", "--date", "--reference"):
                next(it, "")  # the option's value
            elif not a.startswith("-"):
                out.append(FileEffect(a, kind="create"))
    elif _PYTHON.match(prog) and "-c" in args[:-1]:
        out += _python_writes(args[args.index("-c") + 1])
    elif prog in _SHELLS and "-c" in args[:-1]:
        out += effects(args[args.index("-c") + 1])
    elif prog in _SHELLS and body and not _operands(args):
        out += effects(body)
    return out


def _operands(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-")]


def in_place(prog: str, args: list[str]) -> bool:
    """Whether ``sed`` or ``perl`` edits its files in place (``-i``, ``-pi``, ``--in-place``)."""
    flag = r"-[a-zA-Z]*i\S*" if prog == "perl" else r"-[nEersuz]*i\S*"
    return any(re.fullmatch(flag, a) or re.fullmatch(r"--in-place(=\S*)?", a) for a in args)


def _in_place(prog: str, args: list[str]) -> list[FileEffect]:
    """Files edited in place by ``sed -i`` or ``perl -i``, with the script and its lines."""
    if not in_place(prog, args):
        return []
    scripts: list[str] = []
    operands: list[str] = []
    it = iter(args)
    for a in it:
        if a in ("-e", "--expression") or (prog == "perl" and re.fullmatch(r"-\w*e", a)):
            scripts.append(next(it, ""))
        elif a.startswith("--expression="):
            scripts.append(a.split("=", 1)[1])
        elif a in ("-f", "--file", "-l"):
            next(it, "")
        elif a.startswith("-") and a != "-":
            continue
        else:
            operands.append(a)
    if not scripts and operands:
        scripts.append(operands.pop(0))
    script = "\n".join(scripts)
    lines = _lines(script) if prog != "perl" else ()
    return [FileEffect(f, text=script, lines=lines) for f in operands]


def _lines(script: str) -> tuple[int, ...]:
    """The line numbers that sed or ed commands in ``script`` address (both ends of a range)."""
    out: list[int] = []
    for start, end in _ADDRESS.findall(script):
        out.append(int(start))
        if end:
            out.append(int(end))
    return tuple(out)


def _python_writes(code: str) -> list[FileEffect]:
    """Files a Python snippet opens for writing or writes with ``Path.write_text``."""
    return [FileEffect(m.group(2) or m.group(4), text=code) for m in _PY_WRITE.finditer(code)]
