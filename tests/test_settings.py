"""Settings: types, the list forms, precedence, the config file, and every error a ConfigError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from ctxsvc.errors import ConfigError
from ctxsvc.settings import DEFAULT_MODEL, Settings, default_home


@pytest.fixture(autouse=True)
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``~`` and the default home point into tmp_path: no real config file can leak in."""
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path / "user"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> ConfigError:
    """The ConfigError that ``Settings.from_env(*args, **kwargs)`` raises."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(*args, **kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == 2
    return caught.value


# --- defaults and types -------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({}, home=tmp_path)
    assert s.home == tmp_path
    assert s.model == DEFAULT_MODEL
    assert (s.port, s.embed_timeout, s.embed_quantize) == (8765, 120.0, True)
    assert s.allowed_roots == [] and s.cors_origins == []
    assert s.db_path == tmp_path / "lance"
    assert s.locks_path == tmp_path / "locks"
    assert s.state_path == tmp_path / "state.sqlite"


def test_home_defaults_from_the_mapping_in_use(tmp_path: Path) -> None:
    assert Settings.from_env({"XDG_DATA_HOME": str(tmp_path)}).home == tmp_path / "ctxsvc"
    assert default_home({}) == tmp_path / "user" / ".local" / "share" / "ctxsvc"
    assert Settings.from_env({}).home == default_home({})


def test_int(tmp_path: Path) -> None:
    s = Settings.from_env({"CTXSVC_PORT": "9000", "CTXSVC_MAX_FILE_BYTES": "10"}, home=tmp_path)
    assert s.port == 9000 and type(s.port) is int
    assert s.max_file_bytes == 10


def test_float_is_parsed(tmp_path: Path) -> None:
    s = Settings.from_env({"CTXSVC_EMBED_TIMEOUT": "30"}, home=tmp_path)
    assert s.embed_timeout == 30.0 and type(s.embed_timeout) is float
    s = Settings.from_env({"CTXSVC_QUERY_EMBED_TIMEOUT": "0.5"}, home=tmp_path)
    assert s.query_embed_timeout == 0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True),
     ("0", False), ("false", False), ("No", False), ("off", False)],
)  # fmt: skip
def test_bool(tmp_path: Path, raw: str, expected: bool) -> None:
    assert (
        Settings.from_env({"CTXSVC_EMBED_QUANTIZE": raw}, home=tmp_path).embed_quantize is expected
    )


def test_path_is_expanded() -> None:
    s = Settings.from_env({"CTXSVC_HOME": "~/ctx-home"})
    assert s.home == Path.home() / "ctx-home"
    assert Settings.from_env({}, home="~/elsewhere").home == Path.home() / "elsewhere"


def test_allowed_roots_separated_or_json(tmp_path: Path) -> None:
    raw = os.pathsep.join(["~/src", "", str(tmp_path)])
    s = Settings.from_env({"CTXSVC_ALLOWED_ROOTS": raw}, home=tmp_path)
    assert s.allowed_roots == [Path.home() / "src", tmp_path]
    s = Settings.from_env({"CTXSVC_ALLOWED_ROOTS": '["~/a", "/srv/repos"]'}, home=tmp_path)
    assert s.allowed_roots == [Path.home() / "a", Path("/srv/repos")]


def test_cors_origins_comma_separated_or_json(tmp_path: Path) -> None:
    env = {"CTXSVC_CORS_ORIGINS": "http://a.test, http://b.test,"}
    assert Settings.from_env(env, home=tmp_path).cors_origins == ["http://a.test", "http://b.test"]
    env = {"CTXSVC_CORS_ORIGINS": '["http://c.test"]'}
    assert Settings.from_env(env, home=tmp_path).cors_origins == ["http://c.test"]


def test_empty_string_is_an_empty_list(tmp_path: Path) -> None:
    s = Settings.from_env({}, home=tmp_path, allowed_roots="", cors_origins="")
    assert s.allowed_roots == [] and s.cors_origins == []
    write(tmp_path / "ctxsvc.toml", 'cors_origins = ""\n')
    assert Settings.from_env({}, home=tmp_path).cors_origins == []


def test_empty_and_unknown_variables_are_ignored(tmp_path: Path) -> None:
    env = {"CTXSVC_PORT": "", "CTXSVC_NO_SUCH_THING": "x", "CTXSVC_EMBED_TIMEOUT": ""}
    s = Settings.from_env(env, home=tmp_path)
    assert (s.port, s.embed_timeout) == (8765, 120.0)


def test_a_given_mapping_replaces_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTXSVC_PORT", "9100")
    monkeypatch.setenv("CTXSVC_HOME", str(tmp_path / "from-environ"))
    assert Settings.from_env({}, home=tmp_path).port == 8765
    s = Settings.from_env()
    assert (s.port, s.home) == (9100, tmp_path / "from-environ")


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    s = Settings.from_env({"CTXSVC_PORT": "9000"}, home=tmp_path, port=None, model=None)
    assert (s.port, s.model) == (9000, DEFAULT_MODEL)


def test_frozen_and_secrets_kept_out_of_repr(tmp_path: Path) -> None:
    env = {"CTXSVC_TOKEN": "tok-hush-1", "CTXSVC_SUMMARIZER_API_KEY": "sk-hush-2"}
    s = Settings.from_env(env, home=tmp_path)
    assert (s.token, s.summarizer_api_key) == ("tok-hush-1", "sk-hush-2")  # plain str
    assert "hush" not in repr(s) and "hush" not in str(s)
    with pytest.raises(ValidationError):
        s.port = 1


# --- precedence and the config file -------------------------------------------------------


def test_precedence_override_env_toml_default(tmp_path: Path) -> None:
    write(tmp_path / "ctxsvc.toml", "embed_timeout = 10.0\nport = 1111\nhost = '0.0.0.0'\n")
    env = {"CTXSVC_EMBED_TIMEOUT": "20", "CTXSVC_PORT": "2222"}
    s = Settings.from_env(env, home=tmp_path, embed_timeout=30.0)
    assert s.embed_timeout == 30.0  # override > env
    assert s.port == 2222  # env > toml
    assert s.host == "0.0.0.0"  # toml > default
    assert s.model == DEFAULT_MODEL  # default


def test_config_found_in_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / "ctxsvc.toml", 'allowed_roots = ["/srv/repos", "~/src"]\nembed_quantize = false\n')
    for s in (Settings.from_env({}, home=home), Settings.from_env({"CTXSVC_HOME": str(home)})):
        assert s.allowed_roots == [Path("/srv/repos"), Path.home() / "src"]
        assert s.embed_quantize is False


def test_config_found_in_default_home(tmp_path: Path) -> None:
    write(tmp_path / "ctxsvc" / "ctxsvc.toml", "port = 4321\n")
    s = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert (s.home, s.port) == (tmp_path / "ctxsvc", 4321)


def test_config_named_by_variable_or_argument(tmp_path: Path) -> None:
    by_var = write(tmp_path / "a.toml", "port = 1001\n")
    by_arg = write(tmp_path / "b.toml", "port = 1002\n")
    write(tmp_path / "home" / "ctxsvc.toml", "port = 1003\n")
    home = tmp_path / "home"
    assert Settings.from_env({"CTXSVC_CONFIG": str(by_var)}, home=home).port == 1001
    assert Settings.from_env({"CTXSVC_CONFIG": str(by_var)}, home=home, config=by_arg).port == 1002
    assert Settings.from_env({}, home=home).port == 1003


def test_config_may_set_home(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", f"home = {str(tmp_path / 'data')!r}\n")
    assert Settings.from_env({}, config=cfg).home == tmp_path / "data"
    assert Settings.from_env({}, config=cfg, home=tmp_path / "x").home == tmp_path / "x"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    err = config_error({}, home=tmp_path, config=missing)
    assert str(missing) in err.message and "does not exist" in err.message
    err = config_error({"CTXSVC_CONFIG": str(missing)}, home=tmp_path)
    assert "CTXSVC_CONFIG" in err.message and str(missing) in err.message


@pytest.mark.parametrize("named", [True, False])
def test_invalid_toml_is_an_error(tmp_path: Path, named: bool) -> None:
    bad = write(tmp_path / "ctxsvc.toml", "port = = 1\n")
    err = config_error({}, home=tmp_path, config=bad if named else None)
    assert str(bad) in err.message and "not valid TOML" in err.message


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", "port = 1\nembed_timeuot = 3.0\n")
    err = config_error({}, home=tmp_path, config=cfg)
    assert "'embed_timeuot'" in err.message and str(cfg) in err.message
    assert "embed_timeout" in err.hint  # the known keys


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    assert "'no_such_setting'" in config_error({}, home=tmp_path, no_such_setting=1).message


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw", "kind"),
    [
        ("CTXSVC_EMBED_TIMEOUT", "soon", "is not a valid number"),
        ("CTXSVC_PORT", "eighty", "is not a valid integer"),
        ("CTXSVC_MAX_FILE_BYTES", "1.5", "is not a valid integer"),
        ("CTXSVC_EMBED_QUANTIZE", "maybe", "is not a valid boolean"),
        ("CTXSVC_ALLOWED_ROOTS", '["/a"', "is not a valid list of paths"),
        ("CTXSVC_CORS_ORIGINS", "[1, 2]", "is not a valid list"),
    ],
)
def test_bad_variable_names_variable_and_value(
    tmp_path: Path, var: str, raw: str, kind: str
) -> None:
    err = config_error({var: raw}, home=tmp_path)
    assert err.message.startswith(f"{var}={raw!r} {kind}")
    assert "unset" in err.hint
    assert err.to_dict()["code"] == "bad_config"


def test_bad_variable_message_matches_the_example(tmp_path: Path) -> None:
    err = config_error({"CTXSVC_EMBED_TIMEOUT": "soon"}, home=tmp_path)
    assert err.message == "CTXSVC_EMBED_TIMEOUT='soon' is not a valid number"
    assert err.hint == "fix or unset the variable"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("embed_timeout = 'soon'", "is not a valid number"),
        ("port = 1.5", "is not a valid integer"),
        ("embed_quantize = 'maybe'", "is not a valid boolean"),
        ("home = 5", "is not a valid path"),
        ("allowed_roots = 5", "is not a valid list of paths"),
        ("cors_origins = [1]", "is not a valid list"),
        ("host = 1", "is not a valid string"),
    ],
)
def test_bad_toml_value_names_key_and_file(tmp_path: Path, line: str, kind: str) -> None:
    cfg = write(tmp_path / "c.toml", line + "\n")
    err = config_error({"XDG_DATA_HOME": str(tmp_path)}, config=cfg)
    key = line.split(" =")[0]
    assert err.message.startswith(f"{key} = ") and f"in {cfg} {kind}" in err.message
    assert "fix or remove" in err.hint


def test_bad_override_is_a_config_error(tmp_path: Path) -> None:
    err = config_error({}, home=tmp_path, port="eighty")
    assert err.message == "port='eighty' is not a valid integer"


def test_the_winning_source_is_the_one_named(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", "port = 'from-file'\n")
    err = config_error({"CTXSVC_PORT": "from-env"}, home=tmp_path, config=cfg)
    assert err.message.startswith("CTXSVC_PORT='from-env'")
    assert Settings.from_env({}, home=tmp_path, config=cfg, port=1).port == 1


# --- cross-field checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CTXSVC_CHUNK_TARGET_TOKENS": "600"}, "chunk sizes must satisfy"),
        ({"CTXSVC_CHUNK_TARGET_TOKENS": "8"}, "chunk sizes must satisfy"),
        ({"CTXSVC_MAX_FILE_BYTES": "0"}, "CTXSVC_MAX_FILE_BYTES must be positive"),
        ({"CTXSVC_EMBED_BATCH_SIZE": "0"}, "batch size and sequence limit must be positive"),
        ({"CTXSVC_EMBED_MAX_SEQ_TOKENS": "-1"}, "batch size and sequence limit must be positive"),
    ],
)
def test_size_checks(tmp_path: Path, env: dict[str, str], message: str) -> None:
    assert message in config_error(env, home=tmp_path).message


def test_chunk_sizes_hint_and_valid_edges(tmp_path: Path) -> None:
    err = config_error({"CTXSVC_CHUNK_TARGET_TOKENS": "600"}, home=tmp_path)
    assert err.hint == "got target=600, max=512"
    env = {"CTXSVC_CHUNK_TARGET_TOKENS": "16", "CTXSVC_CHUNK_MAX_TOKENS": "16"}
    assert Settings.from_env(env, home=tmp_path).chunk_max_tokens == 16
    write(tmp_path / "ctxsvc.toml", "chunk_max_tokens = 100\n")
    assert "chunk sizes" in config_error({}, home=tmp_path).message  # from the file too


def test_the_cli_reads_the_config_file_and_names_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctxsvc.cli import main

    home = tmp_path / "home"
    for key in [k for k in os.environ if k.startswith("CTXSVC_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "ctxsvc.toml"
    config.write_text(f'home = "{home}"\nport = 9\n')
    assert main(["--config", str(config), "status"]) == 0
    assert "nothing is indexed yet" in capsys.readouterr().out
    assert not home.exists()  # a status of nothing opens (and creates) nothing
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("def a():\n    return 1\n")
    assert main(["--config", str(config), "index", str(code), "--no-vectors", "--json"]) == 0
    capsys.readouterr()
    assert (home / "lance").is_dir()  # the file's home was used

    config.write_text("embed_timeout = 'soon'\n")
    assert main(["--config", str(config), "status"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "embed_timeout" in err and str(config) in err

    monkeypatch.setenv("CTXSVC_EMBED_TIMEOUT", "soon")
    assert main(["--home", str(home), "status"]) == 2
    assert "CTXSVC_EMBED_TIMEOUT='soon'" in " ".join(capsys.readouterr().err.split())

    assert main(["--config", str(tmp_path / "missing.toml"), "status"]) == 2
    assert "missing.toml" in " ".join(capsys.readouterr().err.split())
