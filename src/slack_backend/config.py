"""Settings from the environment, validated once at start-up, with every bad variable reported together."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from slack_backend._setting_values import (
    MASK,
    RULE_KEY,
    Known,
    Rule,
    Secret,
    VariableError,
    boolean,
    choice,
    integer,
    number,
    read_value,
    secret,
    setting,
    text,
)
from slack_backend.queue.target import RedisTarget, cluster_url_nodes, parse_hosts
from slack_backend.slack.response_urls import is_loopback_url

__all__ = [
    "CONFIG_ERROR_EXIT_CODE",
    "ENV_FILE_VAR",
    "MASK",
    "NOT_SET",
    "ConfigError",
    "Secret",
    "Settings",
    "format_config_error",
    "load_settings",
    "serving_problems",
    "setting_variables",
]

ENV_FILE_VAR = "SLACK_BACKEND_ENV_FILE"
# Every command exits with this code when its settings are invalid or conflict.
CONFIG_ERROR_EXIT_CODE = 2
NOT_SET = "(not set)"

# Variables under our own prefix can only be ours, so an unknown one is a typo, not someone else's setting.
_OWN_PREFIX = "SLACK_BACKEND_"
_OWN_VARS = frozenset({ENV_FILE_VAR})
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
_TEAM_ID = re.compile(r"^[TE][A-Z0-9]{2,63}$")
# The app's database layer is async: SQLite through aiosqlite, PostgreSQL through asyncpg (store/db.py).
_DATABASE_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
# SQLAlchemy's own URL grammar (sqlalchemy.engine.url._parse_url), so a URL is judged as the engine will read it
# without importing SQLAlchemy (0.15 s) whenever settings load: `check-config` and `jobs counts` need no database.
_DATABASE_URL = re.compile(
    r"(?P<name>[\w+]+)://(?:[^:/]*(?::[^@]*)?@)?(?:(?:\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?)?"
)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "console"]


class ConfigError(Exception):
    """The environment holds invalid settings; `problems` lists every `(variable_name, reason)` pair."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(format_config_error(self))


# -- checks: each takes the parsed value and the fields before it, and returns the value to keep ---------------


def _redis_scheme(value: str, known: Known) -> str:
    if not value.startswith(_REDIS_SCHEMES):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
    if value.startswith(_REDIS_SCHEMES[3:]):
        cluster_url_nodes(value)
    return value


def _host_list(value: str | None, known: Known) -> str | None:
    if value is not None:
        parse_hosts(value)
    return value


def _sentinel_pair(value: str | None, known: Known) -> str | None:
    sentinels = known.get("redis_sentinels")
    if sentinels is not None and value is None:
        raise ValueError("is required when REDIS_SENTINELS is set")
    if sentinels is None and value is not None:
        raise VariableError("REDIS_SENTINELS", "is required when REDIS_SENTINEL_MASTER is set")
    return value


def _needs_sentinels(value: Secret | None, known: Known) -> Secret | None:
    if value is not None and known.get("redis_sentinels") is None:
        raise ValueError("is only used with REDIS_SENTINELS")
    return value


def _one_topology(value: str | None, known: Known) -> str | None:
    if value is not None and known.get("redis_sentinels") is not None:
        raise ValueError("cannot be used with REDIS_SENTINELS (one Redis topology at a time)")
    return value


def _plain_host(value: str | None, known: Known) -> str | None:
    # The host goes into a URL: these characters would turn it into a path, user info or another host.
    if value is not None and (any(c in value for c in "/@?#") or value != value.strip()):
        raise ValueError("must be a host name or address only (put a full URL in REDIS_URL instead)")
    return value


def _redis_part_needs_host(value: object, known: Known) -> object:
    # A part given without REDIS_HOST would otherwise be silently ignored.
    if known.get("redis_host") is None:
        raise ValueError("is only used with REDIS_HOST (put it in REDIS_URL instead)")
    return value


def _prefix_shape(value: str, known: Known) -> str:
    # The same rule the queue's key names enforce (queue/_keys.py), checked here so a bad prefix stops the
    # process at start with exit 2 instead of a traceback when the first queue is built.
    if any(c in value for c in "{}\0") or value != value.strip():
        raise ValueError("must not contain braces or NUL, nor start or end with a space")
    return value


def _database_driver(value: str, known: Known) -> str:
    # Checked here, not first when the engine is created, so a bad URL stops the process at start (exit 2).
    match = _DATABASE_URL.match(value)
    port = match["port"] if match else None
    if match is None or (port and not port.isdigit()):
        raise ValueError("is not a database URL (e.g. postgresql+asyncpg://user@host/db)")
    backend, _, driver = match["name"].partition("+")
    # A URL without "+driver" gets the dialect's default driver, a synchronous one: refused like any other.
    if _DATABASE_DRIVERS.get(backend) != driver:
        raise ValueError("must be sqlite+aiosqlite://... or postgresql+asyncpg://...")
    return value


def _http_url(value: str | None, known: Known) -> str | None:
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
    return value


def _https_or_loopback(value: str, known: Known) -> str:
    # Every Web API call carries a bot token: in clear text only to this machine (tests, a local proxy).
    if not value.startswith("https://") and not is_loopback_url(value):
        raise ValueError("must be an https:// URL (plain http only to 127.0.0.1 or localhost)")
    return value


def _slash_command(value: str, known: Known) -> str:
    if not value.startswith("/") or len(value) < 2 or any(c.isspace() for c in value):
        raise ValueError("must be a slash command such as /draft")
    return value


def _oauth_pair(value: Secret | None, known: Known) -> Secret | None:
    client_id = known.get("slack_client_id")
    if client_id is not None and value is None:
        raise VariableError("SLACK_CLIENT_SECRET", "is required when SLACK_CLIENT_ID is set")
    if client_id is None and value is not None:
        raise VariableError("SLACK_CLIENT_ID", "is required when SLACK_CLIENT_SECRET is set")
    if client_id is not None and known.get("slack_bot_token") is not None:
        # Otherwise the web side would run OAuth while workers used the one static token.
        raise VariableError(
            "SLACK_BOT_TOKEN",
            "conflicts with SLACK_CLIENT_ID/SLACK_CLIENT_SECRET: set the bot token (one workspace) "
            "or the OAuth pair (many workspaces), not both",
        )
    return value


def _team_ids(value: str, known: Known) -> str:
    for team in _split_ids(value):
        if not _TEAM_ID.match(team):
            raise ValueError("must be Slack workspace or org ids (T... or E...), separated by commas")
    return value


def _public_url(value: str | None, known: Known) -> str | None:
    if value is not None and not value.startswith("https://"):
        raise ValueError("must be an https:// URL (Slack users open links from it)")
    return None if value is None else value.rstrip("/")


def _token_key(value: Secret | None, known: Known) -> Secret | None:
    if value is None:
        if known.get("slack_client_id") is not None:
            raise VariableError(
                "TOKEN_ENCRYPTION_KEY",
                "is required in OAuth mode (SLACK_CLIENT_ID is set): Slack tokens are stored encrypted; "
                "make a key with `slack-backend tokens new-key`",
            )
        return value
    # Imported here: config is read before anything else, and only this check needs the cryptography package.
    from slack_backend.store.crypto import TokenCipher, TokenKeyError

    try:
        TokenCipher.from_setting(value.get_secret_value())
    except TokenKeyError as exc:
        raise ValueError(str(exc).removeprefix("TOKEN_ENCRYPTION_KEY ")) from None
    return value


def _long_token(value: Secret | None, known: Known) -> Secret | None:
    if value is not None and len(value.get_secret_value()) < 16:
        raise ValueError("must be at least 16 characters")
    return value


# -- the settings ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting of the service; field `worker_concurrency` is read from `WORKER_CONCURRENCY`, and so on.

    Build it with `load_settings()`, which reads and checks every variable. `Settings(**fields)` takes typed values
    as they are (tests use the defaults, or `dataclasses.replace` on loaded settings) and never reads the
    environment, so tests stay hermetic.
    """

    # A plain dataclass with the rules beside each field (_setting_values.py), not a pydantic model: pydantic's
    # import and schema build were a third of the start of `jobs counts` and `check-config` (docs/performance.md,
    # round 21), and load_settings() already worded every reason and read the environment itself.
    # Fields are read in this order, and a check sees only the fields above it: REDIS_SENTINELS before its master.
    redis_url: str = setting("redis://127.0.0.1:6379/0", text, _redis_scheme, in_repr=False)
    redis_host: str | None = setting(None, text, _plain_host)
    redis_port: int = setting(6379, integer(1, 65535), _redis_part_needs_host)
    redis_password: Secret | None = setting(None, secret, _redis_part_needs_host)
    redis_tls: bool = setting(False, boolean, _redis_part_needs_host)
    redis_prefix: str = setting("sb", text, _prefix_shape)
    # Sentinel: the Sentinels (host:port list) name the master; REDIS_URL then gives only its password and db.
    redis_sentinels: str | None = setting(None, text, _host_list)
    redis_sentinel_master: str | None = setting(None, text, _sentinel_pair, always=True)
    redis_sentinel_password: Secret | None = setting(None, secret, _needs_sentinels)
    # Cluster: seed nodes (host:port list); a redis+cluster://host:port,... REDIS_URL does the same.
    redis_cluster_nodes: str | None = setting(None, text, _host_list, _one_topology)
    # After each add, wait until this many replicas hold it (Redis WAIT) before answering; 0: do not wait.
    redis_min_replicas_ack: int = setting(0, integer(0, 16))
    redis_replicas_ack_timeout_ms: int = setting(500, integer(1, 60000))
    database_url: str = setting("sqlite+aiosqlite:///./slack-backend.db", text, _database_driver, in_repr=False)

    slack_signing_secret: Secret | None = setting(None, secret)
    slack_bot_token: Secret | None = setting(None, secret)
    slack_client_id: str | None = setting(None, text)
    # always: the pair check must also run when only SLACK_CLIENT_ID is given.
    slack_client_secret: Secret | None = setting(None, secret, _oauth_pair, always=True)
    # Fernet keys, comma-separated, the current one first; required in OAuth mode (tokens are stored encrypted).
    token_encryption_key: Secret | None = setting(None, secret, _token_key, always=True)
    slack_api_url: str = setting("https://slack.com/api/", text, _http_url, _https_or_loopback)
    # Slack serves conversations.replies to apps not Marketplace-approved at most 15 messages a call.
    slack_marketplace_app: bool = setting(False, boolean)
    # The longest a draft waits for its thread and names (Slack's rate limits, a slow answer); then it is written
    # without them and says so.
    slack_context_wait_s: float = setting(10.0, number(gt=0, le=120))
    slack_slash_command: str = setting("/draft", text, _slash_command)
    # Workspace (T...) or Enterprise Grid org (E...) ids served, comma-separated; empty serves every workspace.
    slack_allowed_teams: str = setting("", text, _team_ids)
    # The https address Slack reaches this service at; drafts whose thread could not be read link to its
    # /slack/connect (OAuth mode), where users connect their own Slack account.
    public_url: str | None = setting(None, text, _public_url)

    anthropic_api_key: Secret | None = setting(None, secret)
    anthropic_model: str = setting("claude-sonnet-5-5", text)
    anthropic_base_url: str | None = setting(None, text, _http_url)
    ai_max_tokens: int = setting(1024, integer(1, 64000))
    # How long one model call may take before it counts as a transient failure (and is retried with backoff).
    ai_timeout_s: float = setting(60.0, number(gt=0, le=600))

    ai_rate_limit_max: int = setting(10, integer(1))
    ai_rate_limit_duration_ms: int = setting(1000, integer(1))
    # Estimated tokens the ai-responses queue may start per minute (0: no budget); see docs/architecture.md.
    ai_tokens_per_minute: int = setting(0, integer(0))
    # Tokens a workspace may use per UTC day (0: no quota); per-workspace overrides live in the database.
    workspace_daily_token_quota: int = setting(0, integer(0))
    # Jobs of one workspace running at once across all workers (0: no cap of its own).
    workspace_concurrency: int = setting(0, integer(0))
    worker_concurrency: int = setting(5, integer(1, 1000))
    worker_processes: int = setting(1, integer(1, 64))
    job_attempts: int = setting(4, integer(1, 100))
    job_backoff_ms: int = setting(2000, integer(0))
    job_lease_ms: int = setting(30000, integer(1000))
    stalled_check_interval_ms: int = setting(5000, integer(100))
    keep_completed: int = setting(100, integer(0))
    keep_failed: int = setting(500, integer(0))
    # How long a Slack event or trigger id is refused after its job was queued, however soon retention trims the
    # job: Slack re-delivers unacknowledged events after about 1 and 5 minutes.
    job_dedup_ttl_s: int = setting(86400, integer(0))
    # The most one job may be held back by upstream Retry-After answers in total; past it, it fails.
    job_max_retry_after_s: int = setting(900, integer(1))
    shutdown_timeout_s: float = setting(25.0, number(ge=0))

    # The choices are the types' own values, so the two cannot drift apart.
    log_level: LogLevel = setting("INFO", choice(*get_args(LogLevel), fold=str.upper))
    log_format: LogFormat = setting("auto", choice(*get_args(LogFormat), fold=str.lower))
    admin_token: Secret | None = setting(None, secret, _long_token)
    # The bearer token /metrics asks for on the public web port (unset: that /metrics answers 403).
    metrics_token: Secret | None = setting(None, secret, _long_token)
    host: str = setting("127.0.0.1", text)
    port: int = setting(3000, integer(1, 65535))
    # A worker process serves /metrics here; with `--processes N`, child i listens on this port + i.
    worker_metrics_port: int | None = setting(None, integer(1, 65535))
    max_trigger_text_chars: int = setting(4000, integer(1))

    def allowed_teams(self) -> frozenset[str]:
        """The workspace and org ids SLACK_ALLOWED_TEAMS names; empty means every workspace is served."""
        return frozenset(_split_ids(self.slack_allowed_teams))

    def redis_url_value(self) -> str:
        """Return the URL to connect to Redis with, password included: built from REDIS_HOST and its parts
        when REDIS_HOST is set, else REDIS_URL."""
        if self.redis_host is None:
            return self.redis_url
        scheme = "rediss" if self.redis_tls else "redis"
        auth = ""
        if self.redis_password is not None:
            auth = f":{quote(self.redis_password.get_secret_value(), safe='')}@"
        host = f"[{self.redis_host}]" if ":" in self.redis_host else self.redis_host
        return f"{scheme}://{auth}{host}:{self.redis_port}/0"

    def redis_target(self) -> RedisTarget:
        """Where Redis is: REDIS_URL (or REDIS_HOST and its parts), plus the Sentinels or Cluster nodes if set."""
        return RedisTarget(
            url=self.redis_url_value(),
            sentinels=parse_hosts(self.redis_sentinels) if self.redis_sentinels else (),
            sentinel_master=self.redis_sentinel_master or "mymaster",
            sentinel_password=(
                self.redis_sentinel_password.get_secret_value() if self.redis_sentinel_password else None
            ),
            cluster_nodes=parse_hosts(self.redis_cluster_nodes) if self.redis_cluster_nodes else (),
        )

    def masked(self) -> dict[str, str]:
        """Return every effective setting as text by variable name, safe to print: secrets and URL passwords
        are replaced by `MASK`, and unset values read `NOT_SET`."""
        shown: dict[str, str] = {}
        for name in _FIELD_NAMES:
            value: Any = getattr(self, name)
            if name == "redis_url":
                value = self.redis_url_value()
            if value is None:
                text = NOT_SET
            elif isinstance(value, Secret):
                text = MASK
            elif isinstance(value, bool):
                text = str(value).lower()
            elif name.endswith("_url"):
                text = _mask_url(str(value))
            else:
                text = str(value)
            shown[name.upper()] = text
        return shown


# Every field's name, in declaration order; the variable is its upper-case form.
_FIELD_NAMES = tuple(item.name for item in fields(Settings))


def setting_variables() -> list[str]:
    """Every variable the settings read (`WORKER_CONCURRENCY`, ...), in the order they are read."""
    return [name.upper() for name in _FIELD_NAMES]


def serving_problems(settings: Settings, *, demo: bool) -> list[tuple[str, str]]:
    """What stops `serve`/`run` from taking Slack's requests: no signing secret, unless it is an offline demo.

    Without SLACK_SIGNING_SECRET every request from Slack would be refused with 401 while /readyz said ready.
    """
    if settings.slack_signing_secret is None and not demo:
        return [
            (
                "SLACK_SIGNING_SECRET",
                "is required to serve Slack (its app's Basic Information page); for an offline demo use --demo",
            )
        ]
    return []


def _split_ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _mask_url(url: str) -> str:
    """Hide the password of a URL, in its user info or in a `password` query parameter."""
    # Text replacement, not urlunsplit: a round trip turns "sqlite:///x" into "sqlite:/x".
    parts = urlsplit(url)
    if parts.password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        url = url.replace(parts.netloc, f"{userinfo.partition(':')[0]}:{MASK}@{hostinfo}", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any("password" in key.lower() for key, _ in pairs):
        query = urlencode([(k, MASK if "password" in k.lower() else v) for k, v in pairs], safe="*")
        url = url.replace(f"?{parts.query}", f"?{query}", 1)
    return url


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings.

    Args:
        env: the variables to read; None reads `os.environ`. An empty value counts as unset. A `.env`-style
            file is read only when `SLACK_BACKEND_ENV_FILE` names one; the variables win over the file.

    Raises:
        ConfigError: listing every invalid, unknown or missing variable, not just the first.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    problems = [
        (name, "unknown setting") for name in sorted(environ) if name.startswith(_OWN_PREFIX) and name not in _OWN_VARS
    ]
    given: dict[str, str] = {}
    env_file = environ.get(ENV_FILE_VAR)
    if env_file:
        if Path(env_file).is_file():
            given.update(_env_file_values(env_file))
        else:
            problems.append((ENV_FILE_VAR, "file not found"))
    for name in _FIELD_NAMES:
        value = environ.get(name.upper())
        if value:
            given[name] = value
    values, found = _read_fields(given)
    problems += found
    if problems:
        raise ConfigError(problems)
    return Settings(**values)


def _read_fields(given: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Each field's value, read in declaration order, and the `(variable_name, reason)` of each refused one."""
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for item in fields(Settings):
        rule: Rule = item.metadata[RULE_KEY]
        try:
            values[item.name] = read_value(rule, given.get(item.name), item.default, values)
        except VariableError as exc:
            problems.append((exc.variable, str(exc)))
        except ValueError as exc:
            problems.append((item.name.upper(), str(exc)))
    # Names an env file gave that no field has.
    problems += [(name.upper(), "unknown setting") for name in given if name not in _FIELD_NAMES]
    return values, problems


def _env_file_values(path: str) -> dict[str, str]:
    """The non-empty variables of a `.env`-style file by field name; unknown names are kept, to be reported."""
    # Imported here: only a start that names an env file reads one.
    from dotenv import dotenv_values

    return {name.lower(): value for name, value in dotenv_values(path, encoding="utf-8").items() if value}


def format_config_error(err: ConfigError) -> str:
    """Render a ConfigError as one message: a summary line, then one `  NAME: reason` line per problem."""
    lines = [f"configuration error: {len(err.problems)} invalid setting(s)"]
    lines += [f"  {name}: {reason}" for name, reason in err.problems]
    return "\n".join(lines)
