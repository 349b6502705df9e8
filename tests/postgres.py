"""PostgreSQL for the suite: a throwaway cluster, or the server ``DATABASE_URL`` names.

The cluster is Debian's ``postgresql`` package (``make test`` installs it when missing, see
scripts/ensure-postgres.sh): ``initdb`` into a temporary directory, ``pg_ctl`` on a free
loopback port, durability switched off (the data dies with the suite anyway). PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` user the package
creates. Each test gets a database of its own, dropped after it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

HOW_TO_GET_IT = (
    "PostgreSQL is needed for the tests: install Debian's postgresql package (make test does it "
    "when run as root), or set DATABASE_URL=postgresql://USER:PASSWORD@HOST/DB to a server where USER may "
    "create databases"
)


def external_admin_url() -> str | None:
    """``DATABASE_URL`` when it names PostgreSQL: the suite then uses that server."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgresql", "postgres:")) else None


def bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's versioned directory."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Cluster:
    """A PostgreSQL cluster of its own under a temporary directory."""

    bin: Path
    root: Path
    port: int
    as_user: list[str]

    @classmethod
    def start(cls) -> Cluster:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError(HOW_TO_GET_IT)
        root = Path(tempfile.mkdtemp(prefix="routedesk-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(f"{HOW_TO_GET_IT} (as root, a 'postgres' user must exist)") from None
            os.chown(root, pw.pw_uid, pw.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        cluster = cls(bindir, root, _free_port(), as_user)
        cluster._run("initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        settings = " ".join(
            [
                f"-p {cluster.port}",
                f"-k {root}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=400",
                # A deadlock is reported after this long; the store is written not to make one.
                "-c deadlock_timeout=200ms",
            ]
        )
        cluster._run(
            "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "60", "-o", settings, "start"
        )
        return cluster

    def _run(self, program: str, *args: str) -> None:
        proc = subprocess.run(
            [*self.as_user, str(self.bin / program), *args], capture_output=True, text=True, cwd=self.root
        )
        if proc.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{program} failed ({proc.returncode}): {proc.stderr.strip()} {log[-2000:]}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _conninfo(url: str) -> str:
    """A libpq URI for psycopg from a SQLAlchemy URL (which may name the driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str) -> str:
    """A new, empty database on the server of ``admin_url``; returns its URL."""
    name = f"rd_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    assert name is not None
    with psycopg.connect(_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
