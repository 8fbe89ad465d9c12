"""Where the index database lives, and the small whole files kept beside it.

The database is a local directory (``<home>/lance``) or a prefix on an
S3-compatible object store (``CTXSVC_INDEX_URI=s3://bucket/prefix``). The
endpoint and credentials of the store come from the usual AWS variables,
which both LanceDB and Arrow read: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, and ``AWS_ALLOW_HTTP=true`` for a
plain-HTTP endpoint.

:class:`Blobs` holds the files an index keeps beside its tables (its git
history): files in a directory beside a local database, written by a
temporary file and a rename; objects under ``<prefix>/_sidecars/`` on a
store, where an upload is whole or absent. Either way a reader sees the old
file or the new one, never part of one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

REMOTE_SCHEMES = ("s3://",)
# How stale a reader's view of an object store may be: a poll costs a request (a LIST
# or a HEAD, tens of ms on S3), so remote stores are asked again at most this often.
REMOTE_POLL_SECONDS = 1.0


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store rather than a local directory."""
    return uri.startswith(REMOTE_SCHEMES)


def passing(why: str) -> bool:
    """Whether an object store's error (its message ``why``) is a passing one: a timeout,
    a 5xx, a dropped connection, an expired token. Only a missing object is what damage
    looks like on a store."""
    return "not found" not in why.lower()


class Blobs:
    """Whole small files under ``root``: a local directory, or an object-store prefix."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.remote = is_remote(root)
        self._fs: Any | None = None
        self._base = self.root
        self._stamps: dict[str, tuple[float, tuple[int, int, int] | None]] = {}

    @classmethod
    def beside(cls, db_uri: str) -> Blobs:
        """The files beside the database at ``db_uri`` (``<home>/…`` for ``<home>/lance``)."""
        if is_remote(db_uri):
            return cls(db_uri.rstrip("/") + "/_sidecars")
        return cls(str(Path(db_uri).parent))

    def where(self, key: str) -> str:
        """The path or URI of ``key`` (``history/tokio.json``), for messages."""
        return f"{self.root}/{key}"

    def read(self, key: str) -> bytes | None:
        """The bytes stored at ``key``, None when there are none; ``OSError`` if unreadable."""
        if not self.remote:
            try:
                return (Path(self.root) / key).read_bytes()
            except FileNotFoundError:
                return None
        fs, path = self._remote(key)
        from pyarrow import fs as pafs

        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            data: bytes = f.read()
            return data

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` whole: a reader sees the old bytes or these."""
        if self.remote:
            fs, key_path = self._remote(key)
            with fs.open_output_stream(key_path) as f:  # one upload: whole or absent
                f.write(data)
            self._stamps.pop(key, None)  # this process sees its own write at once
            return
        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def stamp(self, key: str) -> tuple[int, int, int] | None:
        """What changes when ``key`` is written again: (mtime_ns, size, inode) of a file;
        of an object, its (mtime_ns, size) read at most every :data:`REMOTE_POLL_SECONDS`
        (a request a HEAD call would cost). None when absent."""
        if not self.remote:
            try:
                st = os.stat(Path(self.root) / key)
            except FileNotFoundError:
                return None
            return st.st_mtime_ns, st.st_size, st.st_ino
        now = time.monotonic()
        cached = self._stamps.get(key)
        if cached is not None and now - cached[0] < REMOTE_POLL_SECONDS:
            return cached[1]
        fs, path = self._remote(key)
        from pyarrow import fs as pafs

        info = fs.get_file_info(path)
        got = (
            None if info.type == pafs.FileType.NotFound else (info.mtime_ns or 0, info.size or 0, 0)
        )
        self._stamps[key] = (now, got)
        return got

    def _remote(self, key: str) -> tuple[Any, str]:
        if self._fs is None:
            from pyarrow import fs as pafs

            self._fs, self._base = pafs.FileSystem.from_uri(self.root)
        return self._fs, f"{self._base}/{key}"
