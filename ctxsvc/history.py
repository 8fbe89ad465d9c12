"""Git history of an index root: how often and how lately files and lines changed.

Read at an index run when HEAD moved, with one bounded ``git log --first-parent
-p -U0`` of the last ``max_commits`` commits (a merge counts as its diff against
its first parent). Every path is relative to the index root, like
``FileRecord.path``; a root below the top of its repository reads only the
commits that touch it (``--relative -- .``).

Line-level counts need each older commit's changed lines in HEAD's line
numbers. Commits are walked newest first, keeping per file a map from the
lines of the version being read to HEAD's lines: each commit's new-side hunks
go through the map, then the map is composed with the commit's hunks (lines
outside them shift, lines inside them are dead: rewritten later, so they count
for the later commit only).

Stored as one JSON sidecar per index (``<home>/history/<name>.json``, or beside
an index on object storage: :class:`ctxsvc.stores.blobs.Blobs`), written
atomically and keyed by HEAD and root, so a crash leaves the previous file or
none, never half of one.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

from ctxsvc.stores.blobs import Blobs

log = logging.getLogger("ctxsvc.history")

MAX_COMMITS = 1000
MAX_SECONDS = 20.0
MAX_BYTES = 64 << 20  # of patch text read; more is cut like a timeout
COCHANGE_FILES = 30  # commits touching more files say nothing about pairs
COCHANGE_TOP = 20
FORMAT = 1
_DAY = 86400.0
_INF = 1 << 62
# Variables that would point git at another repository than the root's.
_GIT_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR")
_MARK = b"\x1e"
_LINE = re.compile(
    rb"^(?:\x1e(?P<sha>[0-9a-f]{40,64}) (?P<ct>-?\d+)"
    rb"|diff --git (?P<diff>[^\n]*)"
    rb"|@@ -(?P<a>\d+)(?:,(?P<b>\d+))? \+(?P<c>\d+)(?:,(?P<d>\d+))? @@[^\n]*"
    rb"|(?P<side>\+\+\+|---) (?P<name>[^\n]*))$",
    re.M,
)
_ESCAPE = re.compile(rb"\\([0-7]{3}|.)")
_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13}


@dataclass(frozen=True)
class FileHistory:
    commits: int  # commits (first-parent, of the last <= MAX_COMMITS) that changed the file
    age_days: float  # days from the file's last change to HEAD's commit time


class History:
    """What the commits read say about the files and lines at HEAD.

    ``head`` is the HEAD sha read at, ``commits`` the number of commits read
    (0: no git, no commits). ``capped`` says the read stopped at
    ``max_seconds`` or ``MAX_BYTES`` before ``max_commits``.
    """

    EMPTY: ClassVar[History]

    def __init__(
        self,
        head: str | None,
        commits: int,
        files: Mapping[str, FileHistory],
        cochanged: Mapping[str, Mapping[str, float]],
        runs: Mapping[str, Sequence[tuple[int, int, int]]],
        ages: Sequence[float],
        *,
        capped: bool = False,
    ) -> None:
        self.head = head
        self.commits = commits
        self.capped = capped
        self._files = files
        self._cochanged = cochanged
        self._runs = runs  # path -> (start, end, commit position) in HEAD's lines, by start
        self._ages = ages  # commit position (0 = newest) -> age in days

    def file(self, path: str) -> FileHistory | None:
        return self._files.get(path)

    def cochanged(self, path: str) -> Mapping[str, float]:
        """Other file -> commits changing both / commits changing ``path``, the top
        ``COCHANGE_TOP`` (only commits touching at most ``COCHANGE_FILES`` files count)."""
        return self._cochanged.get(path, _NONE)

    def span(self, path: str, start: int, end: int) -> tuple[int, float | None]:
        """Commits whose changed lines, in HEAD's line numbers, overlap ``start..end``,
        and the age in days of the youngest of them (None without one)."""
        seen: set[int] = set()
        for s, e, k in self._runs.get(path, ()):
            if s > end:
                break
            if e >= start:
                seen.add(k)
        if not seen:
            return 0, None
        return len(seen), self._ages[min(seen)]

    def __repr__(self) -> str:
        return f"History(head={self.head!r}, commits={self.commits}, files={len(self._files)})"

    # -- storage ---------------------------------------------------------------

    def dumps(self, root: str) -> bytes:
        """Compact JSON, keyed by ``root`` and ``head`` (see :func:`load`)."""
        doc = {
            "format": FORMAT,
            "root": root,
            "head": self.head,
            "commits": self.commits,
            "capped": self.capped,
            "ages": [round(a, 4) for a in self._ages],
            "files": {p: [f.commits, round(f.age_days, 4)] for p, f in self._files.items()},
            "cochanged": {
                p: [[o, round(w, 4)] for o, w in ws.items()] for p, ws in self._cochanged.items()
            },
            "runs": {p: [x for run in rs for x in run] for p, rs in self._runs.items()},
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )

    @classmethod
    def loads(cls, data: bytes) -> tuple[str, History]:
        """The root and the history of :meth:`dumps` output; ``ValueError`` if malformed."""
        try:
            doc = json.loads(data.decode("utf-8", "surrogatepass"))
            if doc["format"] != FORMAT:
                raise ValueError(f"format {doc['format']!r}, not {FORMAT}")
            files = {p: FileHistory(int(n), float(a)) for p, (n, a) in doc["files"].items()}
            cochanged = {
                p: MappingProxyType({str(o): float(w) for o, w in ws})
                for p, ws in doc["cochanged"].items()
            }
            runs: dict[str, list[tuple[int, int, int]]] = {}
            for p, flat in doc["runs"].items():
                it = iter(int(x) for x in flat)
                runs[p] = list(zip(it, it, it, strict=True))
            ages = [float(a) for a in doc["ages"]]
            head = doc["head"]
            history = cls(
                None if head is None else str(head), int(doc["commits"]), files, cochanged,
                runs, ages, capped=bool(doc["capped"]),
            )  # fmt: skip
            return str(doc["root"]), history
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"not a history file: {exc}") from exc


_NONE: Mapping[str, float] = MappingProxyType({})
History.EMPTY = History(None, 0, {}, {}, {}, [])


def key(name: str) -> str:
    """The key of index ``name``'s history among the files beside its database."""
    return f"history/{name}.json"


def save(blobs: Blobs, name: str, history: History, root: str) -> None:
    """Store ``history`` of index ``name`` whole (a reader sees the old one or this)."""
    blobs.write(key(name), history.dumps(root))


def load(blobs: Blobs, name: str, *, root: str, head: str | None) -> History | None:
    """The history stored for index ``name`` if it was read at ``head`` (any, if None)
    of ``root``; None if absent or of another HEAD or root; ``ValueError`` if unreadable."""
    try:
        data = blobs.read(key(name))
    except OSError as exc:
        raise ValueError(f"cannot read {blobs.where(key(name))}: {exc}") from exc
    if data is None:
        return None
    got_root, history = History.loads(data)
    if got_root != root or (head is not None and history.head != head):
        return None
    return history


# -- reading git --------------------------------------------------------------


def read_history(
    root: Path, *, max_commits: int = MAX_COMMITS, max_seconds: float = MAX_SECONDS
) -> History:
    """The history of the last ``max_commits`` first-parent commits of ``root``'s HEAD.

    Never raises for a missing or odd git: returns ``History.EMPTY`` and logs
    why. The git read stops after ``max_seconds`` (or ``MAX_BYTES`` of
    patches) and the history holds the commits read in full (``capped``).
    In a shallow clone the boundary commits (whose parents are missing) are
    left out.
    """
    t0 = time.perf_counter()
    try:
        info = _git(root, "rev-parse", "--is-inside-work-tree", "--show-prefix",
                    "--is-shallow-repository", "--git-path", "shallow")  # fmt: skip
        lines = info.decode("utf-8", "surrogateescape").split("\n")
        if lines[0] != "true":
            log.info("no git history: not a work tree", extra={"root": str(root)})
            return History.EMPTY
        prefix, shallow = lines[1], lines[2] == "true"
        head_line = _git(root, "log", "-1", "--format=%H %ct", "HEAD").decode("ascii").split()
    except _GitFailed as exc:
        log.info("no git history", extra={"root": str(root), "why": str(exc)})
        return History.EMPTY
    if len(head_line) != 2:
        return History.EMPTY
    head, head_time = head_line[0], int(head_line[1])
    boundary: set[bytes] = set()
    if shallow:
        path = Path(lines[3]) if Path(lines[3]).is_absolute() else root / lines[3]
        with contextlib.suppress(OSError):  # no such file: no boundary
            boundary = set(path.read_bytes().split())
    args = [
        "-c", "core.quotepath=off", "log", "--first-parent", "--diff-merges=first-parent",
        "--root", "-p", "-U0", "--no-renames", "--no-color", "--no-ext-diff", "--no-textconv",
        "--no-show-signature", "--src-prefix=a/", "--dst-prefix=b/",
        "--format=%x1e%H %ct", f"-n{max(0, max_commits)}", "HEAD",
    ]  # fmt: skip
    if prefix:
        args += ["--relative", "--", "."]
    try:
        out, capped = _stream(root, args, max_seconds)
    except _GitFailed as exc:
        log.warning("git history not read", extra={"root": str(root), "why": str(exc)})
        return History.EMPTY
    commits = [c for c in _parse(out) if c[0] not in boundary]
    history = _build(head, head_time, commits, capped)
    log.info(
        "git history read",
        extra={
            "root": str(root), "commits": history.commits, "capped": capped,
            "bytes": len(out), "seconds": round(time.perf_counter() - t0, 3),
        },
    )  # fmt: skip
    if capped:
        log.warning(
            "git history capped: fewer commits read than asked",
            extra={"root": str(root), "commits": history.commits, "asked": max_commits,
                   "max_seconds": max_seconds},
        )  # fmt: skip
    return history


class _GitFailed(Exception):
    pass


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION_ENV}


def _git(root: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], env=_env(), capture_output=True,
            stdin=subprocess.DEVNULL, timeout=30, check=False,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise _GitFailed("git is not installed") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _GitFailed(f"git {args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise _GitFailed(done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}")
    return done.stdout


def _stream(root: Path, args: list[str], max_seconds: float) -> tuple[bytes, bool]:
    """git's output, cut at the last whole commit when it runs past ``max_seconds``
    or ``MAX_BYTES``; and whether it was cut."""
    try:
        proc = subprocess.Popen(
            ["git", "-C", str(root), *args], env=_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise _GitFailed(f"git log failed: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + max_seconds
    timer = threading.Timer(max(0.0, max_seconds), proc.kill)
    timer.start()
    parts: list[bytes] = []
    size, cut = 0, False
    try:
        while chunk := os.read(proc.stdout.fileno(), 1 << 20):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES or time.monotonic() > deadline:
                cut = True
                proc.kill()
                break
        err = proc.stderr.read()
        code = proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.stderr.close()
    cut = cut or code == -9
    out = b"".join(parts)
    if cut:
        # The commit being written when git stopped may be partial.
        last = out.rfind(b"\n" + _MARK)
        out = out[: last + 1] if last >= 0 else b""
    elif code != 0:
        raise _GitFailed(err.decode(errors="replace").strip() or f"git log exited {code}")
    return out, cut


_Hunk = tuple[int, int, int, int]  # old start, old count, new start, new count
_Commit = tuple[bytes, int, dict[str, tuple[list[_Hunk], bool]]]  # sha, time, path -> hunks, gone


def _parse(out: bytes) -> list[_Commit]:
    """The commits of ``git log -p -U0`` output, newest first."""
    commits: list[_Commit] = []
    changes: dict[str, tuple[list[_Hunk], bool]] = {}
    hunks: list[_Hunk] = []
    path: str | None = None
    old: str | None = None
    header = False  # between "diff --git" and the first hunk: "---"/"+++" are names
    for m in _LINE.finditer(out):
        if m["sha"] is not None:
            changes = {}
            commits.append((m["sha"], int(m["ct"]), changes))
            header = False
        elif m["diff"] is not None:
            path, old, header, hunks = _header_path(m["diff"]), None, True, []
            if path is not None and commits:
                changes[path] = (hunks, False)
        elif m["a"] is not None:
            header = False
            b, d = m["b"], m["d"]
            hunks.append((int(m["a"]), 1 if b is None else int(b),
                          int(m["c"]), 1 if d is None else int(d)))  # fmt: skip
        elif header and commits:
            name = m["name"]
            if m["side"] == b"---":
                old = None if name == b"/dev/null" else _unquote(name, b"a/")
            elif name == b"/dev/null":  # deleted
                if old is not None:
                    changes.pop(path or "", None)
                    path = old
                    changes[path] = (hunks, True)
            else:
                new = _unquote(name, b"b/")
                if new is not None and new != path:
                    changes.pop(path or "", None)
                    path = new
                    changes[path] = (hunks, False)
    return commits


def _header_path(rest: bytes) -> str | None:
    """The path of ``diff --git a/P b/P`` (renames are off: both sides are one path)."""
    if rest.startswith(b'"'):
        half = (len(rest) - 1) // 2
        return _unquote(rest[:half], b"a/")
    n = (len(rest) - 5) // 2
    return _unquote(rest[: n + 2], b"a/") if n > 0 else None


def _unquote(name: bytes, side: bytes) -> str | None:
    if name.startswith(b'"') and name.endswith(b'"') and len(name) > 1:
        name = _ESCAPE.sub(_unescape, name[1:-1])
    if not name.startswith(side):
        return None
    return os.fsdecode(name[len(side) :])


def _unescape(m: re.Match[bytes]) -> bytes:
    s = m[1]
    if len(s) == 3:
        return bytes([int(s, 8) & 0xFF])
    return bytes([_ESCAPES[s]]) if s in _ESCAPES else s


# A line map: piecewise offsets from one version's line numbers to HEAD's, as
# starts (ascending, the first 1) and offsets (None: lines rewritten since).
_Map = tuple[list[int], list[int | None]]


def _build(head: str, head_time: int, commits: Sequence[_Commit], capped: bool) -> History:
    touched: Counter[str] = Counter()
    last: dict[str, int] = {}
    small: Counter[str] = Counter()
    pairs: dict[str, Counter[str]] = defaultdict(Counter)
    runs: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    maps: dict[str, _Map] = {}
    ages = [max(0.0, (head_time - ct) / _DAY) for _, ct, _ in commits]
    for k, (_, ct, changes) in enumerate(commits):
        for path, (hunks, gone) in changes.items():
            touched[path] += 1
            last.setdefault(path, ct)
            lmap = maps.get(path, ([1], [0]))
            if not gone:
                for _, _, c, d in hunks:
                    # A deletion marks the lines either side of it.
                    lo, hi = (c, c + d - 1) if d else (max(1, c), c + 1)
                    for s, e in _through(lmap, lo, hi):
                        runs[path].append((s, e, k))
            if hunks:
                maps[path] = _compose(lmap, hunks)
        if len(changes) <= COCHANGE_FILES:
            for p in changes:
                small[p] += 1
                pairs[p].update(q for q in changes if q != p)
    files = {p: FileHistory(n, max(0.0, (head_time - last[p]) / _DAY)) for p, n in touched.items()}
    cochanged: dict[str, Mapping[str, float]] = {}
    for p, counts in pairs.items():
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:COCHANGE_TOP]
        if top:
            cochanged[p] = MappingProxyType({q: n / small[p] for q, n in top})
    for rs in runs.values():
        rs.sort()
    return History(head, len(commits), files, cochanged, dict(runs), ages, capped=capped)


def _through(lmap: _Map, lo: int, hi: int) -> list[tuple[int, int]]:
    """Lines ``lo..hi`` of a version, in HEAD's line numbers (dead lines left out)."""
    starts, offs = lmap
    out: list[tuple[int, int]] = []
    i = bisect.bisect_right(starts, lo) - 1
    while i < len(starts) and starts[i] <= hi:
        end = starts[i + 1] - 1 if i + 1 < len(starts) else _INF
        o = offs[i]
        if o is not None:
            s, e = max(lo, starts[i]), min(hi, end)
            if s <= e:
                out.append((s + o, e + o))
        i += 1
    return out


def _compose(lmap: _Map, hunks: Sequence[_Hunk]) -> _Map:
    """The map of the version before a commit: its lines through the commit's hunks
    (outside them shifted, inside them dead), then through ``lmap``."""
    pieces: list[tuple[int, int, int | None]] = []  # old lines s..e -> new lines + offset
    pos, shift = 1, 0
    for a, b, _, d in hunks:
        if b == 0:  # lines inserted after old line a
            pieces.append((pos, a, shift))
            pos, shift = a + 1, shift + d
        else:
            pieces.append((pos, a - 1, shift))
            pieces.append((a, a + b - 1, None))
            pos, shift = a + b, shift + d - b
    pieces.append((pos, _INF, shift))
    starts, offs = lmap
    new_starts: list[int] = []
    new_offs: list[int | None] = []

    def put(s: int, o: int | None) -> None:
        # Pieces come in order and never start twice: equal neighbours merge.
        if not new_offs or new_offs[-1] != o:
            new_starts.append(s)
            new_offs.append(o)

    for s, e, o in pieces:
        if s > e:
            continue
        if o is None:
            put(s, None)
            continue
        i = bisect.bisect_right(starts, s + o) - 1
        while i < len(starts) and starts[i] <= e + o:
            seg = max(s + o, starts[i]) - o
            mo = offs[i]
            put(seg, None if mo is None else o + mo)
            i += 1
    return new_starts, new_offs
