"""Settings: file discovery, precedence, typed env vars, origins and every error."""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
import dagnb.cache
from dagnb import config
from dagnb.cli import main

# Each test starts in an empty project folder with no DAGNB_* variables (and, as every
# test does, in a fresh context: its settings load on first use).
pytestmark = pytest.mark.usefixtures("project")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


FULL = """
executor: local
container_registry: ghcr.io
container_credentials:
  username: me
  token_env: GHCR_TOKEN
workflow_directory: flows
max_concurrent_executions: 3
timeout_seconds: 10m
workflow_defaults:
  max_retries: 2
  retry_backoff_factor: 1.5
  retry_jitter: 0
  enable_retry: false
  caching_enabled: false
  cache_directory: cache
  cache_ttl_seconds: 1h
  cache_version: v2
"""


def test_defaults_without_a_file():
    current = config.reload()
    assert current.executor == "auto"
    assert current.cache_directory == ".dagnb_cache"
    assert set(config.origins().values()) == {"default"}
    assert config.find_config_file() is None


def test_every_key_of_dagnb_yaml(tmp_path):
    path = write(tmp_path / "dagnb.yaml", FULL)
    current = config.reload()
    assert current.executor == "local"
    assert current.max_concurrent_executions == 3
    assert current.timeout_seconds == 600
    assert current.max_retries == 2 and current.retry_backoff_factor == 1.5
    assert current.retry_jitter == 0 and current.enable_retry is False
    assert current.caching_enabled is False and current.cache_version == "v2"
    assert current.cache_ttl_seconds == 3600
    assert current.cache_directory == str(tmp_path / "cache")  # relative to the file
    assert current.workflow_directory == str(tmp_path / "flows")
    assert current.retry_defaults() == {"max_retries": 0, "backoff_factor": 1.5, "jitter": 0.0}
    assert config.origins()["max_retries"] == str(path)


def test_registry_auth_for_the_dagger_executor(tmp_path):
    write(tmp_path / "dagnb.yaml", FULL)
    assert config.reload().registry_auth() == {
        "address": "ghcr.io", "username": "me", "token_env": "GHCR_TOKEN"
    }
    from dagnb.executors.dagger.translate import RegistryAuth

    assert RegistryAuth.parse(config.settings().registry_auth()).secret_env == "GHCR_TOKEN"


def test_registry_auth_defaults_to_docker_hub_and_none_without_credentials():
    assert config.settings().registry_auth() is None
    dagnb.configure(container_credentials={"username": "u", "password_env": "PW"})
    assert config.settings().registry_auth()["address"] == "docker.io"


def test_found_in_a_parent_folder_but_not_beyond_git(tmp_path, monkeypatch):
    write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 5\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    assert config.reload().max_concurrent_executions == 5
    (tmp_path / "a" / ".git").mkdir()  # a nested repository ends the search first
    assert config.find_config_file() is None


def test_pyproject_tool_table(tmp_path):
    write(tmp_path / "pyproject.toml",
          '[project]\nname = "x"\n\n[tool.dagnb]\nmax_concurrent_executions = 6\n'
          '[tool.dagnb.workflow_defaults]\nmax_retries = 4\n')
    current = config.reload()
    assert (current.max_concurrent_executions, current.max_retries) == (6, 4)
    assert config.origins()["max_retries"].endswith("pyproject.toml [tool.dagnb]")


def test_pyproject_without_the_table_is_not_a_config(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert config.find_config_file() is None


def test_two_configs_in_one_folder_is_an_error(tmp_path):
    write(tmp_path / "dagnb.yaml", "executor: local\n")
    write(tmp_path / "pyproject.toml", "[tool.dagnb]\nexecutor = 'local'\n")
    with pytest.raises(dagnb.ConfigError, match="more than one dagnb config"):
        config.reload()


def test_dagnb_config_names_the_file_or_none(tmp_path, monkeypatch):
    write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 5\n")
    other = write(tmp_path / "other.yml", "max_concurrent_executions: 9\n")
    monkeypatch.setenv("DAGNB_CONFIG", str(other))
    assert config.reload().max_concurrent_executions == 9
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    assert config.reload().max_concurrent_executions != 5
    monkeypatch.setenv("DAGNB_CONFIG", str(tmp_path / "missing.yml"))
    with pytest.raises(dagnb.ConfigError, match=r"DAGNB_CONFIG names .*missing\.yml"):
        config.reload()


def test_precedence_default_file_env_argument(tmp_path, monkeypatch):
    path = write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 3\n"
                 "workflow_defaults: {max_retries: 1, retry_jitter: 0.5}\n")
    monkeypatch.setenv("DAGNB_MAX_CONCURRENT_EXECUTIONS", "8")
    monkeypatch.setenv("DAGNB_RETRY_JITTER", "0.25")
    config.reload()
    dagnb.configure(retry_jitter=0.0)
    current = config.settings()
    assert current.max_concurrent_executions == 8  # env over file
    assert current.max_retries == 1  # file over default
    assert current.retry_jitter == 0.0  # argument over env
    assert config.origins() | {} == {
        **dict.fromkeys(config.origins(), "default"),
        "max_concurrent_executions": "DAGNB_MAX_CONCURRENT_EXECUTIONS",
        "max_retries": str(path),
        "retry_jitter": "argument",
    }


@pytest.mark.parametrize(("name", "text", "field", "value"), [
    ("DAGNB_CACHING_ENABLED", "false", "caching_enabled", False),
    ("DAGNB_ENABLE_RETRY", "YES", "enable_retry", True),
    ("DAGNB_MAX_RETRIES", "3", "max_retries", 3),
    ("DAGNB_RETRY_BACKOFF_FACTOR", "2.5", "retry_backoff_factor", 2.5),
    ("DAGNB_TIMEOUT_SECONDS", "90", "timeout_seconds", 90.0),
    ("DAGNB_CACHE_TTL_SECONDS", "1d", "cache_ttl_seconds", 86400.0),
    ("DAGNB_CACHE_TTL_SECONDS", "none", "cache_ttl_seconds", None),
    ("DAGNB_EXECUTOR", "local", "executor", "local"),
    ("DAGNB_CACHE_VERSION", "7", "cache_version", "7"),
    ("DAGNB_CONTAINER_REGISTRY", "ghcr.io", "container_registry", "ghcr.io"),
])
def test_env_values_are_typed(monkeypatch, name, text, field, value):
    monkeypatch.setenv(name, text)
    assert getattr(config.reload(), field) == value
    assert config.origins()[field] == name


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("DAGNB_MAX_CONCURRENT_EXECUTIONS", "many", "a whole number >= 1"),
    ("DAGNB_MAX_CONCURRENT_EXECUTIONS", "0", "a whole number >= 1"),
    ("DAGNB_CACHING_ENABLED", "maybe", "true or false"),
    ("DAGNB_RETRY_JITTER", "-1", "a number >= 0"),
    ("DAGNB_TIMEOUT_SECONDS", "soon", "seconds or a duration"),
    ("DAGNB_EXECUTOR", "k8s", "'auto', 'local' or 'dagger'"),
])
def test_bad_env_values_name_the_variable(monkeypatch, name, text, expected):
    monkeypatch.setenv(name, text)
    with pytest.raises(dagnb.ConfigError, match=f"environment variable {name}: .*{text!r}.*"
                       f"expected {expected}"):
        config.reload()


def test_env_cache_directory_is_made_absolute_and_used_by_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "envcache")
    monkeypatch.setenv("DAGNB_CACHE_TTL_SECONDS", "60")
    current = config.reload()
    assert current.cache_directory == str(tmp_path / "envcache")
    assert dagnb.cache.default_location() == tmp_path / "envcache"
    assert dagnb.cache.store_for().location == tmp_path / "envcache"
    assert dagnb.cache.store_for().default_ttl == 60


def test_the_cache_reads_configure_when_used(tmp_path):
    dagnb.configure(cache_directory=tmp_path / "c", cache_ttl_seconds="2h")
    assert dagnb.cache.default_location() == tmp_path / "c"
    assert dagnb.cache.store_for().location == tmp_path / "c"
    assert dagnb.cache.store_for().default_ttl == 7200
    assert config.settings().cache_directory == str(tmp_path / "c")


def test_configure_changes_the_same_settings_object():
    held = dagnb.settings()
    dagnb.configure(max_retries=5)
    assert held.max_retries == 5 and dagnb.settings() is held


def test_reload_forgets_arguments():
    dagnb.configure(max_retries=5)
    assert config.reload().max_retries == 0


def test_runner_uses_the_configured_cache(tmp_path):
    dagnb.configure(cache_directory=tmp_path / "shared", executor="local")
    graph = dagnb.Graph("g")
    graph.add(dagnb.Step("hello", run="echo hi"))
    assert graph.run().ok
    assert list(dagnb.cache.entries()["step"]) == ["hello"]


@pytest.mark.parametrize(("text", "message"), [
    ("max_concurent_executions: 3\n",
     "unknown key 'max_concurent_executions'; did you mean 'max_concurrent_executions'"),
    ("workflow_defaults: {cache_dir: x}\n",
     "workflow_defaults: unknown key 'cache_dir'; did you mean 'cache_directory'"),
    ("max_retries: 3\n", "key 'max_retries' belongs under 'workflow_defaults'"),
    ("max_concurrent_executions: lots\n",
     "max_concurrent_executions = 'lots' is not valid; expected a whole number >= 1"),
    ("max_concurrent_executions: true\n", "expected a whole number >= 1"),
    ("timeout_seconds: -5\n", "timeout_seconds = -5 is not valid"),
    ("workflow_defaults: {caching_enabled: sometimes}\n", "expected true or false"),
    ("workflow_defaults: {retry_backoff_factor: [1]}\n", "expected a number >= 0"),
    ("workflow_defaults: []\n", "workflow_defaults is a list, not a mapping of settings"),
    ("workflow_directory: ''\n", "expected a non-empty string"),
    ("executor: docker\n", "expected 'auto', 'local' or 'dagger'"),
    ("container_credentials: {username: me, password: hunter2}\n",
     "container_credentials.password is refused because a plaintext secret"),
    ("container_credentials: {username: me, token: abc}\n", "give token_env: VARIABLE_NAME"),
    ("container_credentials: {username: me}\n",
     "expected a mapping with 'username' and one of 'password_env' or 'token_env'"),
    ("container_credentials: {username: me, password_env: A, token_env: B}\n",
     "one of 'password_env' or 'token_env'"),
    ("container_credentials: {user: me, password_env: A}\n",
     "unknown key 'user'; did you mean 'username'"),
    ("- a\n- b\n", "the config must be a mapping"),
    # (PyYAML's problem and a fix, as a workflow file's: "fix the syntax" named neither)
    ("a: [\n", r"line 2: YAML does not parse \(expected the node content, but found "
                r"'<stream end>'\); fix the syntax there$"),
    ("workflow_defaults:\n  max_retries: a: b\n",
     r"line 2: YAML does not parse \(mapping values are not allowed here\); a ': ' in a "
     r"plain value starts a mapping; quote the whole value$"),
    ("? [a, b]\n: 1\n", "YAML does not parse"),  # (a list as a key)
])
def test_file_errors_name_the_key_and_the_file(tmp_path, text, message):
    path = write(tmp_path / "dagnb.yaml", text)
    with pytest.raises(dagnb.ConfigError, match=message) as info:
        config.reload()
    assert str(path) in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("text", "line", "key"), [
    ("executor: local\nexecutor: dagger\n", 2, "executor"),
    ("workflow_defaults:\n  max_retries: 1\n  cache_version: a\n  max_retries: 5\n", 4,
     "max_retries"),
])
def test_a_key_given_twice_in_the_config_file_is_refused(tmp_path, text, line, key):
    path = write(tmp_path / "dagnb.yaml", text)
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    assert str(info.value) == f"{str(path)!r}, line {line}: key {key!r} is given twice; keep one"


def test_bad_toml_is_a_config_error(tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.dagnb\n")
    with pytest.raises(dagnb.ConfigError, match="is not valid TOML"):
        config.reload()


def test_configure_errors():
    with pytest.raises(dagnb.ConfigError, match="unknown key 'max_retrys'; did you mean"):
        dagnb.configure(max_retrys=1)
    with pytest.raises(dagnb.ConfigError, match="max_retries = -1 is not valid"):
        dagnb.configure(max_retries=-1)
    with pytest.raises(dagnb.ConfigError, match="plaintext secret"):
        dagnb.configure(container_credentials={"username": "u", "password": "p"})


def test_settings_load_lazily(tmp_path):
    with config.use_context() as fresh:
        write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 2\n")
        assert "settings" not in fresh.names()
        assert dagnb.settings().max_concurrent_executions == 2
        assert "settings" in fresh.names()


def test_a_fresh_context_has_its_own_settings_and_origins():
    held = dagnb.configure(max_retries=5)
    with config.use_context():
        assert dagnb.settings() is not held and dagnb.settings().max_retries == 0
        dagnb.configure(max_retries=2)
        assert config.origins()["max_retries"] == "argument"
    assert dagnb.settings() is held and held.max_retries == 5
    with config.use_context():
        assert config.origins()["max_retries"] == "default"


def test_cli_config_show_and_path(tmp_path, monkeypatch, capsys):
    path = write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 2\n")
    monkeypatch.setenv("DAGNB_MAX_RETRIES", "1")
    config.reload()
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["max_concurrent_executions"].endswith(str(path))
    assert lines["max_retries"].endswith("DAGNB_MAX_RETRIES")
    assert lines["executor"].split()[1:] == ["'auto'", "default"]
    assert main(["config", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(path)


def test_cli_bad_config_exits_2(tmp_path, capsys):
    write(tmp_path / "dagnb.yaml", "bogus: 1\n")
    assert main(["config", "show"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", ["ghp_SECRET123", ["ghp_SECRET123"], {"username": "ghp_SECRET123"}]
)
def test_bad_credentials_never_echo_the_value(tmp_path, value):
    with pytest.raises(dagnb.ConfigError, match="container_credentials is not valid") as caught:
        dagnb.configure(container_credentials=value)
    assert "SECRET123" not in str(caught.value)
    write(tmp_path / "dagnb.yaml", "container_credentials: ghp_SECRET123\n")
    with pytest.raises(dagnb.ConfigError, match="container_credentials is not valid") as caught:
        config.reload()
    assert "SECRET123" not in str(caught.value)


def test_the_table_names_a_file_by_where_it_is_from_here(tmp_path, monkeypatch):
    # a notebook cuts a long cell short: the file's name must not be what is cut
    write(tmp_path / "pyproject.toml", "[tool.dagnb]\nmax_concurrent_executions = 6\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "sub"))
    monkeypatch.chdir(tmp_path)
    config.reload()
    sources = config.show().set_index("key")["source"]
    assert sources["max_concurrent_executions"] == "pyproject.toml [tool.dagnb]"
    assert sources["executor"] == "default"
    assert config.origins()["max_concurrent_executions"].startswith(str(tmp_path))
    monkeypatch.chdir(tmp_path / "sub")  # the file one folder up, outside home: as found
    assert config.show().set_index("key")["source"]["max_concurrent_executions"] == (
        f"{tmp_path}/pyproject.toml [tool.dagnb]")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert config.show().set_index("key")["source"]["max_concurrent_executions"] == (
        "~/pyproject.toml [tool.dagnb]")


@pytest.mark.parametrize(("url", "shown"), [
    ("s3://AKIA:sec@bucket/p", "s3://***@bucket/p"),
    ("s3://AKIA:wJalr/K7MDENG@bucket/p", "s3://***@bucket/p"),  # ('/' in an AWS key)
    ("s3://user:p@ss@bucket/p", "s3://***@bucket/p"),  # (its tail never shown)
    ("gs://someone@bucket/x", "gs://***@bucket/x"),
    ("abfs://u:pw@account/x", "abfs://***@account/x"),
])
def test_a_store_url_with_credentials_is_refused_and_shown_without_them(url, shown):
    from dagnb import checks

    with pytest.raises(checks.Invalid) as refused:
        checks.location(url)
    secret = url.partition("://")[2].rpartition("@")[0]
    assert shown in str(refused.value) and secret not in str(refused.value)
    assert checks.redact_url(f"see {url} there") == f"see {shown} there"


@pytest.mark.parametrize("url", [
    "http://minio.internal:9000/team/@ml/cache",  # a port, then an @ in the path
    "http://host:8080/cache@v2", "s3://bucket/p@v2", "s3://bucket/a:b/c",
    "abfs://container@account.dfs.core.windows.net/x",  # Azure's container@account
])
def test_a_store_url_with_no_credentials_is_taken_as_it_is(url):
    from dagnb import checks

    assert checks.location(url) == url and checks.redact_url(url) == url


@pytest.mark.parametrize(("text", "key", "secret", "shown"), [
    ("dask_scheduler: tls://admin:hunter22pass@10.0.0.5:8786\n", "dask_scheduler",
     "hunter22pass", "'tls://***@10.0.0.5:8786'"),
    ("dask_scheduler: admin:hunter22pass@10.0.0.5:8786\n", "dask_scheduler",
     "hunter22pass", "'***@10.0.0.5:8786'"),
    ("container_registry: https://me:ghp_tok12345@ghcr.io\n", "container_registry",
     "ghp_tok12345", "'https://***@ghcr.io'"),
    ("container_registry: me:ghp_tok12345@ghcr.io\n", "container_registry",
     "ghp_tok12345", "'***@ghcr.io'"),
    ("workflow_defaults:\n  cache_storage_options:\n"
     "    endpoint_url: 'http://minio:minio-pass-123@minio:9000'\n",
     "cache_storage_options", "minio-pass-123", "'http://***@minio:9000'"),
    ("workflow_defaults:\n  cache_storage_options:\n"
     "    config_kwargs: {proxies: {https: 'http://u:proxy pass 9@proxy:3128'}}\n",
     "cache_storage_options", "proxy pass 9", "'http://***@proxy:3128'"),
    # an endpoint with no scheme: taken, printed, and quoted whole by botocore's error
    ("workflow_defaults:\n  cache_storage_options:\n"
     "    endpoint_url: 'minio:minio-pass-123@minio:9000'\n",
     "cache_storage_options", "minio-pass-123", "'***@minio:9000'"),
])
def test_a_setting_url_with_credentials_is_refused_in_one_line_shown_redacted(
        tmp_path, capsys, text, key, secret, shown):
    # config show printed them as they were: a URL's password in plain text
    write(tmp_path / "dagnb.yaml", text)
    assert main(["config", "show"]) == 2
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert f"{key} = " in captured.err and shown in captured.err
    assert "without user or password" in captured.err or "no user or password" in captured.err


@pytest.mark.parametrize(("key", "value"), [
    ("dask_scheduler", "tcp://admin:hunter22pass@10.0.0.5:8786"),
    ("container_registry", "me:ghp_tok12345@ghcr.io"),
    ("cache_storage_options", {"endpoint_url": "http://minio:minio-pass-123@minio:9000"}),
])
def test_configure_refuses_a_setting_url_with_credentials_without_showing_them(key, value):
    with pytest.raises(dagnb.ConfigError, match=rf"^dagnb\.configure\(\): {key} = .*\*\*\*@"
                       ) as refused:
        dagnb.configure(**{key: value})
    assert "pass-123" not in str(refused.value) and "tok12345" not in str(refused.value)
    assert "hunter22" not in str(refused.value)
    assert "pass-123" not in config.show().to_string()


def test_storage_options_holding_a_tuple_are_taken_as_they_are():
    # a tuple was compared with the list its URLs were redacted into: refused as holding
    # "a user or password in the 'client_cert' URL"
    options = {"config_kwargs": {"client_cert": ("/etc/s3/cert.pem", "/etc/s3/key.pem")}}
    dagnb.configure(cache_storage_options=options)
    assert config.settings().cache_storage_options == options


def test_a_setting_address_without_credentials_is_taken_as_it_is():
    dagnb.configure(dask_scheduler="tls://10.0.0.5:8786", container_registry="localhost:5000",
                    cache_storage_options={"endpoint_url": "http://minio:9000/a@b"})
    table = config.show().set_index("key")["value"]
    assert table["dask_scheduler"] == "tls://10.0.0.5:8786"
    assert table["container_registry"] == "localhost:5000"
    assert table["cache_storage_options"] == {"endpoint_url": "http://minio:9000/a@b"}


# -- values YAML (or a paste) gets wrong, and what a message may show ------------------
@pytest.mark.parametrize(("name", "text"), [
    ("dagnb.yaml", "workflow_directory: ~/flows\n"
                   "workflow_defaults: {cache_directory: ~/caches/dagnb, "
                   "cache_local_directory: ~/local}\n"),
    ("pyproject.toml", '[tool.dagnb]\nworkflow_directory = "~/flows"\n'
                       '[tool.dagnb.workflow_defaults]\ncache_directory = "~/caches/dagnb"\n'
                       'cache_local_directory = "~/local"\n'),
])
def test_a_tilde_in_a_config_file_path_is_the_home_folder(tmp_path, monkeypatch, name, text):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    write(tmp_path / name, text)
    current = config.reload()
    assert current.cache_directory == str(home / "caches" / "dagnb")  # not ./~/caches
    assert current.cache_local_directory == str(home / "local")
    assert current.workflow_directory == str(home / "flows")


def test_a_cache_version_yaml_reads_as_a_number_is_refused_with_the_quoted_form(tmp_path):
    path = write(tmp_path / "dagnb.yaml", "workflow_defaults: {cache_version: 1.10}\n")
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    message = str(info.value)
    assert message.startswith(f"{path}: cache_version = 1.1 is not valid; expected text")
    assert 'quote it: cache_version: "1.10"' in message and "\n" not in message
    with pytest.raises(dagnb.ConfigError, match=r"cache_version = 1\.1 is not valid"):
        dagnb.configure(cache_version=1.1)  # (%dagger config cache_version=1.10 is this)
    write(path, 'workflow_defaults: {cache_version: "1.10"}\n')
    assert config.reload().cache_version == "1.10"
    write(path, "workflow_defaults: {cache_version: 2}\n")  # (two numbers: two texts)
    assert config.reload().cache_version == "2"


SECRET = "dckr_pat_R3alT0ken-Value.abc"


@pytest.mark.parametrize("value", [SECRET, "ghp_abc/def", "my token", "1ABC"])
def test_a_token_given_as_token_env_is_refused_without_showing_it(tmp_path, value):
    with pytest.raises(dagnb.ConfigError, match="password_env looks like a token") as info:
        dagnb.configure(container_credentials={"username": "me", "password_env": value})
    assert value not in str(info.value)
    path = write(tmp_path / "dagnb.yaml",
                 f'container_credentials: {{username: me, token_env: "{value}"}}\n')
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    message = str(info.value)
    assert message.startswith(f"{path}: container_credentials.token_env looks like a token")
    assert value not in message and "token_env: VARIABLE_NAME" in message


def test_a_variable_name_in_token_env_is_accepted(tmp_path):
    write(tmp_path / "dagnb.yaml", "container_credentials: {username: me, token_env: _GHCR_2}\n")
    assert config.reload().container_credentials == {"username": "me", "token_env": "_GHCR_2"}


def test_a_credentials_field_of_the_wrong_type_is_named_and_not_shown(tmp_path):
    path = write(tmp_path / "dagnb.yaml",
                 "container_credentials: {username: 12345, token_env: T}\n")
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    assert str(info.value) == (f"{path}: container_credentials.username is a number, not "
                               'text; quote it (username: "...")')


def test_a_config_that_is_no_mapping_says_its_type_never_its_content(tmp_path, monkeypatch):
    env = write(tmp_path / ".env", "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\n"
                                   "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\n")
    monkeypatch.setenv("DAGNB_CONFIG", str(env))
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    assert str(info.value) == (f"{str(env)!r}: the config must be a mapping of keys (key: "
                               "value lines), got text; is this the right file?")
    bad = write(tmp_path / "bad.yaml", "workflow_defaults: s3://b  # TOKEN=ghp_abcdef123\n")
    monkeypatch.setenv("DAGNB_CONFIG", str(bad))
    with pytest.raises(dagnb.ConfigError, match="workflow_defaults is text, not a mapping") as info:
        config.reload()
    assert "ghp_abcdef123" not in str(info.value)


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_dagnb_config_is_unset_and_the_search_goes_on(tmp_path, monkeypatch, empty):
    path = write(tmp_path / "dagnb.yaml", "max_concurrent_executions: 5\n")
    monkeypatch.setenv("DAGNB_CONFIG", empty)  # (CI's `DAGNB_CONFIG: ${{ vars.X }}`, X unset)
    assert config.find_config_file() == path
    assert config.reload().max_concurrent_executions == 5


@pytest.mark.parametrize(("name", "meant"), [
    ("DAGNB_CACHE_DIR", "DAGNB_CACHE_DIRECTORY"),  # (named like --cache-dir)
    ("DAGNB_MAX_RETRY", "DAGNB_MAX_RETRIES"),
    ("DAGNB_CACHEMODE", "DAGNB_CACHE_MODE"),
    ("DAGNB_CONFIG_FILE", "DAGNB_CONFIG"),
    ("DAGNB_cache_mode", "DAGNB_CACHE_MODE"),  # (read in capitals only)
])
def test_a_dagnb_variable_that_is_no_setting_warns_once(monkeypatch, name, meant):
    monkeypatch.setenv(name, "x")
    with pytest.warns(UserWarning) as caught:
        config.reload()
        config.reload()  # (once per process, not per reload)
    assert [str(w.message) for w in caught] == [
        f"environment variable {name} is not a dagnb setting and is ignored; "
        f"did you mean {meant}?"
    ]


def test_the_variables_dagnb_reads_or_sets_are_never_warned_about(monkeypatch, recwarn):
    from dagnb.executors.reaper import TOKEN_VARIABLE
    from dagnb.model.step import _EXECUTOR_VARIABLES, CONTRACT_VARIABLES, param_env_name
    from dagnb.notebook.headless import CONFIG_VARIABLE
    from dagnb.notebook.magics import ONLY_STEPS_VARIABLE

    own = [*CONTRACT_VARIABLES, *_EXECUTOR_VARIABLES, TOKEN_VARIABLE, CONFIG_VARIABLE,
           ONLY_STEPS_VARIABLE, "DAGNB_WIDGETS", "DAGNB_TEMPLATE_PATH", param_env_name("rows"),
           "DAGNB_TEST_FIRST", "DAGNB_STUB_SANDBOX", "DAGNB_SKIP_BINDER", "DAGNB_SHOWN"]
    for name in own:
        monkeypatch.setenv(name, "none" if name == CONFIG_VARIABLE else "0")
    monkeypatch.setenv("DAGNB_MAX_RETRIES", "1")
    config.reload()
    assert [str(w.message) for w in recwarn] == []


def test_the_mapping_settings_are_read_from_their_variables_as_json(monkeypatch):
    monkeypatch.setenv("DAGNB_CACHE_STORAGE_OPTIONS", '{"endpoint_url": "http://minio:9000"}')
    monkeypatch.setenv("DAGNB_CONTAINER_CREDENTIALS", "{username: me, token_env: GHCR_TOKEN}")
    current = config.reload()
    assert current.cache_storage_options == {"endpoint_url": "http://minio:9000"}
    assert current.container_credentials == {"username": "me", "token_env": "GHCR_TOKEN"}
    assert config.origins()["container_credentials"] == "DAGNB_CONTAINER_CREDENTIALS"
    monkeypatch.setenv("DAGNB_CONTAINER_CREDENTIALS", "me:ghp_SECRET123")
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    assert str(info.value) == ("environment variable DAGNB_CONTAINER_CREDENTIALS is not a "
                               'mapping; give it as JSON: {"username": "me", "token_env": '
                               '"GHCR_TOKEN"}')
    monkeypatch.setenv("DAGNB_CONTAINER_CREDENTIALS", '{"username": "me", "token": "ghp_S3"}')
    with pytest.raises(dagnb.ConfigError, match=r"container_credentials\.token is refused") as info:
        config.reload()
    assert "ghp_S3" not in str(info.value)


@pytest.mark.parametrize("written", ["off", "Off", "OFF", "no"])
def test_cache_mode_off_written_bare_is_off(tmp_path, written):
    write(tmp_path / "dagnb.yaml", f"workflow_defaults:\n  cache_mode: {written}\n")
    assert config.reload().cache_mode == "off"  # (YAML read it as false)


@pytest.mark.parametrize(("name", "data"), [
    ("dagnb.yaml", "executor: local\n".encode("utf-16")),  # PowerShell 5's `>`
    ("dagnb.yaml", "# caf\xe9\nexecutor: local\n".encode("cp1252")),
    ("pyproject.toml", "# caf\xe9\n[tool.dagnb]\nexecutor = 'local'\n".encode("cp1252")),
])
def test_a_config_file_not_in_utf8_is_one_line_naming_it(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(dagnb.ConfigError, match=r"; save it as UTF-8$") as info:
        config.reload()
    assert str(info.value).startswith(f"{str(path)!r} is ")


@pytest.mark.parametrize("key", ["executor", "max_concurrent_executions", "project"])
def test_a_top_level_setting_under_workflow_defaults_says_to_unindent_it(tmp_path, key):
    path = write(tmp_path / "dagnb.yaml", f"workflow_defaults:\n  {key}: 2\n")
    with pytest.raises(dagnb.ConfigError) as info:
        config.reload()
    assert str(info.value) == (f"{path}: workflow_defaults: key {key!r} is a top-level "
                               "setting, not a step default; unindent it")


def test_config_show_names_the_source_of_cache_mode_and_caching_enabled(tmp_path,
                                                                        monkeypatch):
    path = write(tmp_path / "dagnb.yaml", "workflow_defaults: {cache_mode: read-only}\n")
    monkeypatch.setenv("DAGNB_CACHING_ENABLED", "true")  # (changes nothing: not "off")
    config.reload()
    assert config.origins()["cache_mode"] == str(path)
    assert config.origins()["caching_enabled"] == "DAGNB_CACHING_ENABLED"
    write(path, "workflow_defaults: {caching_enabled: false}\n")
    monkeypatch.delenv("DAGNB_CACHING_ENABLED")
    monkeypatch.setenv("DAGNB_CACHE_MODE", "read-only")
    assert config.reload().caching_enabled is True
    assert config.origins()["caching_enabled"] == "DAGNB_CACHE_MODE"  # (not the file's false)
