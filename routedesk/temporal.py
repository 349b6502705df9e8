"""Connecting to Temporal: the dev server, a secured cluster or Temporal Cloud.

Where the connection settings come from, highest first:

1. the environment (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``,
   ``TEMPORAL_TLS``, ``TEMPORAL_TLS_SERVER_CA_CERT_PATH``, ``TEMPORAL_TLS_CLIENT_CERT_PATH``,
   ``TEMPORAL_TLS_CLIENT_KEY_PATH``, ``TEMPORAL_TLS_SERVER_NAME``), read through
   :class:`routedesk.settings.Settings`; the names are Temporal's own, so the ``temporal``
   CLI beside us reads the same ones;
2. the profile ``TEMPORAL_PROFILE`` (default ``default``) of Temporal's client configuration
   file (``TEMPORAL_CONFIG_FILE``, else ``~/.config/temporalio/temporal.toml``), loaded with
   the SDK's environment-configuration support (:mod:`temporalio.envconfig`);
3. the embedded defaults: ``127.0.0.1:7233``, namespace ``default``, no TLS.

A failure is one line naming what was tried: address, namespace, TLS files, profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, DataSource
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from routedesk.settings import DEFAULT_TEMPORAL_ADDRESS, Settings, get_settings

DEFAULT_NAMESPACE = "default"


class TemporalUnavailable(Exception):
    def __init__(self, address: str, detail: str, how: str = "") -> None:
        self.address = address
        where = f"{address} ({how})" if how else address
        super().__init__(f"cannot reach the Temporal server at {where}: {detail}")


class TemporalConfigError(TemporalUnavailable):
    """The connection settings themselves are unusable (a missing file, an unknown profile)."""


@dataclass(frozen=True)
class Connection:
    """Where and how to connect, with each value's source resolved (see the module doc)."""

    address: str = DEFAULT_TEMPORAL_ADDRESS
    namespace: str = DEFAULT_NAMESPACE
    api_key: str | None = None
    tls: bool = False
    server_ca_cert: DataSource | None = None  # a Path, or PEM text given inline in the profile
    client_cert: DataSource | None = None
    client_key: DataSource | None = None
    server_name: str | None = None
    rpc_metadata: dict[str, str] = field(default_factory=dict)
    profile: str | None = None  # "prod of /etc/temporal.toml" when a profile supplied anything

    def describe(self) -> str:
        """What was tried beyond the address, for error lines; empty for the plain default."""
        parts = []
        if self.namespace != DEFAULT_NAMESPACE:
            parts.append(f"namespace {self.namespace}")
        if self.tls:
            tls = "TLS"
            if self.server_ca_cert is not None:
                tls += f", CA {_name(self.server_ca_cert)}"
            if self.client_cert is not None:
                tls += f", client cert {_name(self.client_cert)}"
            if self.server_name:
                tls += f", server name {self.server_name}"
            parts.append(tls)
        if self.api_key:
            parts.append("API key")
        if self.profile:
            parts.append(f"profile {self.profile}")
        return ", ".join(parts)


def _name(source: DataSource) -> str:
    return str(source) if isinstance(source, Path) else "inline PEM"


def default_config_file() -> Path:
    """Where Temporal's tools look for the client configuration file on Linux (for messages)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "temporalio" / "temporal.toml"


def _load_profile(s: Settings) -> tuple[ClientConfigProfile, str | None]:
    file = s.temporal_config_file
    where = file or str(default_config_file())
    name = s.temporal_profile or "default"
    if file and not Path(file).is_file():
        raise TemporalConfigError(
            s.temporal_address or DEFAULT_TEMPORAL_ADDRESS, f"TEMPORAL_CONFIG_FILE names {file}, which is not a file"
        )
    try:
        # The file only: the environment is read by Settings, so every variable has one home.
        profile = ClientConfigProfile.load(
            s.temporal_profile, config_source=Path(file) if file else None, disable_env=True
        )
    except Exception as exc:  # the SDK's ConfigError: a TOML error or an unknown profile
        detail = " ".join(str(exc).split())[:200]
        raise TemporalConfigError(
            s.temporal_address or DEFAULT_TEMPORAL_ADDRESS,
            f"cannot use profile {name} of the Temporal client configuration {where}: {detail}",
        ) from None
    used = profile.address or profile.namespace or profile.api_key or profile.tls or profile.grpc_meta
    return profile, (f"{name} of {where}" if used else None)


def resolve_connection(s: Settings | None = None) -> Connection:
    """The connection in effect: environment over the profile over the defaults."""
    s = s or get_settings()
    profile, origin = _load_profile(s)
    ptls = profile.tls or ClientConfigTLS()
    env_key = s.temporal_api_key.get_secret_value() if s.temporal_api_key else None
    api_key = env_key or profile.api_key

    def path(value: str | None, from_profile: DataSource | None) -> DataSource | None:
        return Path(value) if value else from_profile

    ca = path(s.temporal_tls_server_ca_cert_path, ptls.server_root_ca_cert)
    cert = path(s.temporal_tls_client_cert_path, ptls.client_cert)
    key = path(s.temporal_tls_client_key_path, ptls.client_private_key)
    server_name = s.temporal_tls_server_name or ptls.server_name
    env_tls_files = (
        s.temporal_tls_server_ca_cert_path
        or s.temporal_tls_client_cert_path
        or s.temporal_tls_client_key_path
        or s.temporal_tls_server_name
    )
    if s.temporal_tls is not None:
        tls = s.temporal_tls
    elif env_tls_files or env_key:
        tls = True
    elif profile.tls is not None:
        tls = ptls.disabled is not True
    else:
        tls = bool(api_key)  # an API key is only ever sent over TLS (Temporal Cloud)
    return Connection(
        address=s.temporal_address or profile.address or DEFAULT_TEMPORAL_ADDRESS,
        namespace=s.temporal_namespace or profile.namespace or DEFAULT_NAMESPACE,
        api_key=api_key,
        tls=tls,
        server_ca_cert=ca,
        client_cert=cert,
        client_key=key,
        server_name=server_name,
        rpc_metadata=dict(profile.grpc_meta),
        profile=origin,
    )


def _read(conn: Connection, source: DataSource | None, what: str, variable: str) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, Path):
        try:
            return source.read_bytes()
        except OSError as exc:
            raise TemporalConfigError(
                conn.address, f"cannot read the {what} {source} ({variable}): {exc.strerror or exc}", conn.describe()
            ) from None
    return source.encode() if isinstance(source, str) else source


def tls_config(conn: Connection) -> TLSConfig | bool:
    if not conn.tls:
        return False
    cert = _read(conn, conn.client_cert, "client certificate", "TEMPORAL_TLS_CLIENT_CERT_PATH")
    key = _read(conn, conn.client_key, "client key", "TEMPORAL_TLS_CLIENT_KEY_PATH")
    if (cert is None) != (key is None):
        raise TemporalConfigError(
            conn.address,
            "mTLS needs both a client certificate and its key "
            "(TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH)",
            conn.describe(),
        )
    return TLSConfig(
        server_root_ca_cert=_read(
            conn, conn.server_ca_cert, "server CA certificate", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"
        ),
        domain=conn.server_name,
        client_cert=cert,
        client_private_key=key,
    )


def _hint(conn: Connection, detail: str) -> str:
    lowered = detail.lower()
    if conn.tls and ("certificate" in lowered or "unknownissuer" in lowered):
        if conn.server_ca_cert is None:
            return "; set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed the server's certificate"
        return "; is TEMPORAL_TLS_SERVER_CA_CERT_PATH the CA that signed the server's certificate?"
    if conn.tls and "notvalidforname" in lowered:
        return "; set TEMPORAL_TLS_SERVER_NAME to a name in the server's certificate"
    return ""


async def connect(
    address: str | None = None, namespace: str | None = None, *, runtime: Runtime | None = None
) -> Client:
    """A client with the pydantic data converter, or :class:`TemporalUnavailable` in one line.

    ``runtime`` carries the SDK's own metrics exporter in the service processes
    (routedesk/metrics.py).
    """
    conn = resolve_connection()
    if address:
        conn = replace(conn, address=address)
    if namespace:
        conn = replace(conn, namespace=namespace)
    tls = tls_config(conn)
    try:
        return await Client.connect(
            conn.address,
            namespace=conn.namespace,
            api_key=conn.api_key,
            tls=tls,
            rpc_metadata=conn.rpc_metadata,
            data_converter=pydantic_data_converter,
            runtime=runtime,
        )
    except (RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split()).removeprefix("Failed client connect: ")
        raise TemporalUnavailable(conn.address, detail[:300] + _hint(conn, detail), conn.describe()) from None
