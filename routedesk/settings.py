"""Where things are and how the processes are tuned: one settings object, from the environment.

Every process reads the same variables (README, *Setup*), each with an embedded default so
that ``make run`` needs none. Read at call time, not import time, so a test or a subprocess
that sets a variable sees it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    # Temporal connection: Temporal's own variable names (its CLI and SDKs read the same ones),
    # each overriding the profile of the client configuration file (routedesk/temporal.py).
    # Unset means "from the profile, else the embedded default".
    temporal_address: str | None = Field(None, validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str | None = Field(None, validation_alias=_env("TEMPORAL_NAMESPACE"))
    temporal_api_key: SecretStr | None = Field(None, validation_alias=_env("TEMPORAL_API_KEY"))
    # true: TLS with the system's trust store; false: plaintext even when the profile says TLS.
    temporal_tls: bool | None = Field(None, validation_alias=_env("TEMPORAL_TLS"))
    temporal_tls_server_ca_cert_path: str | None = Field(
        None, validation_alias=_env("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    )
    temporal_tls_client_cert_path: str | None = Field(None, validation_alias=_env("TEMPORAL_TLS_CLIENT_CERT_PATH"))
    temporal_tls_client_key_path: str | None = Field(None, validation_alias=_env("TEMPORAL_TLS_CLIENT_KEY_PATH"))
    temporal_tls_server_name: str | None = Field(None, validation_alias=_env("TEMPORAL_TLS_SERVER_NAME"))
    temporal_profile: str | None = Field(None, validation_alias=_env("TEMPORAL_PROFILE"))
    # Unset: Temporal's default location (~/.config/temporalio/temporal.toml on Linux).
    temporal_config_file: str | None = Field(None, validation_alias=_env("TEMPORAL_CONFIG_FILE"))
    task_queue: str = Field("email-routing", validation_alias=_env("ROUTEDESK_TASK_QUEUE"))
    # Prefixes every workflow ID, so several deployments or test runs share one namespace.
    id_prefix: str = Field("", validation_alias=_env("ROUTEDESK_ID_PREFIX"))
    temporal_cli: str | None = Field(None, validation_alias=_env("TEMPORAL_CLI"))
    ui_port: int = Field(8233, validation_alias=_env("ROUTEDESK_UI_PORT"))
    # Worker tuning (docs/benchmarks.md says why these defaults).
    workflow_cache: int = Field(1000, validation_alias=_env("ROUTEDESK_WORKFLOW_CACHE"))
    workflow_tasks: int = Field(16, validation_alias=_env("ROUTEDESK_WORKFLOW_TASKS"))
    workflow_sandbox: bool = Field(False, validation_alias=_env("ROUTEDESK_WORKFLOW_SANDBOX"))
    # /healthz, /readyz and /metrics of `routedesk worker` (the HTTP intake serves them on its
    # own port). Unset: the worker serves none.
    health_port: int | None = Field(None, validation_alias=_env("ROUTEDESK_HEALTH_PORT"))
    health_host: str = Field("127.0.0.1", validation_alias=_env("ROUTEDESK_HEALTH_HOST"))
    # Connection pool per engine (routedesk.db.pool_settings says how to size them).
    db_pool_size: int = Field(16, ge=1, validation_alias=_env("ROUTEDESK_DB_POOL_SIZE"))
    db_max_overflow: int = Field(16, ge=0, validation_alias=_env("ROUTEDESK_DB_MAX_OVERFLOW"))
    db_pool_timeout: int = Field(30, ge=1, validation_alias=_env("ROUTEDESK_DB_POOL_TIMEOUT"))
    # The console (routedesk/console); unset: the config file's console section.
    console_host: str | None = Field(None, validation_alias=_env("ROUTEDESK_CONSOLE_HOST"))
    console_port: int | None = Field(None, ge=0, le=65535, validation_alias=_env("ROUTEDESK_CONSOLE_PORT"))
    console_temporal_ui_url: str | None = Field(None, validation_alias=_env("ROUTEDESK_CONSOLE_TEMPORAL_UI_URL"))


class SettingInvalid(ValueError):
    """An environment variable routedesk reads holds an unusable value (one line, no traceback)."""

    def __init__(self, name: str, raw: object, why: str) -> None:
        self.name = name
        super().__init__(f"{name}={raw!r} {why}")


def get_settings() -> Settings:
    """The settings now; :class:`SettingInvalid` names the first unusable variable."""
    try:
        # Every field comes from the environment or its default; mypy without the pydantic
        # plugin reads the aliases as required arguments.
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "a setting"
        minimum = (err.get("ctx") or {}).get("ge")
        if err["type"] in ("int_parsing", "greater_than_equal"):
            field = next((f for f in Settings.model_fields.values() if f.validation_alias == _env(name)), None)
            minimum = minimum if minimum is not None else _lower_bound(field)
            why = "must be a whole number" + (f" of at least {minimum}" if minimum is not None else "")
        else:
            why = f"is not usable: {err['msg']}"
        raise SettingInvalid(name, err.get("input"), why) from None


def _lower_bound(field: FieldInfo | None) -> object:
    for meta in field.metadata if field is not None else []:
        if getattr(meta, "ge", None) is not None:
            return meta.ge
    return None


# The embedded store `make run` uses when DATABASE_URL is not set.
DEFAULT_DIR = Path(".routedesk")
DEFAULT_URL = f"sqlite:///{DEFAULT_DIR / 'routedesk.db'}"


# The ones nearly every entry point needs, by name.
def database_url(url: str | None = None) -> str:
    """``url``, else DATABASE_URL, else the embedded store."""
    return url or get_settings().database_url or DEFAULT_URL


def temporal_address() -> str:
    """The Temporal address in effect: TEMPORAL_ADDRESS, else the profile's, else the default."""
    from routedesk.temporal import resolve_connection  # it reads these settings

    return resolve_connection().address


def temporal_namespace() -> str:
    from routedesk.temporal import resolve_connection

    return resolve_connection().namespace


def task_queue() -> str:
    return get_settings().task_queue


def id_prefix() -> str:
    return get_settings().id_prefix
