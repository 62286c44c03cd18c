"""Settings from the environment, validated once at start-up, with every bad variable reported together."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from slack_backend.queue.connection import RedisTarget, cluster_url_nodes, parse_hosts
from slack_backend.slack.response_urls import is_loopback_url

ENV_FILE_VAR = "SLACK_BACKEND_ENV_FILE"
# Every command exits with this code when its settings are invalid or conflict.
CONFIG_ERROR_EXIT_CODE = 2
MASK = "********"
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

# pydantic's wording for parse failures names Python types; these read better next to a variable name.
_PLAIN_REASONS = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be a boolean (true/false, 1/0, yes/no, on/off)",
    "missing": "is required",
    "extra_forbidden": "unknown setting",
}


class ConfigError(Exception):
    """The environment holds invalid settings; `problems` lists every `(variable_name, reason)` pair."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__(format_config_error(self))


class _VariableError(ValueError):
    """A cross-field error reported against another variable than the field being validated."""

    def __init__(self, variable: str, reason: str) -> None:
        self.variable = variable
        super().__init__(reason)


class Settings(BaseModel):
    """Every setting of the service; field `worker_concurrency` is read from `WORKER_CONCURRENCY`, and so on.

    Build it with `load_settings()`. `Settings(**fields)` validates the given fields only and never reads the
    environment, so tests stay hermetic.
    """

    # A plain model, not pydantic-settings' BaseSettings: load_settings() is the one reader of the environment, and
    # that package's import (its asyncio, argparse and cloud sources) was ~5% of every command's start.
    # validate_default off so the REDIS_HOST part check sees only given values.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    # Declared before its parts: the part validators read it from `info.data`.
    redis_url: str = Field("redis://127.0.0.1:6379/0", repr=False)
    redis_host: str | None = None
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr | None = None
    redis_tls: bool = False
    redis_prefix: str = Field("sb", min_length=1)
    # Sentinel: the Sentinels (host:port list) name the master; REDIS_URL then gives only its password and db.
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = Field(None, validate_default=True)
    redis_sentinel_password: SecretStr | None = None
    # Cluster: seed nodes (host:port list); a redis+cluster://host:port,... REDIS_URL does the same.
    redis_cluster_nodes: str | None = None
    # After each add, wait until this many replicas hold it (Redis WAIT) before answering; 0: do not wait.
    redis_min_replicas_ack: int = Field(0, ge=0, le=16)
    redis_replicas_ack_timeout_ms: int = Field(500, ge=1, le=60000)
    database_url: str = Field("sqlite+aiosqlite:///./slack-backend.db", repr=False)

    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_client_id: str | None = None
    # validate_default: the pair check must also run when only SLACK_CLIENT_ID is given.
    slack_client_secret: SecretStr | None = Field(None, validate_default=True)
    # Fernet keys, comma-separated, the current one first; required in OAuth mode (tokens are stored encrypted).
    token_encryption_key: SecretStr | None = Field(None, validate_default=True)
    slack_api_url: str = "https://slack.com/api/"
    # Slack serves conversations.replies to apps not Marketplace-approved at most 15 messages a call.
    slack_marketplace_app: bool = False
    # The longest a draft waits for its thread and names (Slack's rate limits, a slow answer); then it is written
    # without them and says so.
    slack_context_wait_s: float = Field(10.0, gt=0, le=120, allow_inf_nan=False)
    slack_slash_command: str = "/draft"
    # Workspace (T...) or Enterprise Grid org (E...) ids served, comma-separated; empty serves every workspace.
    slack_allowed_teams: str = ""
    # The https address Slack reaches this service at; drafts whose thread could not be read link to its
    # /slack/connect (OAuth mode), where users connect their own Slack account.
    public_url: str | None = None

    anthropic_api_key: SecretStr | None = None
    anthropic_model: str = "claude-sonnet-5-5"
    anthropic_base_url: str | None = None
    ai_max_tokens: int = Field(1024, ge=1, le=64000)
    # How long one model call may take before it counts as a transient failure (and is retried with backoff).
    ai_timeout_s: float = Field(60.0, gt=0, le=600, allow_inf_nan=False)

    ai_rate_limit_max: int = Field(10, ge=1)
    ai_rate_limit_duration_ms: int = Field(1000, ge=1)
    # Estimated tokens the ai-responses queue may start per minute (0: no budget); see docs/architecture.md.
    ai_tokens_per_minute: int = Field(0, ge=0)
    # Tokens a workspace may use per UTC day (0: no quota); per-workspace overrides live in the database.
    workspace_daily_token_quota: int = Field(0, ge=0)
    # Jobs of one workspace running at once across all workers (0: no cap of its own).
    workspace_concurrency: int = Field(0, ge=0)
    worker_concurrency: int = Field(5, ge=1, le=1000)
    worker_processes: int = Field(1, ge=1, le=64)
    job_attempts: int = Field(4, ge=1, le=100)
    job_backoff_ms: int = Field(2000, ge=0)
    job_lease_ms: int = Field(30000, ge=1000)
    stalled_check_interval_ms: int = Field(5000, ge=100)
    keep_completed: int = Field(100, ge=0)
    keep_failed: int = Field(500, ge=0)
    # How long a Slack event or trigger id is refused after its job was queued, however soon retention trims the
    # job: Slack re-delivers unacknowledged events after about 1 and 5 minutes.
    job_dedup_ttl_s: int = Field(86400, ge=0)
    # The most one job may be held back by upstream Retry-After answers in total; past it, it fails.
    job_max_retry_after_s: int = Field(900, ge=1)
    shutdown_timeout_s: float = Field(25.0, ge=0, allow_inf_nan=False)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    admin_token: SecretStr | None = None
    # The bearer token /metrics asks for on the public web port (unset: that /metrics answers 403).
    metrics_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    # A worker process serves /metrics here; with `--processes N`, child i listens on this port + i.
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    max_trigger_text_chars: int = Field(4000, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
        if value.startswith(_REDIS_SCHEMES[3:]):
            cluster_url_nodes(value)
        return value

    @field_validator("redis_sentinels", "redis_cluster_nodes")
    @classmethod
    def _host_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hosts(value)
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _sentinel_pair(cls, value: str | None, info: ValidationInfo) -> str | None:
        sentinels = info.data.get("redis_sentinels")
        if sentinels is not None and value is None:
            raise ValueError("is required when REDIS_SENTINELS is set")
        if sentinels is None and value is not None:
            raise _VariableError("REDIS_SENTINELS", "is required when REDIS_SENTINEL_MASTER is set")
        return value

    @field_validator("redis_sentinel_password")
    @classmethod
    def _sentinel_password_needs_sentinels(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and info.data.get("redis_sentinels") is None:
            raise ValueError("is only used with REDIS_SENTINELS")
        return value

    @field_validator("redis_cluster_nodes")
    @classmethod
    def _one_topology(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("redis_sentinels") is not None:
            raise ValueError("cannot be used with REDIS_SENTINELS (one Redis topology at a time)")
        return value

    @field_validator("redis_host")
    @classmethod
    def _plain_host(cls, value: str | None) -> str | None:
        # The host goes into a URL: these characters would turn it into a path, user info or another host.
        if value is not None and (any(c in value for c in "/@?#") or value != value.strip()):
            raise ValueError("must be a host name or address only (put a full URL in REDIS_URL instead)")
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        # The same rule the queue's key names enforce (queue/_keys.py), checked here so a bad prefix stops the
        # process at start with exit 2 instead of a traceback when the first queue is built.
        if any(c in value for c in "{}\0") or value != value.strip():
            raise ValueError("must not contain braces or NUL, nor start or end with a space")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
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

    @field_validator("slack_api_url", "anthropic_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("slack_slash_command")
    @classmethod
    def _slash_command(cls, value: str) -> str:
        if not value.startswith("/") or len(value) < 2 or any(c.isspace() for c in value):
            raise ValueError("must be a slash command such as /draft")
        return value

    # A part given without REDIS_HOST would otherwise be silently ignored.
    @field_validator("redis_port", "redis_password", "redis_tls")
    @classmethod
    def _redis_part_needs_host(cls, value: object, info: ValidationInfo) -> object:
        if info.data.get("redis_host") is None:
            raise ValueError("is only used with REDIS_HOST (put it in REDIS_URL instead)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("slack_client_secret")
    @classmethod
    def _oauth_pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        client_id = info.data.get("slack_client_id")
        if client_id is not None and value is None:
            raise _VariableError("SLACK_CLIENT_SECRET", "is required when SLACK_CLIENT_ID is set")
        if client_id is None and value is not None:
            raise _VariableError("SLACK_CLIENT_ID", "is required when SLACK_CLIENT_SECRET is set")
        if client_id is not None and info.data.get("slack_bot_token") is not None:
            # Otherwise the web side would run OAuth while workers used the one static token.
            raise _VariableError(
                "SLACK_BOT_TOKEN",
                "conflicts with SLACK_CLIENT_ID/SLACK_CLIENT_SECRET: set the bot token (one workspace) "
                "or the OAuth pair (many workspaces), not both",
            )
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        # Every Web API call carries a bot token: in clear text only to this machine (tests, a local proxy).
        if not value.startswith("https://") and not is_loopback_url(value):
            raise ValueError("must be an https:// URL (plain http only to 127.0.0.1 or localhost)")
        return value

    @field_validator("slack_allowed_teams")
    @classmethod
    def _team_ids(cls, value: str) -> str:
        for team in _split_ids(value):
            if not _TEAM_ID.match(team):
                raise ValueError("must be Slack workspace or org ids (T... or E...), separated by commas")
        return value

    def allowed_teams(self) -> frozenset[str]:
        """The workspace and org ids SLACK_ALLOWED_TEAMS names; empty means every workspace is served."""
        return frozenset(_split_ids(self.slack_allowed_teams))

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (Slack users open links from it)")
        return None if value is None else value.rstrip("/")

    @field_validator("token_encryption_key")
    @classmethod
    def _token_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None:
            if info.data.get("slack_client_id") is not None:
                raise _VariableError(
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

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _admin_token_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

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
        for name in type(self).model_fields:
            value: Any = getattr(self, name)
            if name == "redis_url":
                value = self.redis_url_value()
            if value is None:
                text = NOT_SET
            elif isinstance(value, SecretStr):
                text = MASK
            elif isinstance(value, bool):
                text = str(value).lower()
            elif name.endswith("_url"):
                text = _mask_url(str(value))
            else:
                text = str(value)
            shown[name.upper()] = text
        return shown


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
    values: dict[str, Any] = {}
    env_file = environ.get(ENV_FILE_VAR)
    if env_file:
        if Path(env_file).is_file():
            values.update(_env_file_values(env_file))
        else:
            problems.append((ENV_FILE_VAR, "file not found"))
    for name in Settings.model_fields:
        value = environ.get(name.upper())
        if value:
            values[name] = value
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError([*problems, *_problems(exc)]) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _env_file_values(path: str) -> dict[str, str]:
    """The non-empty variables of a `.env`-style file by field name; unknown names are kept, to be reported."""
    # Imported here: only a start that names an env file reads one.
    from dotenv import dotenv_values

    return {name.lower(): value for name, value in dotenv_values(path, encoding="utf-8").items() if value}


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into `(variable_name, reason)` pairs, never quoting the input (it may be a secret)."""
    found: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _VariableError):
            found.append((cause.variable, str(cause)))
            continue
        variable = str(error["loc"][0]).upper() if error["loc"] else "(settings)"
        reason = _PLAIN_REASONS.get(error["type"], error["msg"]).removeprefix("Value error, ")
        found.append((variable, reason))
    return found


def format_config_error(err: ConfigError) -> str:
    """Render a ConfigError as one message: a summary line, then one `  NAME: reason` line per problem."""
    lines = [f"configuration error: {len(err.problems)} invalid setting(s)"]
    lines += [f"  {name}: {reason}" for name, reason in err.problems]
    return "\n".join(lines)
