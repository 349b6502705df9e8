"""Where things are and how the processes are tuned: one settings object, from the environment.

Every process reads the same variables (README, *Setup*), each with an embedded default so
that ``make run`` needs none. Read at call time, not import time, so a test or a subprocess
that sets a variable sees it.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, env_ignore_empty=True)

    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    temporal_address: str = Field(DEFAULT_TEMPORAL_ADDRESS, validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field("email-routing", validation_alias=_env("ROUTEDESK_TASK_QUEUE"))
    # Prefixes every workflow ID, so several deployments or test runs share one namespace.
    id_prefix: str = Field("", validation_alias=_env("ROUTEDESK_ID_PREFIX"))
    temporal_cli: str | None = Field(None, validation_alias=_env("TEMPORAL_CLI"))
    ui_port: int = Field(8233, validation_alias=_env("ROUTEDESK_UI_PORT"))
    # Worker tuning (docs/benchmarks.md says why these defaults).
    workflow_cache: int = Field(1000, validation_alias=_env("ROUTEDESK_WORKFLOW_CACHE"))
    workflow_tasks: int = Field(16, validation_alias=_env("ROUTEDESK_WORKFLOW_TASKS"))
    workflow_sandbox: bool = Field(False, validation_alias=_env("ROUTEDESK_WORKFLOW_SANDBOX"))


def get_settings() -> Settings:
    # Every field comes from the environment or its default; mypy without the pydantic plugin
    # reads the aliases as required arguments.
    return Settings()  # type: ignore[call-arg]


# The ones nearly every entry point needs, by name.
def temporal_address() -> str:
    return get_settings().temporal_address


def temporal_namespace() -> str:
    return get_settings().temporal_namespace


def task_queue() -> str:
    return get_settings().task_queue


def id_prefix() -> str:
    return get_settings().id_prefix
