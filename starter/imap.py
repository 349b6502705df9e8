"""IMAP intake: fetch each mailbox's mail from its IMAP folder, durably and exactly once in effect.

One fetcher per mailbox that has an ``imap`` section. Each runs its IMAP session on a thread
of its own (stdlib :mod:`imaplib`, blocking) and comes back to the event loop only to submit
mail. Messages are taken oldest first (UID order), in batches:

1. FETCH ``BODY.PEEK[]``: nothing changes on the server yet;
2. :func:`starter.send.submit_email`: the raw bytes are committed in the case store and the
   routing workflow started, both idempotent on the Message-ID (or the bytes' hash);
3. mark ``\\Seen``, move or delete the batch on the server;
4. advance the position (UIDVALIDITY, last UID) in the case store (``imap_position``).

A crash before 3 fetches the batch again and dedupe makes that harmless; a crash between 3
and 4 fetches nothing again (marked mail is not ``UNSEEN``, moved or deleted mail is gone).
A changed UIDVALIDITY voids the position: the folder is scanned again from UID 1, dedupe
again keeps it to one email per message, and the change is logged and kept on the row.

Why imaplib and not an async client: it is the standard library, and IDLE (which Python 3.11's
imaplib lacks) takes a few lines on its documented ``send``/``readline`` hooks. The one trap
is that a socket timeout leaves imaplib's buffered socket file unusable, so :class:`_Lines`
reads lines from the socket through a buffer of its own, and an IDLE wait can time out,
check for a stop and go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import imaplib
import logging
import os
import random
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client

from routedesk.config import ImapSettings, IntakeSettings, Mailbox, MoveTo
from routedesk.imap_positions import advance, open_position, record_error, set_status
from routedesk.store import Store
from starter.send import submit_email

log = logging.getLogger("routedesk.imap")
T = TypeVar("T")

BATCH = 50  # messages fetched, submitted and marked per round trip
IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
_MAXLINE = 1_000_000
_UNTAGGED_NEW = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)", re.IGNORECASE)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)", re.IGNORECASE)


class LoginFailed(Exception):
    """The server refused the credentials (or they could not be read)."""


class FetchError(Exception):
    """The server refused a step for a reason an operator must fix (no such folder...)."""


# --- the connection ------------------------------------------------------------------------


class _Lines:
    """imaplib's ``readline``/``read`` over a buffer of ours, so a timed-out wait is harmless."""

    sock: socket.socket
    _rbuf: bytearray
    _io_timeout: float | None

    def open(self, host: str = "", port: int | None = None, timeout: float | None = None) -> None:
        self._rbuf = bytearray()
        self._io_timeout = timeout
        super().open(host, port, timeout)  # type: ignore[misc]
        with contextlib.suppress(OSError):  # a dead peer is noticed even in a long IDLE
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def readline(self) -> bytes:
        while True:
            end = self._rbuf.find(b"\n")
            if end >= 0:
                line = bytes(self._rbuf[: end + 1])
                del self._rbuf[: end + 1]
                return line
            if len(self._rbuf) > _MAXLINE:
                raise imaplib.IMAP4.error(f"got more than {_MAXLINE} bytes without a line end")
            chunk = self.sock.recv(65536)
            if not chunk:  # imaplib turns an empty line into "socket error: EOF"
                line = bytes(self._rbuf)
                self._rbuf.clear()
                return line
            self._rbuf += chunk

    def read(self, size: int) -> bytes:
        while len(self._rbuf) < size:
            chunk = self.sock.recv(max(65536, size - len(self._rbuf)))
            if not chunk:
                break
            self._rbuf += chunk
        data = bytes(self._rbuf[:size])
        del self._rbuf[:size]
        return data

    def poll_line(self, timeout: float) -> bytes | None:
        """One line if it arrives within ``timeout`` seconds, else None."""
        if b"\n" not in self._rbuf:
            self.sock.settimeout(timeout)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            finally:
                self.sock.settimeout(self._io_timeout)
            if not chunk:
                raise imaplib.IMAP4.abort("the server closed the connection")
            self._rbuf += chunk
            if b"\n" not in self._rbuf:
                return None
        return self.readline().rstrip(b"\r\n")

    def idle(self, seconds: float, stop: threading.Event) -> bool:
        """RFC 2177 IDLE until new mail is announced, ``seconds`` pass or ``stop`` is set.

        Returns whether new mail was announced. Every read happens on the calling thread (an
        SSL connection must not be read and written from two threads at once).
        """
        conn: Any = self
        tag: bytes = conn._new_tag()
        conn.tagged_commands.pop(tag, None)  # answered here, not through imaplib's table
        conn.send(tag + b" IDLE\r\n")
        new = False
        while True:
            line: bytes = conn._get_line()
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                raise imaplib.IMAP4.error(f"IDLE refused: {line.decode(errors='replace')}")
            new = new or bool(_UNTAGGED_NEW.match(line))
        deadline = time.monotonic() + seconds
        while not new and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self.poll_line(min(left, 0.25))
            if got is None:
                continue
            if got.upper().startswith(b"* BYE"):
                raise imaplib.IMAP4.abort(got.decode(errors="replace"))
            new = bool(_UNTAGGED_NEW.match(got))
        conn.send(b"DONE\r\n")
        while True:
            line = conn._get_line()
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1 :].upper().startswith(b"OK"):
                    raise imaplib.IMAP4.error(f"IDLE ended badly: {line.decode(errors='replace')}")
                return new


class ImapConnection(_Lines, imaplib.IMAP4):
    pass


class ImapSSLConnection(_Lines, imaplib.IMAP4_SSL):
    pass


Connection = ImapConnection | ImapSSLConnection


def ssl_context(imap: ImapSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=imap.ca_file)


def xoauth2(username: str, token: str) -> bytes:
    """The SASL XOAUTH2 initial response (before base64, which imaplib adds)."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def read_secret(imap: ImapSettings) -> str:
    """The password or token, read at each connection (a token file may have been refreshed)."""
    env = imap.password_env or imap.oauth2_token_env
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise LoginFailed(f"the environment variable {env} (imap.{_secret_key(imap)}) is not set")
        return value
    assert imap.oauth2_token_file is not None
    try:
        value = Path(imap.oauth2_token_file).read_text().strip()
    except OSError as exc:
        raise LoginFailed(f"cannot read the token file {imap.oauth2_token_file}: {exc.strerror}") from None
    if not value:
        raise LoginFailed(f"the token file {imap.oauth2_token_file} is empty")
    return value


def _secret_key(imap: ImapSettings) -> str:
    return "password_env" if imap.password_env else "oauth2_token_env"


def server_text(exc: BaseException) -> str:
    """An imaplib error's message as the server wrote it, on one line."""
    arg = exc.args[0] if exc.args else exc
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
    return " ".join(text.split())[:300] or type(exc).__name__


def connect(imap: ImapSettings) -> Connection:
    """Connect, secure and log in; :class:`LoginFailed` when the server refuses the credentials."""
    secret = read_secret(imap)
    host, port, timeout = imap.host, imap.effective_port, imap.timeout_seconds
    conn: Connection
    if imap.tls == "implicit":
        conn = ImapSSLConnection(host, port, ssl_context=ssl_context(imap), timeout=timeout)
    else:
        conn = ImapConnection(host, port, timeout=timeout)
    try:
        if imap.tls == "starttls":
            conn.starttls(ssl_context(imap))
        try:
            if imap.password_env:
                conn.login(imap.username, secret)
            else:
                challenges: list[bytes] = []

                def respond(challenge: bytes) -> bytes:
                    # First the token; a second call carries the server's error (a JSON
                    # document for Gmail and Microsoft 365), answered with an empty line.
                    challenges.append(challenge)
                    return xoauth2(imap.username, secret) if len(challenges) == 1 else b""

                try:
                    conn.authenticate("XOAUTH2", respond)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:
                    detail = challenges[1].decode(errors="replace").strip() if len(challenges) > 1 else ""
                    raise LoginFailed(f"{server_text(exc)} {detail}".strip()) from None
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise LoginFailed(server_text(exc)) from None
        # Servers announce more (MOVE, UIDPLUS) once logged in; imaplib keeps the greeting's list.
        typ, data = conn.capability()
        if typ == "OK" and data and data[-1]:
            conn.capabilities = tuple(data[-1].decode(errors="replace").upper().split())
    except BaseException:
        with contextlib.suppress(Exception):
            conn.shutdown()
        raise
    return conn


def quote(mailbox: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(typ: str, data: list[Any], what: str) -> list[Any]:
    if typ != "OK":
        detail = server_text(Exception(data[-1])) if data and data[-1] else typ
        raise FetchError(f"{what}: {detail}")
    return data


def select_folder(conn: Connection, folder: str) -> int:
    """SELECT the folder; returns its UIDVALIDITY."""
    _ok(*conn.select(quote(folder)), f"cannot open folder {folder!r}")
    _, data = conn.response("UIDVALIDITY")
    if not data or data[0] is None:
        raise FetchError(f"the server sent no UIDVALIDITY for {folder!r}")
    return int(data[-1])


def search_new(conn: Connection, after_uid: int, unseen_only: bool) -> list[int]:
    """UIDs above ``after_uid`` still to fetch, ascending."""
    conn.noop()  # lets the server announce mail that arrived since the last command
    criteria = f"UID {after_uid + 1}:* UNDELETED" + (" UNSEEN" if unseen_only else "")
    data = _ok(*conn.uid("SEARCH", criteria), "SEARCH failed")
    uids = sorted({int(x) for chunk in data if chunk for x in chunk.split()})
    # "n:*" includes the highest UID even when it is below n (RFC 3501 6.4.8).
    return [u for u in uids if u > after_uid]


def fetch_sizes(conn: Connection, uids: list[int]) -> dict[int, int]:
    data = _ok(*conn.uid("FETCH", _uid_set(uids), "(UID RFC822.SIZE)"), "FETCH failed")
    sizes = {}
    for item in data:
        head = item[0] if isinstance(item, tuple) else item
        if isinstance(head, bytes) and (u := _UID.search(head)) and (s := _SIZE.search(head)):
            sizes[int(u.group(1))] = int(s.group(1))
    return sizes


def fetch_raw(conn: Connection, uids: list[int]) -> dict[int, bytes]:
    """The raw bytes of each message, by UID (BODY.PEEK: no flag changes)."""
    data = _ok(*conn.uid("FETCH", _uid_set(uids), "(UID BODY.PEEK[])"), "FETCH failed")
    out: dict[int, bytes] = {}
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        head, body = item[0], item[1]
        m = _UID.search(head)
        if m is None and i + 1 < len(data) and isinstance(data[i + 1], bytes):
            m = _UID.search(data[i + 1])  # some servers put UID after the literal
        if m is not None:
            out[int(m.group(1))] = bytes(body)
    return out


def finish(conn: Connection, imap: ImapSettings, uids: list[int], capabilities: tuple[str, ...]) -> None:
    """Mark, move or delete messages that are stored and whose workflows have started."""
    uid_set = _uid_set(uids)
    if imap.after == "mark_seen":
        _ok(*conn.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Seen)"), "cannot mark mail \\Seen")
        return
    if isinstance(imap.after, MoveTo):
        target = quote(imap.after.move_to)
        if "MOVE" in capabilities:
            _ok(*conn.uid("MOVE", uid_set, target), f"cannot move mail to {imap.after.move_to!r}")
            return
        _ok(*conn.uid("COPY", uid_set, target), f"cannot copy mail to {imap.after.move_to!r}")
    _ok(*conn.uid("STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)"), "cannot flag mail \\Deleted")
    if "UIDPLUS" in capabilities:
        _ok(*conn.uid("EXPUNGE", uid_set), "EXPUNGE failed")
    else:
        _ok(*conn.expunge(), "EXPUNGE failed")


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in uids)


# --- the fetcher ----------------------------------------------------------------------------


@dataclass
class ImapFetcher:
    """Fetches one mailbox's folder until :meth:`stop`; reconnects with exponential backoff."""

    client: Client
    store: Store
    mailbox: Mailbox
    max_message_bytes: int = IntakeSettings().max_message_bytes
    task_queue: str | None = None
    id_prefix: str | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    idle_renew_seconds: float = IDLE_RENEW_SECONDS
    _stop: threading.Event = field(default_factory=threading.Event)
    _task: asyncio.Task[None] | None = None
    _conn: Connection | None = None
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    _healthy: bool = False  # the current session checked the folder at least once
    _failing: bool = False  # the last session ended in an error

    @property
    def imap(self) -> ImapSettings:
        assert self.mailbox.imap is not None
        return self.mailbox.imap

    @property
    def address(self) -> str:
        return self.mailbox.address

    def describe(self) -> str:
        i = self.imap
        return f"{self.address} <- imap{'s' if i.tls == 'implicit' else ''}://{i.username}@{i.host}:{i.effective_port}/{i.folder}"

    def start(self) -> ImapFetcher:
        # A thread of its own: an IDLE wait holds it for minutes, which on the default
        # executor would starve everything else that runs there (storing mail, for one).
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"imap-{self.address}")
        self._task = asyncio.create_task(self.run(), name=f"imap {self.address}")
        return self

    async def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:  # stuck in a network read: cut the connection under it
                conn = self._conn
                if conn is not None:
                    with contextlib.suppress(OSError):
                        conn.sock.shutdown(socket.SHUT_RDWR)
                await asyncio.wait({self._task}, timeout=timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(set_status, self.store, self.address, self.imap.folder, "stopped")

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless stopped first."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.1))  # bounded: the stop flag is checked in between

    async def run(self) -> None:
        folder = self.imap.folder
        backoff = self.backoff_initial
        while not self._stop.is_set():
            self._healthy = False
            try:
                await self._session()
                self._failing = False
            except Exception as exc:  # network, server, store or Temporal: report and retry
                if self._stop.is_set():
                    break
                self._failing = True
                status = "login_failed" if isinstance(exc, LoginFailed) else "error"
                if isinstance(exc, LoginFailed):
                    msg = str(exc)
                elif isinstance(exc, imaplib.IMAP4.error | FetchError):
                    msg = server_text(exc)
                else:
                    msg = _describe(exc)
                log.warning("IMAP intake for %s: %s: %s; retrying in %.1fs", self.address, status, msg, backoff)
                with contextlib.suppress(Exception):  # the store may be what failed
                    await self._io(set_status, self.store, self.address, folder, status, msg)
            if self._healthy:
                backoff = self.backoff_initial
            await self._pause(backoff * random.uniform(0.8, 1.0))
            backoff = min(backoff * 2, self.backoff_max)

    async def _session(self) -> None:
        imap, address = self.imap, self.address
        if not self._failing:  # while retrying, the failure stays visible until a login works
            await self._io(set_status, self.store, address, imap.folder, "connecting")
        conn = await self._io(connect, imap)
        self._conn = conn
        try:
            capabilities = tuple(str(c).upper() for c in conn.capabilities)
            uidvalidity = await self._io(select_folder, conn, imap.folder)
            last_uid, previous = await self._io(open_position, self.store, address, imap.folder, uidvalidity)
            if previous is not None:
                log.warning(
                    "UIDVALIDITY of %s for %s changed from %s to %s (folder recreated or restored): "
                    "scanning it again; dedupe keeps already routed mail from routing twice",
                    imap.folder,
                    address,
                    previous,
                    uidvalidity,
                )
            idle = imap.idle and "IDLE" in capabilities
            while not self._stop.is_set():
                last_uid = await self._drain(conn, uidvalidity, last_uid, capabilities)
                await self._io(set_status, self.store, address, imap.folder, "idle" if idle else "polling")
                self._healthy = True
                if idle:
                    await self._io(conn.idle, min(self.idle_renew_seconds, IDLE_RENEW_SECONDS), self._stop)
                else:
                    await self._pause(imap.poll_seconds)
        finally:
            self._conn = None
            await self._io(_logout, conn)

    async def _drain(self, conn: Connection, uidvalidity: int, last_uid: int, capabilities: tuple[str, ...]) -> int:
        """Route everything new in the folder, oldest first; returns the new last UID."""
        imap = self.imap
        while not self._stop.is_set():
            uids = await self._io(search_new, conn, last_uid, imap.after == "mark_seen")
            if not uids:
                return last_uid
            await self._io(set_status, self.store, self.address, imap.folder, "fetching")
            for start in range(0, len(uids), BATCH):
                batch = uids[start : start + BATCH]
                sizes = await self._io(fetch_sizes, conn, batch)
                fits = [u for u in batch if sizes.get(u, 0) <= self.max_message_bytes]
                raws = await self._io(fetch_raw, conn, fits) if fits else {}
                done: list[int] = []
                for uid in batch:
                    if uid not in raws:
                        # Too large (or gone meanwhile): left in the folder for a person.
                        self._left_on_server(uid, sizes.get(uid))
                        continue
                    await submit_email(
                        self.client,
                        self.store,
                        raws[uid],
                        source="imap",
                        envelope_to=[self.address],
                        task_queue=self.task_queue,
                        id_prefix=self.id_prefix,
                    )
                    done.append(uid)
                if done:
                    await self._io(finish, conn, imap, done, capabilities)
                await self._io(advance, self.store, self.address, imap.folder, uidvalidity, batch[-1], len(done))
                last_uid = batch[-1]
                if self._stop.is_set():
                    break
        return last_uid

    def _left_on_server(self, uid: int, size: int | None) -> None:
        if size is None:
            return  # expunged by someone else between SEARCH and FETCH
        msg = (
            f"message UID {uid} in {self.imap.folder} is {size} bytes, over intake.max_message_bytes "
            f"({self.max_message_bytes}); left in the folder"
        )
        log.warning("IMAP intake for %s: %s", self.address, msg)
        record_error(self.store, self.address, self.imap.folder, msg)


def _logout(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.logout()
    with contextlib.suppress(Exception):
        conn.shutdown()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (set imap.ca_file for a private CA)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network: {exc.strerror}"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


# --- running the fetchers -----------------------------------------------------------------


def imap_mailboxes(mailboxes: list[Mailbox] | dict[str, Mailbox], only: list[str] | None = None) -> list[Mailbox]:
    boxes = list(mailboxes.values()) if isinstance(mailboxes, dict) else list(mailboxes)
    wanted = {a.strip().lower() for a in only or []}
    return [m for m in boxes if m.imap is not None and (not wanted or m.address in wanted)]


# How often the running intake asks the store for the config version in force (one
# primary-key lookup, see Store.definitions): a mailbox added, changed or removed by
# `routedesk config load` starts, restarts or stops its fetcher within about this long.
CONFIG_CHECK_SECONDS = 1.0
CHANGE_GRACE = 5.0  # seconds a fetcher stopped by a config change gets to finish its batch


@dataclass
class ImapIntake:
    """The fetchers of every mailbox with an ``imap`` section, kept in step with the config.

    With :meth:`watch` running, each new config version (``routedesk config load`` in any
    process) is applied without a restart: a mailbox that gains an ``imap`` section gets a
    fetcher, one that loses it (or is removed) has its fetcher stopped, and one whose ``imap``
    section changed has its fetcher stopped and started again with the new settings; the
    others keep their connection.
    """

    client: Client
    store: Store
    intake: IntakeSettings
    only: list[str] | None = None  # addresses to fetch (``routedesk intake imap --mailbox``)
    options: dict[str, Any] = field(default_factory=dict)  # passed to each ImapFetcher
    fetchers: dict[str, ImapFetcher] = field(default_factory=dict)
    version: int | None = None  # the config version the fetchers follow
    _watcher: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def describe(self) -> str:
        return "".join(f"  IMAP intake   {f.describe()}\n" for f in self.fetchers.values())

    def _start(self, box: Mailbox) -> None:
        fetcher = ImapFetcher(
            self.client, self.store, box, max_message_bytes=self.intake.max_message_bytes, **self.options
        )
        self.fetchers[box.address] = fetcher.start()

    def start(self, mailboxes: list[Mailbox] | dict[str, Mailbox], version: int | None = None) -> ImapIntake:
        self.version = version
        for box in imap_mailboxes(mailboxes, self.only):
            self._start(box)
        return self

    async def apply(self, mailboxes: list[Mailbox] | dict[str, Mailbox], intake: IntakeSettings) -> list[str]:
        """Make the fetchers match ``mailboxes``; returns what changed, one line each."""
        async with self._lock:
            wanted = {m.address: m for m in imap_mailboxes(mailboxes, self.only)}
            changes: list[str] = []
            stopping: list[ImapFetcher] = []
            restarting: set[str] = set()
            for address, fetcher in list(self.fetchers.items()):
                box = wanted.get(address)
                if box is None:
                    changes.append(f"stopped {address} (no imap section in the config any more)")
                elif box.imap != fetcher.mailbox.imap or intake.max_message_bytes != self.intake.max_message_bytes:
                    changes.append(f"restarted {address} (its imap settings changed)")
                    restarting.add(address)
                else:
                    fetcher.mailbox = box  # same connection; the mailbox's other options live in the store
                    continue
                stopping.append(self.fetchers.pop(address))
            # Stopped before their successors start: never two sessions on one folder.
            await asyncio.gather(*(f.stop(CHANGE_GRACE) for f in stopping))
            self.intake = intake
            for address, box in wanted.items():
                if address not in self.fetchers:
                    if address not in restarting:
                        changes.append(f"started {address}")
                    self._start(box)
            return changes

    def watch(self, interval: float = CONFIG_CHECK_SECONDS) -> ImapIntake:
        """Follow new config versions until :meth:`stop` (see the class docstring)."""
        self._watcher = asyncio.create_task(self._watch(interval), name="imap config watch")
        return self

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)  # bounded: the poll period of the version number
            try:
                defs = await asyncio.to_thread(self.store.definitions, interval)
                if defs.version == self.version:
                    continue
                intake = await asyncio.to_thread(self.store.intake_settings)
                changes = await self.apply(defs.mailboxes, intake)
                self.version = defs.version
            except Exception as exc:  # the store may be down for a while: try again next time
                log.warning("IMAP intake: cannot read the config version in force: %s", _describe(exc))
                continue
            for line in changes:
                log.info("IMAP intake, config version %s: %s", defs.version, line)

    async def stop(self, timeout: float = 10.0) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        async with self._lock:
            await asyncio.gather(*(f.stop(timeout / 2) for f in self.fetchers.values()))


def start_imap_intake(
    client: Client,
    store: Store,
    mailboxes: list[Mailbox] | dict[str, Mailbox],
    intake: IntakeSettings,
    *,
    watch: bool = False,
    only: list[str] | None = None,
    version: int | None = None,
    **kw: Any,
) -> ImapIntake:
    """Start a fetcher for each mailbox that has an ``imap`` section, on this event loop; with
    ``watch``, follow the config versions loaded from now on (``version``: the one
    ``mailboxes`` come from, default the one in force)."""
    if watch and version is None:
        version = store.definitions(max_age=0).version
    running = ImapIntake(client, store, intake, only=only, options=kw).start(mailboxes, version)
    return running.watch() if watch else running


async def serve_imap(store: Store, only: list[str] | None = None) -> int:
    """``routedesk intake imap``: run the fetchers of the loaded config until SIGINT/SIGTERM."""
    from routedesk.temporal import connect as temporal_connect

    defs = store.definitions(max_age=0)
    boxes = imap_mailboxes(defs.mailboxes, only)
    if not boxes:
        which = f" among {', '.join(only)}" if only else ""
        raise LookupError(
            f"no mailbox{which} has an imap section in the loaded config; add one and run routedesk config load FILE"
        )
    client = await temporal_connect()
    intake = store.intake_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = start_imap_intake(client, store, boxes, intake, watch=True, only=only, version=defs.version)
    print(f"routedesk IMAP intake is running\n{running.describe()}Ctrl-C stops it.", flush=True)
    try:
        await stop.wait()
    finally:
        await running.stop()
    return 0
