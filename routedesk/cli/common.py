"""What every CLI command shares: one-line errors, the store, the Temporal client, output."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from routedesk.config import ConfigError
from routedesk.db import StoreEmpty, StoreUnavailable
from routedesk.store import Store
from routedesk.temporal import TemporalUnavailable

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


class UserError(Exception):
    """A problem the user can act on, printed as one line (exit 1)."""


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"routedesk: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line naming what was tried, never a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (TemporalUnavailable, StoreUnavailable) as exc:
            fail(str(exc), code=2)
        except ConfigError as exc:
            fail(str(exc).replace("\n", "\n  "), code=1)
        except (UserError, StoreEmpty) as exc:
            fail(str(exc), code=1)

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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
