"""Where things are: environment variables with embedded defaults."""

from __future__ import annotations

import os

DEFAULT_TEMPORAL_ADDRESS = "127.0.0.1:7233"


def temporal_address() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", DEFAULT_TEMPORAL_ADDRESS)


def temporal_namespace() -> str:
    return os.environ.get("TEMPORAL_NAMESPACE", "default")


def task_queue() -> str:
    return os.environ.get("ROUTEDESK_TASK_QUEUE", "email-routing")


def id_prefix() -> str:
    return os.environ.get("ROUTEDESK_ID_PREFIX", "")
