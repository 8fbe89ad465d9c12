"""deploy/: the compose file names real settings, with values ctxsvc accepts.

No container runs here (no Docker on the test machines): this checks what can drift
silently, that every ``CTXSVC_*`` variable of the compose file is a setting, that each
service's environment (defaults filled in) makes valid settings, and that the roles
are as the notes say (the replicas read-only, one indexer that writes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ctxsvc.settings import PREFIX, Settings

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DEFAULT = re.compile(r"\$\{(\w+)(?::[-?]([^}]*))?\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def environment(service: str) -> dict[str, str]:
    """The service's environment as compose would set it with no variable given: each
    ``${X:-default}`` its default, each required ``${X:?…}`` a stand-in."""
    env = compose()["services"][service]["environment"]
    out = {}
    for k, v in env.items():
        text = str(v)
        out[k] = DEFAULT.sub(lambda m: "given" if ":?" in m.group(0) else (m.group(2) or ""), text)
    return out


@pytest.mark.parametrize("service", ["indexer", "api"])
def test_each_ctxsvc_variable_of_the_compose_file_is_a_setting(service: str) -> None:
    env = environment(service)
    names = {k[len(PREFIX) :].lower() for k in env if k.startswith(PREFIX)}
    assert names, f"{service} sets no ctxsvc setting"
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)


@pytest.mark.parametrize("service", ["indexer", "api"])
def test_each_service_environment_makes_valid_settings(service: str, tmp_path: Path) -> None:
    env = {k: v for k, v in environment(service).items() if k.startswith(PREFIX)}
    settings = Settings.from_env({**env, "CTXSVC_HOME": str(tmp_path)})
    assert settings.index_uri.startswith("s3://")
    assert settings.state_url.startswith("postgresql://")
    assert settings.host == "0.0.0.0" and settings.token
    assert settings.read_only is (service == "api")


def test_the_replicas_share_the_index_state_and_repositories_of_the_indexer() -> None:
    indexer, api = environment("indexer"), environment("api")
    for k in ("CTXSVC_INDEX_URI", "CTXSVC_STATE_URL", "AWS_ENDPOINT_URL", "CTXSVC_TOKEN"):
        assert indexer[k] == api[k], k
    services = compose()["services"]
    mounts = [[DEFAULT.sub("", v).split(":")[1] for v in services[s]["volumes"] if "repos" in v]
              for s in ("indexer", "api")]  # fmt: skip
    assert mounts[0] == mounts[1] == ["/repos"]  # the same paths: jobs name them
    assert "replicas" in services["api"]["deploy"]
    assert "deploy" not in services["indexer"]  # one writer
