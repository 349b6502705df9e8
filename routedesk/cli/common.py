"""What every CLI command shares: one-line errors, the store, the actor, output.

Commands call routedesk.operations (or, to read, routedesk.views); nothing here or in the
other command modules reads or writes rows. The operations layer, the ORM and Temporal's SDK
are imported only by the commands that use them: a command that only reads takes the
views' lean path (:func:`read_view`) and starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from routedesk.errors import OperationError

if TYPE_CHECKING:
    from routedesk.auth import Actor
    from routedesk.operations import Context
    from routedesk.store import Store
    from routedesk.views import Reader

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


def _exit_code(exc: Exception) -> int | None:
    """The exit code of a failure the user can act on (2: a server or store cannot be
    reached); None for anything else. A module that was never imported cannot have raised
    its exception, so only the ones loaded are asked."""
    if isinstance(exc, UserError | OperationError):
        return 1
    db = sys.modules.get("routedesk.db")
    if db is not None and isinstance(exc, db.StoreUnavailable):
        return 2
    if db is not None and isinstance(exc, db.StoreEmpty):
        return 1
    config = sys.modules.get("routedesk.config")
    if config is not None and isinstance(exc, config.ConfigError):
        return 1
    auth = sys.modules.get("routedesk.auth")
    if auth is not None and isinstance(exc, auth.Forbidden | auth.Unauthenticated):
        return 1
    temporal = sys.modules.get("routedesk.temporal")
    if temporal is not None and isinstance(exc, temporal.TemporalUnavailable):
        return 2
    return None


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line naming what was tried, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            code = _exit_code(exc)
            if code is None:
                raise
            fail(str(exc).replace("\n", "\n  "), code=code)

    return wrapper


def run(coro: Coroutine[Any, Any, R]) -> R:
    import asyncio  # here: the commands that only read never need it

    return asyncio.run(coro)


def open_store(*, create: bool = False) -> Store:
    """The case store, checked to answer before any command relies on it.

    ``create`` makes the tables when missing (intake may be the first thing to run).
    """
    from routedesk.store import Store

    store = Store()
    if create:
        store.init()
    else:
        store.db.check()
    return store


def actor(store: Store) -> Actor:
    """Who runs this command: the token's user with ROUTEDESK_TOKEN set, else the OS user as
    an admin (whoever can open the store can change it anyway)."""
    from routedesk.auth import authenticate, local_admin

    token = os.environ.get(TOKEN_ENV, "").strip()
    return authenticate(store, token) if token else local_admin()


def context(store: Store) -> Context:
    from routedesk.operations import Context

    return Context(store=store)


def read_view(lean: Callable[[Reader], R], full: Callable[[Store, Actor], R]) -> R:
    """A read-only view, read straight from the store's driver (``lean``, routedesk.views)
    when that reads what the operations layer would: no ROUTEDESK_TOKEN to check, and a
    SQLite file or PostgreSQL server at this version's schema revision. Otherwise (or when the
    store cannot be opened that way) through the operations layer (``full``), which also
    says, in one line, what is wrong with the store."""
    if not os.environ.get(TOKEN_ENV, "").strip():
        from routedesk.settings import database_url
        from routedesk.views import open_reader

        try:
            url = database_url()
        except Exception:  # an unusable setting: the full path names it
            url = ""
        with open_reader(url) as reader:
            if reader is not None:
                return lean(reader)
    store = open_store()
    return full(store, actor(store))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def dump(models: Any) -> Any:
    """pydantic models (or lists of them) as JSON-able data."""
    if isinstance(models, list):
        return [m.model_dump(mode="json") for m in models]
    return models.model_dump(mode="json")
