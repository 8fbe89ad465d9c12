"""A registered root replaced by a link to another directory (say ``/etc``) is not read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import cli_env, run_cli, write_tree

from ctxsvc.errors import RootChanged
from ctxsvc.service import ContextService

PROJECT = {
    "app.py": "def serve(port):\n    return port + 1\n\n\ndef stop():\n    return None\n",
    "util.py": "def helper(x):\n    return x * 2\n",
}
# Stands in for /etc: names and text that must never reach an answer.
ELSEWHERE = {"passwd": "root:x:0:0:root:/root:/bin/sh\n", "hosts.py": "SECRET = 'elsewhere'\n"}


@pytest.fixture
def swapped(service: ContextService, tmp_path: Path) -> tuple[ContextService, Path]:
    """``proj`` indexed, then moved away and replaced by a link to ``elsewhere``."""
    root = tmp_path / "proj"
    write_tree(root, PROJECT)
    service.index(root, "proj")
    elsewhere = tmp_path / "elsewhere"
    write_tree(elsewhere, ELSEWHERE)
    root.rename(tmp_path / "proj-moved")
    root.symlink_to(elsewhere, target_is_directory=True)
    return service, root


def test_status_and_answers_list_nothing_under_a_replaced_root(
    swapped: tuple[ContextService, Path],
) -> None:
    service, _ = swapped
    status = service.status("proj")
    assert (status.changed, status.added, status.deleted) == ((), (), ())
    assert any("root changed" in d and "--rebuild" in d for d in status.degraded), status.degraded
    pack = service.context("proj", "serve port helper", 2000)
    text = "\n".join(i.text for i in pack.items) + "\n".join(pack.degraded)
    assert "serve" in text  # answered from the index as it was
    # The link's target is named; nothing under it is.
    assert "passwd" not in text and "hosts.py" not in text and "SECRET" not in text
    assert any("root changed" in d for d in pack.degraded)


def test_an_index_run_over_a_replaced_root_is_refused(
    swapped: tuple[ContextService, Path],
) -> None:
    service, root = swapped
    with pytest.raises(RootChanged, match="not the directory that was indexed"):
        service.index(root, "proj")
    # A refresh finds nothing to re-index under it: the answer says why.
    pack = service.context("proj", "serve", 2000, refresh=True)
    assert any("root changed" in d for d in pack.degraded)
    # The index still holds the project, not a byte of the other directory.
    view = service.view(service.resolve("proj"))
    assert sorted(view.files) == ["app.py", "util.py"]


def test_rebuild_re_points_a_replaced_root_on_purpose(
    swapped: tuple[ContextService, Path],
) -> None:
    service, root = swapped
    service.index(root, "proj", rebuild=True)
    view = service.view(service.resolve("proj"))
    assert "hosts.py" in view.files


def test_the_cli_names_a_replaced_root_without_a_traceback(
    swapped: tuple[ContextService, Path],
) -> None:
    service, root = swapped
    done = run_cli(cli_env(service.settings.home), "index", str(root), "--name", "proj",
                   "--no-vectors", timeout=300)  # fmt: skip
    assert done.returncode == RootChanged.exit_code, done.stderr
    assert "not the directory that was indexed" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_rebuild_by_name_does_not_follow_a_replaced_root(
    swapped: tuple[ContextService, Path],
) -> None:
    service, _ = swapped
    with pytest.raises(RootChanged, match="now a link"):
        service.index("proj", rebuild=True)  # what the damage hint says to run
    assert sorted(service.view(service.resolve("proj")).files) == ["app.py", "util.py"]


def test_a_row_without_the_identity_still_refuses_a_link(
    swapped: tuple[ContextService, Path],
) -> None:
    service, _ = swapped
    meta = service.resolve("proj")
    old = replace(meta, root_identity=[])  # as written before identities were recorded
    fresh = service.catalog.freshness(old, full=True)
    assert fresh.all == () and any("root changed" in d for d in fresh.degraded)
