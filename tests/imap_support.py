"""A real IMAP server for the tests: Debian's Dovecot on free loopback ports, throwaway config.

``running_dovecot()`` writes a configuration under a temporary directory (passwd-file users
with plaintext passwords, maildir mail, a self-signed certificate made here for the
implicit-TLS port) and runs ``dovecot -c CONFIG -F`` in the foreground as a child process.
``scripts/dovecot.sh`` (run by ``make test``) installs Dovecot when it is missing.
"""

from __future__ import annotations

import contextlib
import getpass
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routedesk.config import ImapSettings, RoutingConfig
from routedesk.imap_positions import position
from routedesk.models import ImapPositionRow
from starter.imap import ImapFetcher
from tests.intake_support import config_with, free_port
from tests.support import Stack, self_signed

SUPPORT = "support@acme.example"


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if found is None:
        raise RuntimeError(
            "Dovecot is not installed: run scripts/dovecot.sh (make test does) or apt-get install dovecot-imapd"
        )
    return found


@dataclass
class Dovecot:
    root: Path
    port: int  # plaintext, STARTTLS offered
    tls_port: int  # implicit TLS
    cert: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def add_user(self, password: str = "secret", name: str | None = None) -> str:
        """A fresh user with a maildir of its own.

        One passwd-file per user: Dovecot re-reads a changed passwd-file at most once a second,
        so a user added to a shared file could be refused for up to a second; a new file is
        read at the first login.
        """
        name = name or f"u{uuid.uuid4().hex[:10]}"
        self.users[name] = password
        (self.root / "users").mkdir(exist_ok=True)
        (self.root / "users" / name).write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        return name

    @contextlib.contextmanager
    def session(self, user: str) -> Iterator[imaplib.IMAP4]:
        """The test's own IMAP connection, to deliver mail and look at flags."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            conn.login(user, self.users[user])
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def append(self, user: str, *raws: bytes, folder: str = "INBOX") -> None:
        with self.session(user) as conn:
            for raw in raws:
                typ, data = conn.append(quote(folder), None, None, raw)
                assert typ == "OK", data

    def create(self, user: str, folder: str) -> None:
        with self.session(user) as conn:
            typ, data = conn.create(quote(folder))
            assert typ == "OK", data

    def delete(self, user: str, folder: str) -> None:
        with self.session(user) as conn:
            typ, data = conn.delete(quote(folder))
            assert typ == "OK", data

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in the folder."""
        with self.session(user) as conn:
            typ, data = conn.select(quote(folder), readonly=True)
            assert typ == "OK", data
            if int(data[0] or 0) == 0:
                return {}
            typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
            out: dict[int, set[str]] = {}
            for item in data:
                text = item.decode() if isinstance(item, bytes) else ""
                m = re.search(r"UID (\d+) FLAGS \(([^)]*)\)", text) or re.search(r"FLAGS \(([^)]*)\) UID (\d+)", text)
                if m and m.re.pattern.startswith("UID"):
                    out[int(m.group(1))] = set(m.group(2).split())
                elif m:
                    out[int(m.group(2))] = set(m.group(1).split())
            return out

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        with self.session(user) as conn:
            typ, data = conn.status(quote(folder), "(UIDVALIDITY)")
            assert typ == "OK", data
            m = re.search(rb"UIDVALIDITY (\d+)", data[0] or b"")
            assert m, data
            return int(m.group(1))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    binary = dovecot_binary()
    root = Path(tempfile.mkdtemp(prefix="rd-dovecot-"))  # short: Dovecot's sockets live here
    dv: Dovecot | None = None
    try:
        (root / "mail").mkdir()
        cert, key = self_signed(root)
        if os.geteuid() == 0:
            # Dovecot never accesses mail as root; its own system user does (the package made it).
            mail_user = pwd.getpwnam("dovecot")
            root.chmod(0o755)
            os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
            users = ""
        else:
            mail_user = pwd.getpwuid(os.geteuid())
            me = getpass.getuser()
            users = f"default_internal_user = {me}\ndefault_login_user = {me}\n"
        dv = Dovecot(root, free_port(), free_port(), cert, root / "dovecot.log")
        dv.add_user("secret", name="probe")
        (root / "dovecot.conf").write_text(
            f"""# throwaway test configuration (tests/imap_support.py)
base_dir = {root}/run
state_dir = {root}/state
log_path = {dv.log}
{users}protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
mail_location = maildir:{root}/mail/%u
mail_fsync = never
mailbox_idle_check_interval = 1 secs
mail_max_userip_connections = 500
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={root}/mail/%u
}}
# No growing delay after failed logins from the loopback: tests fail logins on purpose.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {dv.port}
  }}
  inet_listener imaps {{
    port = {dv.tls_port}
    ssl = yes
  }}
}}
"""
        )
        dv.proc = subprocess.Popen(
            [binary, "-c", str(root / "dovecot.conf"), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "stderr.log", "wb"),  # noqa: SIM115  (owned by the child)
        )
        deadline = time.monotonic() + 20
        while not (_listening(dv.port) and _listening(dv.tls_port)):
            if dv.proc.poll() is not None or time.monotonic() > deadline:
                err = (root / "stderr.log").read_text(errors="replace") + dv.log_text()
                raise RuntimeError(f"Dovecot did not start: {err.strip()[-2000:]}")
            time.sleep(0.05)  # bounded: the deadline above ends the wait
        yield dv
    finally:
        if dv is not None and dv.proc is not None and dv.proc.poll() is None:
            dv.proc.terminate()
            try:
                dv.proc.wait(10)
            except subprocess.TimeoutExpired:
                dv.proc.kill()
        shutil.rmtree(root, ignore_errors=True)


# --- routedesk side ---------------------------------------------------------------------


def imap_config(
    dv: Dovecot,
    user: str,
    *,
    password_env: str | None = "RD_TEST_IMAP_PASSWORD",
    base: RoutingConfig | None = None,
    **imap: Any,
) -> RoutingConfig:
    """A config (the example by default) whose support mailbox fetches ``user``'s mail from the
    test server."""
    section: dict[str, Any] = {"host": dv.host, "port": dv.port, "tls": "none", "username": user}
    if password_env and not any(k in imap for k in ("oauth2_token_env", "oauth2_token_file")):
        section["password_env"] = password_env
    section.update(imap)
    cfg = (base or config_with()).model_copy(deep=True)
    box = cfg.mailbox(SUPPORT)
    assert box is not None
    box.imap = ImapSettings.model_validate(section)
    return cfg


@contextlib.asynccontextmanager
async def fetching(stack: Stack, **kw: Any) -> AsyncIterator[ImapFetcher]:
    """A running fetcher for the stack's support mailbox; stopped at the end."""
    box = stack.config.mailbox(SUPPORT)
    assert box is not None and box.imap is not None
    kw.setdefault("backoff_initial", 0.1)
    fetcher = ImapFetcher(
        stack.client, stack.store, box, task_queue=stack.task_queue, id_prefix=stack.id_prefix, **kw
    ).start()
    try:
        yield fetcher
    finally:
        await fetcher.stop()


def position_row(stack: Stack, folder: str = "INBOX") -> ImapPositionRow | None:
    return position(stack.store, SUPPORT, folder)
