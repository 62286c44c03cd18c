"""Tests of settings loading, validation, masking and the `check-config` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from slack_backend import __version__
from slack_backend.config import ConfigError, Settings, format_config_error, load_settings, setting_variables
from slack_backend.store import TokenCipher

SLACK_TOKEN = "xoxb-secret-123"
REDIS_PASSWORD = "redis-pa55-word"


def problem_names(err: ConfigError) -> set[str]:
    return {name for name, _ in err.problems}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process with only PATH, HOME and the given variables in its environment."""
    minimal = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "slack_backend.cli", *args],
        env={**minimal, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults_match_the_design() -> None:
    """With nothing set, the engine defaults are the design's: 10 per 1000 ms, 5 tasks, 4 attempts from 2 s."""
    settings = load_settings({})
    assert settings.ai_rate_limit_max == 10
    assert settings.ai_rate_limit_duration_ms == 1000
    assert settings.worker_concurrency == 5
    assert settings.job_attempts == 4
    assert settings.job_backoff_ms == 2000
    assert settings.keep_completed == 100
    assert settings.keep_failed == 500
    assert settings.redis_url_value() == "redis://127.0.0.1:6379/0"
    assert settings.redis_prefix == "sb"
    assert settings.log_level == "INFO"
    assert settings.port == 3000


def test_given_mapping_is_the_only_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings(env) ignores os.environ, and Settings() never reads the environment."""
    monkeypatch.setenv("WORKER_CONCURRENCY", "not-a-number")
    assert load_settings({"WORKER_CONCURRENCY": "7"}).worker_concurrency == 7
    assert Settings().worker_concurrency == 5


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings() with no argument reads the process environment."""
    monkeypatch.setenv("WORKER_CONCURRENCY", "9")
    assert load_settings().worker_concurrency == 9


def test_every_bad_variable_is_named_in_one_error() -> None:
    """Several invalid variables are all reported together, each under its environment name."""
    env = {"WORKER_CONCURRENCY": "many", "JOB_ATTEMPTS": "0", "LOG_LEVEL": "loud", "PORT": "70000"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert problem_names(caught.value) == set(env)
    reasons = dict(caught.value.problems)
    assert reasons["WORKER_CONCURRENCY"] == "must be an integer"
    assert reasons["JOB_ATTEMPTS"] == "must be at least 1"
    message = format_config_error(caught.value)
    assert message.splitlines()[0] == "configuration error: 4 invalid setting(s)"
    assert "  WORKER_CONCURRENCY: must be an integer" in message.splitlines()


def test_error_messages_never_quote_the_value() -> None:
    """A rejected secret does not appear in the error, since errors get printed and logged."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"ADMIN_TOKEN": "short-secret", "REDIS_PORT": "hunter2"})
    assert "short-secret" not in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert dict(caught.value.problems)["ADMIN_TOKEN"] == "must be at least 16 characters"


def test_log_level_is_case_insensitive() -> None:
    """LOG_LEVEL and LOG_FORMAT accept any case and are stored normalised."""
    settings = load_settings({"LOG_LEVEL": "debug", "LOG_FORMAT": "JSON"})
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"


def test_empty_variable_counts_as_unset() -> None:
    """An empty variable (common in compose files) takes the default instead of failing."""
    assert load_settings({"WORKER_CONCURRENCY": "", "REDIS_PASSWORD": ""}).worker_concurrency == 5


@pytest.mark.parametrize(
    ("tls", "expected"),
    [
        ("true", "rediss://:p%40ss%3Aw%2Frd@redis.internal:6380/0"),
        ("false", "redis://:p%40ss%3Aw%2Frd@redis.internal:6380/0"),
    ],
)
def test_redis_parts_build_the_url(tls: str, expected: str) -> None:
    """REDIS_HOST wins over REDIS_URL; port, quoted password and TLS (rediss://) go into the built URL."""
    settings = load_settings(
        {
            "REDIS_URL": "redis://elsewhere:1/0",
            "REDIS_HOST": "redis.internal",
            "REDIS_PORT": "6380",
            "REDIS_PASSWORD": "p@ss:w/rd",
            "REDIS_TLS": tls,
        }
    )
    assert settings.redis_url_value() == expected
    assert settings.masked()["REDIS_URL"] == expected.replace("p%40ss%3Aw%2Frd", "********")


def test_redis_parts_without_host_are_an_error() -> None:
    """REDIS_PORT, REDIS_PASSWORD or REDIS_TLS without REDIS_HOST are refused rather than silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"REDIS_PORT": "6380", "REDIS_PASSWORD": "x", "REDIS_TLS": "1"})
    assert problem_names(caught.value) == {"REDIS_PORT", "REDIS_PASSWORD", "REDIS_TLS"}


def test_masked_hides_secrets_and_url_passwords() -> None:
    """masked() shows set secrets as ******** and unset ones as (not set), and hides passwords in URLs."""
    shown = load_settings(
        {
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "REDIS_URL": f"redis://default:{REDIS_PASSWORD}@cache:6379/2",
            "DATABASE_URL": "postgresql+asyncpg://app:db-pa55@db/app",
        }
    ).masked()
    assert shown["SLACK_BOT_TOKEN"] == "********"
    assert shown["ANTHROPIC_API_KEY"] == "(not set)"
    assert shown["REDIS_URL"] == "redis://default:********@cache:6379/2"
    assert shown["DATABASE_URL"] == "postgresql+asyncpg://app:********@db/app"
    assert set(shown) == set(setting_variables())


def test_masked_keeps_urls_without_password_intact() -> None:
    """A URL with no password is shown exactly as set (the sqlite:/// form included)."""
    assert load_settings({}).masked()["DATABASE_URL"] == "sqlite+aiosqlite:///./slack-backend.db"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLACK_CLIENT_ID": "123.456", "TOKEN_ENCRYPTION_KEY": TokenCipher.new_key()}, "SLACK_CLIENT_SECRET"),
        ({"SLACK_CLIENT_SECRET": "s3cret"}, "SLACK_CLIENT_ID"),
    ],
)
def test_oauth_client_id_and_secret_go_together(env: dict[str, str], named: str) -> None:
    """SLACK_CLIENT_ID without SLACK_CLIENT_SECRET, or the reverse, names the missing one."""
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert problem_names(caught.value) == {named}


def test_oauth_mode_without_token_key_is_a_config_error() -> None:
    """OAuth mode stores tokens, so it needs TOKEN_ENCRYPTION_KEY; without one the config names that variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_CLIENT_ID": "123.456", "SLACK_CLIENT_SECRET": "s3cret"})
    assert problem_names(caught.value) == {"TOKEN_ENCRYPTION_KEY"}
    assert "required in OAuth mode" in str(caught.value)


def test_malformed_token_key_is_refused_without_echoing_it() -> None:
    """A TOKEN_ENCRYPTION_KEY entry that is not a Fernet key is an error naming its position, never its value."""
    good = TokenCipher.new_key()
    with pytest.raises(ConfigError) as caught:
        load_settings({"TOKEN_ENCRYPTION_KEY": f"{good},not-a-real-key-value"})
    assert problem_names(caught.value) == {"TOKEN_ENCRYPTION_KEY"}
    assert "key 2" in str(caught.value)
    assert "not-a-real-key-value" not in str(caught.value)
    assert good not in str(caught.value)


def test_unknown_variable_under_our_prefix_is_an_error() -> None:
    """A SLACK_BACKEND_* variable we do not know (a typo) is an error, while unrelated variables are ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_BACKEND_ENV_FLIE": "x", "JAVA_HOME": "/opt/java"})
    assert problem_names(caught.value) == {"SLACK_BACKEND_ENV_FLIE"}


def test_env_file_is_read_only_when_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .env file is ignored unless SLACK_BACKEND_ENV_FILE names it; then the variables still win over it."""
    env_file = tmp_path / ".env"
    env_file.write_text("WORKER_CONCURRENCY=7\nJOB_ATTEMPTS=9\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).worker_concurrency == 5
    settings = load_settings({"SLACK_BACKEND_ENV_FILE": str(env_file), "JOB_ATTEMPTS": "2"})
    assert settings.worker_concurrency == 7
    assert settings.job_attempts == 2


def test_env_file_unknown_or_missing_is_an_error(tmp_path: Path) -> None:
    """An unknown name inside the env file, or a named file that does not exist, is reported."""
    env_file = tmp_path / "app.env"
    env_file.write_text("WORKER_CONCURENCY=7\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_BACKEND_ENV_FILE": str(env_file)})
    assert caught.value.problems == [("WORKER_CONCURENCY", "unknown setting")]
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_BACKEND_ENV_FILE": str(tmp_path / "missing.env")})
    assert caught.value.problems == [("SLACK_BACKEND_ENV_FILE", "file not found")]


def test_check_config_with_bad_env_exits_2_naming_each_variable() -> None:
    """`check-config` with bad settings exits 2 and names every bad variable on stderr, with no traceback."""
    result = run_cli("check-config", env={"WORKER_CONCURRENCY": "lots", "JOB_BACKOFF_MS": "-1", "PORT": "0"})
    assert result.returncode == 2
    assert "configuration error: 3 invalid setting(s)" in result.stderr
    for name in ("WORKER_CONCURRENCY", "JOB_BACKOFF_MS", "PORT"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("as_json", [False, True])
def test_check_config_with_good_env_exits_0_without_secrets(as_json: bool) -> None:
    """`check-config` with good settings exits 0, shows the settings and never prints a secret value."""
    env = {
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "REDIS_HOST": "cache",
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "ANTHROPIC_API_KEY": "sk-ant-api03-secret",
        "WORKER_CONCURRENCY": "8",
    }
    result = run_cli("check-config", *(["--json"] if as_json else []), env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for secret in (SLACK_TOKEN, REDIS_PASSWORD, "sk-ant-api03-secret"):
        assert secret not in output
    if as_json:
        shown = json.loads(result.stdout)
        assert shown["WORKER_CONCURRENCY"] == "8"
        assert shown["REDIS_URL"] == "redis://:********@cache:6379/0"
        assert shown["SLACK_BOT_TOKEN"] == "********"
    else:
        assert "WORKER_CONCURRENCY" in result.stdout
        assert "redis://:********@cache:6379/0" in result.stdout


def test_version_command_prints_the_version() -> None:
    """`version` prints the package version and exits 0."""
    result = run_cli("version", env={})
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_default_model_is_one_the_sdk_names() -> None:
    """The default ANTHROPIC_MODEL is one of the models the SDK's public `Model` type lists (a typo would fail)."""
    from anthropic.types import Model

    named = {value for arg in typing.get_args(Model) for value in typing.get_args(arg)}
    assert "claude-sonnet-5-5" in named  # the check itself can see a real name
    assert load_settings({}).anthropic_model in named


def test_slack_allowed_teams_reads_a_comma_list_of_slack_ids() -> None:
    """SLACK_ALLOWED_TEAMS is a comma list of T.../E... ids (blanks ignored); anything else is a config error."""
    assert load_settings({}).allowed_teams() == frozenset()
    assert load_settings({"SLACK_ALLOWED_TEAMS": " T0ONE, E0ORG ,"}).allowed_teams() == {"T0ONE", "E0ORG"}
    with pytest.raises(ConfigError) as caught:
        load_settings({"SLACK_ALLOWED_TEAMS": "T0ONE,acme.slack.com"})
    assert problem_names(caught.value) == {"SLACK_ALLOWED_TEAMS"}


def test_bot_token_with_oauth_credentials_exits_2_naming_both() -> None:
    """SLACK_BOT_TOKEN together with SLACK_CLIENT_ID/SECRET is a conflict: exit 2, both variables named."""
    env = {
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_CLIENT_ID": "123.456",
        "SLACK_CLIENT_SECRET": "s3cret-value",
        "TOKEN_ENCRYPTION_KEY": FERNET_KEY,
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert problem_names(caught.value) == {"SLACK_BOT_TOKEN"}
    assert "SLACK_CLIENT_ID" in format_config_error(caught.value)
    done = run_cli("check-config", env=env)
    assert done.returncode == 2
    assert "SLACK_BOT_TOKEN" in done.stderr
    assert "SLACK_CLIENT_ID" in done.stderr
    assert SLACK_TOKEN not in done.stderr + done.stdout


@pytest.mark.parametrize("command", ["serve", "run"])
def test_serving_slack_without_a_signing_secret_exits_2(command: str) -> None:
    """`serve` and `run` with no SLACK_SIGNING_SECRET stop at once with exit 2 naming it (not a warning)."""
    done = run_cli(command, env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert done.returncode == 2, done.stderr
    assert "SLACK_SIGNING_SECRET" in done.stderr


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://slack.com/api/", True),
        ("https://slack-gov.com/api/", True),
        ("http://127.0.0.1:8080/api/", True),
        ("http://localhost:8080/api/", True),
        ("http://slack.example.com/api/", False),
        ("http://localhost.evil.example/api/", False),
    ],
)
def test_slack_api_url_is_https_or_loopback(url: str, ok: bool) -> None:
    """SLACK_API_URL carries bot tokens: plain http only to this machine (tests, proxies on loopback)."""
    if ok:
        assert load_settings({"SLACK_API_URL": url}).slack_api_url == url
    else:
        with pytest.raises(ConfigError) as caught:
            load_settings({"SLACK_API_URL": url})
        assert problem_names(caught.value) == {"SLACK_API_URL"}


# A valid key, for settings that need one beside them (OAuth mode requires TOKEN_ENCRYPTION_KEY).
FERNET_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
# One bad value per variable, with whatever it needs beside it; each must be refused naming only that variable.
BAD_VALUES: list[tuple[str, str, dict[str, str]]] = [
    ("REDIS_URL", "http://cache:6379/0", {}),
    ("REDIS_HOST", "cache/0", {}),
    ("REDIS_PORT", "0", {"REDIS_HOST": "cache"}),
    ("REDIS_PASSWORD", "pw", {}),  # without REDIS_HOST it would be silently ignored
    ("REDIS_TLS", "maybe", {"REDIS_HOST": "cache"}),
    ("REDIS_PREFIX", "{sb}", {}),
    ("REDIS_PREFIX", " sb", {}),
    ("DATABASE_URL", "mysql+aiomysql://u@db/app", {}),
    ("DATABASE_URL", "postgresql://u@db/app", {}),  # a sync driver: the app needs asyncpg
    ("DATABASE_URL", "sqlite:///./x.db", {}),  # a sync driver: the app needs aiosqlite
    ("DATABASE_URL", "not a url", {}),
    ("SLACK_CLIENT_ID", "123.456", {"TOKEN_ENCRYPTION_KEY": FERNET_KEY}),  # without its secret: the secret is named
    ("SLACK_CLIENT_SECRET", "s3cret", {}),  # without its id: the id is the one named
    ("TOKEN_ENCRYPTION_KEY", "notakey", {}),
    ("PUBLIC_URL", "http://drafts.example.com", {}),
    ("SLACK_ALLOWED_TEAMS", "acme.slack.com", {}),
    ("SLACK_MARKETPLACE_APP", "maybe", {}),
    ("SLACK_CONTEXT_WAIT_S", "0", {}),
    ("SLACK_CONTEXT_WAIT_S", "nan", {}),
    ("SLACK_CONTEXT_WAIT_S", "600", {}),
    ("METRICS_TOKEN", "short", {}),
    ("JOB_DEDUP_TTL_S", "-1", {}),
    ("JOB_MAX_RETRY_AFTER_S", "0", {}),
    ("REDIS_SENTINELS", "cache", {}),
    ("REDIS_SENTINEL_MASTER", "mymaster", {}),  # without sentinels: REDIS_SENTINELS is the one named
    ("REDIS_SENTINEL_PASSWORD", "pw", {}),
    ("REDIS_CLUSTER_NODES", "cache", {}),
    ("REDIS_MIN_REPLICAS_ACK", "-1", {}),
    ("REDIS_REPLICAS_ACK_TIMEOUT_MS", "0", {}),
    ("SLACK_API_URL", "slack.com/api/", {}),
    ("SLACK_SLASH_COMMAND", "draft", {}),
    ("ANTHROPIC_BASE_URL", "localhost:8080", {}),
    ("AI_MAX_TOKENS", "0", {}),
    ("AI_TIMEOUT_S", "0", {}),
    ("AI_TIMEOUT_S", "nan", {}),
    ("AI_TIMEOUT_S", "inf", {}),
    ("AI_RATE_LIMIT_MAX", "0", {}),
    ("AI_RATE_LIMIT_DURATION_MS", "0", {}),
    ("AI_TOKENS_PER_MINUTE", "-1", {}),
    ("WORKSPACE_DAILY_TOKEN_QUOTA", "-1", {}),
    ("WORKSPACE_CONCURRENCY", "-1", {}),
    ("WORKER_CONCURRENCY", "0", {}),
    ("WORKER_PROCESSES", "65", {}),
    ("JOB_ATTEMPTS", "0", {}),
    ("JOB_BACKOFF_MS", "-1", {}),
    ("JOB_LEASE_MS", "999", {}),
    ("STALLED_CHECK_INTERVAL_MS", "99", {}),
    ("KEEP_COMPLETED", "-1", {}),
    ("KEEP_FAILED", "many", {}),
    ("SHUTDOWN_TIMEOUT_S", "-1", {}),
    ("SHUTDOWN_TIMEOUT_S", "inf", {}),
    ("LOG_LEVEL", "loud", {}),
    ("LOG_FORMAT", "xml", {}),
    ("ADMIN_TOKEN", "short", {}),
    ("PORT", "70000", {}),
    ("WORKER_METRICS_PORT", "0", {}),
    ("MAX_TRIGGER_TEXT_CHARS", "0", {}),
]
# Variables for which every non-empty string is valid (secrets, names and a bind address); nothing to refuse.
ANY_STRING = {"SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_MODEL", "HOST"}
# The pairs: a value alone names its missing partner.
NAMED_INSTEAD = {
    "SLACK_CLIENT_ID": "SLACK_CLIENT_SECRET",
    "SLACK_CLIENT_SECRET": "SLACK_CLIENT_ID",
    "REDIS_SENTINEL_MASTER": "REDIS_SENTINELS",
}


def test_bad_value_table_covers_every_variable() -> None:
    """Every setting has a bad-value case below or is one whose every string is valid."""
    covered = {name for name, _, _ in BAD_VALUES} | ANY_STRING
    assert covered == set(setting_variables())


@pytest.mark.parametrize(
    ("name", "value", "beside"), BAD_VALUES, ids=[f"{name}={value!r}" for name, value, _ in BAD_VALUES]
)
def test_each_bad_value_is_refused_naming_its_variable(name: str, value: str, beside: dict[str, str]) -> None:
    """A bad value of any variable is a ConfigError at load time naming exactly that variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings({**beside, name: value})
    assert problem_names(caught.value) == {NAMED_INSTEAD.get(name, name)}


@pytest.mark.parametrize(
    "value",
    [
        "sqlite+aiosqlite:///./slack-backend.db",
        "sqlite+aiosqlite:///:memory:",
        "postgresql+asyncpg://app:pw@db:5432/app",
    ],
)
def test_supported_database_urls_are_accepted(value: str) -> None:
    """The database URLs the docs name (SQLite via aiosqlite, PostgreSQL via asyncpg) load fine."""
    assert load_settings({"DATABASE_URL": value}).database_url == value


# The service commands with many bad values at once (none depending on another); each must name every one.
SERVICE_COMMANDS = [["run"], ["serve"], ["worker"], ["worker", "--processes", "2"]]
MANY_BAD = {
    "DATABASE_URL": "mysql+aiomysql://u@db/app",
    "REDIS_PREFIX": "{sb}",
    "SLACK_API_URL": "slack.com/api/",
    "AI_TIMEOUT_S": "nan",
    "JOB_LEASE_MS": "999",
    "WORKER_METRICS_PORT": "0",
    "LOG_FORMAT": "xml",
}


@pytest.mark.parametrize("command", SERVICE_COMMANDS, ids=" ".join)
def test_service_commands_exit_2_naming_each_bad_variable(command: list[str]) -> None:
    """`run`, `serve` and `worker [--processes 2]` with bad settings exit 2 at start, naming each, no traceback."""
    result = run_cli(*command, env=MANY_BAD)
    assert result.returncode == 2, result.stderr
    assert f"configuration error: {len(MANY_BAD)} invalid setting(s)" in result.stderr
    for name in MANY_BAD:
        assert f"  {name}: " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_PREFIX"])
def test_serve_with_a_bad_database_url_or_prefix_alone_exits_2(name: str) -> None:
    """DATABASE_URL and REDIS_PREFIX are checked at start like the rest: exit 2 naming them, not a traceback later."""
    result = run_cli("serve", env={name: dict(MANY_BAD)[name]})
    assert result.returncode == 2, result.stderr
    assert f"  {name}: " in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WORKER_CONCURRENCY", " 7 ", 7),
        ("WORKER_CONCURRENCY", "+7", 7),
        ("WORKER_CONCURRENCY", "1_000", 1000),
        ("WORKER_CONCURRENCY", "8.0", 8),
        ("SLACK_MARKETPLACE_APP", "YES", True),
        ("SLACK_MARKETPLACE_APP", "off", False),
        ("SLACK_MARKETPLACE_APP", "t", True),
        ("AI_TIMEOUT_S", " 2.5 ", 2.5),
        ("AI_TIMEOUT_S", "1e1", 10.0),
        ("LOG_FORMAT", "Console", "console"),
    ],
)
def test_values_are_read_as_an_environment_writes_them(name: str, value: str, expected: object) -> None:
    """Numbers with spaces, a sign, `_` or a zero fraction, booleans in any case, choices in any case."""
    assert getattr(load_settings({name: value}), name.lower()) == expected


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("WORKER_CONCURRENCY", "1.5", "must be an integer"),
        ("WORKER_CONCURRENCY", "0x10", "must be an integer"),
        ("WORKER_CONCURRENCY", "\uff17", "must be an integer"),  # a full-width 7: int() would take it
        ("PORT", "70000", "must be at most 65535"),
        ("SLACK_MARKETPLACE_APP", " true", "must be a boolean (true/false, 1/0, yes/no, on/off)"),
        ("AI_TIMEOUT_S", "\uff11", "must be a number"),
        ("AI_TIMEOUT_S", "infinity", "must be a finite number"),
        ("AI_TIMEOUT_S", "0", "must be greater than 0"),
        ("LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_each_refusal_gives_its_reason(name: str, value: str, reason: str) -> None:
    """A refused value's reason says what the variable must be, in words that follow its name."""
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value})
    assert caught.value.problems == [(name, reason)]


def test_secrets_never_show_in_the_settings_repr() -> None:
    """repr() of the settings (a traceback, a debugger) shows secrets masked and leaves the URLs out."""
    settings = load_settings({"SLACK_BOT_TOKEN": SLACK_TOKEN, "REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache:6379/0"})
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == SLACK_TOKEN
    shown = repr(settings) + str(settings.slack_bot_token)
    assert SLACK_TOKEN not in shown
    assert REDIS_PASSWORD not in shown
