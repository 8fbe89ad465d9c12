"""The index on object storage (``CTXSVC_INDEX_URI=s3://…``), against a real local
S3-compatible server (moto in server mode, started here as a process of its own).

One process writes the index, another with a data directory of its own reads
it; a reader follows the versions a writer commits; the git history travels
with the index; a shared index's jobs are claimable from any host.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, free_port, git, make_repo, run_cli, write_tree
from fakes import HashEmbedder

from ctxsvc.compose import build_service, job_scope
from ctxsvc.errors import ConfigError, ReadOnly, StoreError
from ctxsvc.service import ContextService
from ctxsvc.settings import Settings
from ctxsvc.stores.blobs import REMOTE_POLL_SECONDS
from ctxsvc.tokens import TiktokenCounter

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")
BUCKET = "ctxsvc-test"
FILES = {
    "pkg/retry.py": "def retry_with_backoff(call, attempts):\n"
    "    # try the call again, sleeping longer each time\n"
    "    return call()\n",
    "pkg/cache.py": "def evict_oldest(cache):\n    # drop the least recently used entry\n"
    "    cache.popitem(last=False)\n",
}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port with one bucket; the AWS_* variables for it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the moto S3 server did not start")
                time.sleep(0.1)
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def aws(s3: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The S3 server's variables in this process's environment (LanceDB and Arrow read them)."""
    for k, v in s3.items():
        monkeypatch.setenv(k, v)
    return s3


def keys(s3: dict[str, str], prefix: str) -> list[str]:
    client = boto3.client(
        "s3", endpoint_url=s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    got = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in got.get("Contents", [])]


def service(home: Path, uri: str, **settings: object) -> ContextService:
    config = Settings.from_env({}, home=home, index_uri=uri, **settings)
    return build_service(config, embedder=HashEmbedder(), tokens=TiktokenCounter("cl100k_base"))


def test_an_index_written_to_s3_by_one_process_is_read_by_another(
    tmp_path: Path, s3: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "demo", FILES)
    uri = f"s3://{BUCKET}/two-processes"
    writer = cli_env(tmp_path / "writer-home", CTXSVC_INDEX_URI=uri, **s3)
    done = run_cli(writer, "index", str(repo), "--no-vectors", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chunks"] >= 2
    # The tables and the git history are objects under the prefix; nothing on local disk.
    stored = keys(s3, "two-processes/")
    assert any(k.startswith("two-processes/repos.lance/") for k in stored)
    assert any(k.startswith("two-processes/demo__chunks.lance/_versions/") for k in stored)
    assert "two-processes/_sidecars/history/demo.json" in stored
    assert not (tmp_path / "writer-home" / "lance").exists()

    # Another process, another data directory, and no checkout of the repository: another
    # host, as far as it can tell. The answer comes from the index alone.
    repo.rename(tmp_path / "elsewhere")
    reader = cli_env(tmp_path / "reader-home", CTXSVC_INDEX_URI=uri, **s3)
    got = run_cli(reader, "query", "demo", "retry the call with backoff", "--budget", "300",
                  "--no-vectors", "--json")  # fmt: skip
    assert got.returncode == 0, got.stderr
    answer = json.loads(got.stdout)
    assert answer["items"][0]["path"] == "pkg/retry.py"
    assert FILES["pkg/retry.py"] in answer["items"][0]["text"]  # byte-exact, from the store
    assert any("no longer exists" in d for d in answer["degraded"])  # flagged, not hidden
    status = run_cli(reader, "status", "--json")
    assert [s["name"] for s in json.loads(status.stdout)] == ["demo"]


def test_a_reader_follows_the_versions_another_host_commits(
    tmp_path: Path, aws: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "demo", FILES)
    uri = f"s3://{BUCKET}/follow"
    writer, reader = service(tmp_path / "a", uri), service(tmp_path / "b", uri)
    writer.index(repo)
    first = reader.context("demo", "evict the oldest cache entry", 300)
    assert first.items[0].path == "pkg/cache.py"
    assert reader.catalog.view(reader.resolve("demo")).history.commits == 1

    write_tree(repo, {"pkg/queue.py": "def drain_queue(q):\n    # empty the work queue\n"
                                      "    while q:\n        q.pop()\n"})  # fmt: skip
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a queue")
    writer.index(repo)
    head = git(repo, "rev-parse", "HEAD").strip()
    got_meta = reader.store.meta("demo")  # a write path's read: the store asked, not the cache
    assert got_meta is not None and got_meta.commit == head
    deadline = time.monotonic() + 10 * REMOTE_POLL_SECONDS
    while True:  # the reader asks the store again at most every REMOTE_POLL_SECONDS
        got = reader.context("demo", "drain the work queue", 300)
        if got.items and got.items[0].path == "pkg/queue.py":
            break
        assert time.monotonic() < deadline, "the reader never saw the new version"
        time.sleep(0.2)
    view = reader.catalog.view(reader.resolve("demo"))
    assert view.meta.commit == head
    assert view.history.commits == 2  # the history object was rewritten and read again


def test_a_read_only_replica_answers_and_never_writes_the_index(
    tmp_path: Path, aws: dict[str, str]
) -> None:
    repo = make_repo(tmp_path / "demo", FILES)
    uri = f"s3://{BUCKET}/read-only"
    writer = service(tmp_path / "a", uri)
    writer.index(repo)
    replica = service(tmp_path / "b", uri, read_only=True)
    registry = len(keys(aws, "read-only/repos.lance/_versions/"))

    write_tree(repo, {"pkg/cache.py": "def evict_newest(cache):\n    cache.popitem()\n"})
    got = replica.context("demo", "evict an entry of the cache", 300, refresh=True)
    assert got.items  # answered from the index as committed
    assert any("read-only replica" in d for d in got.degraded)
    assert got.index is not None and "pkg/cache.py" in got.index.changed_since
    with pytest.raises(ReadOnly, match="read-only replica"):
        replica.index(repo)
    with pytest.raises(ReadOnly):
        replica.drop("demo")
    assert len(keys(aws, "read-only/repos.lance/_versions/")) == registry  # no commit
    assert replica.store.meta("demo") == writer.store.meta("demo")


def test_a_job_queued_through_a_replica_runs_on_the_indexer_host(
    tmp_path: Path, aws: dict[str, str], pg_url: str
) -> None:
    """Two hosts sharing the index and the state database: the replica only queues; the
    indexer claims the job, being of the same scope, and writes the index once."""
    repo = make_repo(tmp_path / "demo", FILES)
    uri = f"s3://{BUCKET}/jobs-across-hosts"
    replica = service(tmp_path / "b", uri, read_only=True, state_url=pg_url)
    indexer = service(tmp_path / "a", uri, state_url=pg_url)
    try:
        job, new = replica.submit_job("index", "demo", str(repo), {"vectors": True})
        again, second = replica.submit_job("index", "demo", str(repo), {"vectors": True})
        assert new and not second and again.id == job.id  # one active job per index
        time.sleep(1.0)
        assert replica.job(job.id)["state"] == "queued"  # the replica runs none
        indexer.start_jobs()
        deadline = time.monotonic() + 60
        while (state := replica.job(job.id)["state"]) not in ("done", "failed"):
            assert time.monotonic() < deadline, "the indexer never ran the job"
            time.sleep(0.2)
        assert state == "done", replica.job(job.id)
        assert replica.job(job.id)["worker"].startswith(socket.gethostname())
        time.sleep(REMOTE_POLL_SECONDS)
        assert replica.context("demo", "retry with backoff", 300).items[0].path == "pkg/retry.py"
    finally:
        indexer.stop_jobs()
        replica.stop_jobs()


def test_a_shared_index_scopes_its_jobs_by_the_index_not_the_host(tmp_path: Path) -> None:
    a = Settings.from_env({}, home=tmp_path / "a", index_uri=f"s3://{BUCKET}/jobs/")
    b = Settings.from_env({}, home=tmp_path / "b", index_uri=f"s3://{BUCKET}/jobs")
    local = Settings.from_env({}, home=tmp_path / "a")
    assert job_scope(a) == job_scope(b) == f"index:s3://{BUCKET}/jobs"
    assert job_scope(local) != job_scope(a)


def test_a_bad_index_uri_is_a_config_error(tmp_path: Path) -> None:
    bad_uris = ("/srv/indexes", "s3://", "s3://UPPER/x", "gs://bucket/x", "s3://b/x y",
                "s3://bucket/x?versionId=1", "s3://bucket//x")  # fmt: skip
    for bad in bad_uris:
        with pytest.raises(ConfigError, match="CTXSVC_INDEX_URI must be an s3://bucket/prefix"):
            Settings.from_env({}, home=tmp_path, index_uri=bad)


def test_a_store_that_cannot_be_reached_fails_at_once_and_says_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                 "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    t0 = time.monotonic()
    with pytest.raises(StoreError) as got:
        service(tmp_path / "home", f"s3://{BUCKET}/nowhere")
    assert got.value.retryable
    assert "cannot open the index database at s3://ctxsvc-test/nowhere" in got.value.message
    assert "AWS_ENDPOINT_URL" in (got.value.hint or "")
    assert time.monotonic() - t0 < 120
