"""What every CLI command shares: one-line errors, the store, the actor, output.

Commands call routedesk.operations; nothing here or in the other command modules reads or
writes rows. Temporal's SDK is imported only by commands that talk to Temporal, so the
read-only commands start quickly.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from routedesk.auth import Actor, Forbidden, Unauthenticated, authenticate, local_admin
from routedesk.config import ConfigError
from routedesk.db import StoreEmpty, StoreUnavailable
from routedesk.operations import Context, OperationError
from routedesk.store import Store

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")

TOKEN_ENV = "ROUTEDESK_TOKEN"


class UserError(Exception):
    """A problem the user can act on, printed as one line (exit 1)."""


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"routedesk: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _temporal_unavailable(exc: Exception) -> bool:
    # routedesk.temporal (and the SDK) is imported only by commands that connect: if it was
    # never imported, this cannot be its exception.
    mod = sys.modules.get("routedesk.temporal")
    return mod is not None and isinstance(exc, mod.TemporalUnavailable)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line naming what was tried, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except StoreUnavailable as exc:
            fail(str(exc), code=2)
        except ConfigError as exc:
            fail(str(exc).replace("\n", "\n  "), code=1)
        except (UserError, StoreEmpty, OperationError, Forbidden, Unauthenticated) as exc:
            fail(str(exc), code=1)
        except Exception as exc:
            if _temporal_unavailable(exc):
                fail(str(exc), code=2)
            raise

    return wrapper


def run(coro: Coroutine[Any, Any, R]) -> R:
    return asyncio.run(coro)


def open_store(*, create: bool = False) -> Store:
    """The case store, checked to answer before any command relies on it.

    ``create`` makes the tables when missing (intake may be the first thing to run).
    """
    store = Store()
    if create:
        store.init()
    else:
        store.db.check()
    return store


def actor(store: Store) -> Actor:
    """Who runs this command: the token's user with ROUTEDESK_TOKEN set, else the OS user as
    an admin (whoever can open the store can change it anyway)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    return authenticate(store, token) if token else local_admin()


def context(store: Store) -> Context:
    return Context(store=store)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def dump(models: Any) -> Any:
    """pydantic models (or lists of them) as JSON-able data."""
    if isinstance(models, list):
        return [m.model_dump(mode="json") for m in models]
    return models.model_dump(mode="json")
