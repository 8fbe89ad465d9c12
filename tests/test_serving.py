"""The plan the worker processes of ``serve --workers N`` are built from, and their failures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ctxsvc.cli import serving
from ctxsvc.settings import Settings


def test_the_plan_travels_in_a_private_file_not_in_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"CTXSVC_TOKEN": "s3cret", "CTXSVC_STATE_URL": "postgresql://u:pw@db/x"},
        home=tmp_path / "home",
    )
    plan = serving.plan_for(settings, ["ctx.example"], None)
    with serving.exported(plan, settings.home) as path:
        assert os.environ[serving.PLAN_ENV] == str(path)
        assert "s3cret" not in os.environ[serving.PLAN_ENV]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = json.loads(path.read_text())
        assert data["settings"]["token"] == "s3cret" and data["hosts"] == ["ctx.example"]
        # A worker rebuilds the same settings from it.
        assert Settings(**data["settings"]) == settings
    assert not path.exists() and serving.PLAN_ENV not in os.environ


@pytest.mark.parametrize("plan", [None, "not json", '{"settings": {"home": "/x", "workers": 0}}'])
def test_a_worker_that_cannot_build_its_app_exits_as_a_startup_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str | None
) -> None:
    if plan is None:
        monkeypatch.delenv(serving.PLAN_ENV, raising=False)
    else:
        (tmp_path / "plan.json").write_text(plan)
        monkeypatch.setenv(serving.PLAN_ENV, str(tmp_path / "plan.json"))
    with pytest.raises(SystemExit) as exited:
        serving.worker_app()
    assert exited.value.code == serving.STARTUP_FAILURE  # uvicorn's supervisor then stops
