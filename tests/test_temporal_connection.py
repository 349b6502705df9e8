"""Connecting to a secured Temporal: settings from the environment and from Temporal's client
configuration file, and TLS (with mTLS) through a TLS-terminating proxy in front of the dev
server (tests/tls_proxy.py says why a proxy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from routedesk.temporal import TemporalConfigError, TemporalUnavailable, connect, resolve_connection
from tests.cli import routedesk
from tests.support import Stack, example_email
from tests.tls_proxy import SERVER_NAME, Certs, TlsProxy, make_certs

TEMPORAL_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_CERT_PATH",
    "TEMPORAL_TLS_CLIENT_KEY_PATH",
    "TEMPORAL_TLS_SERVER_NAME",
    "TEMPORAL_PROFILE",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No TEMPORAL_* from the caller, and a config file of our own (never the user's)."""
    for name in TEMPORAL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    return monkeypatch


def write_profiles(path: Path, certs_dir: str = "/etc/routedesk") -> Path:
    path.write_text(
        f"""
[profile.default]
address = "default-profile.example:7233"

[profile.prod]
address = "prod.example:7233"
namespace = "support-prod"

[profile.prod.tls]
server_name = "frontend.prod.example"
server_ca_cert_path = "{certs_dir}/ca.pem"
client_cert_path = "{certs_dir}/client.pem"
client_key_path = "{certs_dir}/client.key"

[profile.cloud]
address = "support.a1b2c.tmprl.cloud:7233"
namespace = "support.a1b2c"
api_key = "from-the-file"
"""
    )
    return path


def test_environment_overrides_the_profile_which_overrides_the_defaults(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conn = resolve_connection()
    assert (conn.address, conn.namespace, conn.tls, conn.profile) == ("127.0.0.1:7233", "default", False, None)

    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(write_profiles(tmp_path / "temporal.toml")))
    assert resolve_connection().address == "default-profile.example:7233"  # the default profile

    clean_env.setenv("TEMPORAL_PROFILE", "prod")
    conn = resolve_connection()
    assert (conn.address, conn.namespace, conn.tls, conn.server_name) == (
        "prod.example:7233",
        "support-prod",
        True,
        "frontend.prod.example",
    )
    assert conn.server_ca_cert == Path("/etc/routedesk/ca.pem") and conn.client_key == Path("/etc/routedesk/client.key")
    assert conn.profile == f"prod of {tmp_path / 'temporal.toml'}"

    # Each variable beats its profile value, the others still come from the profile.
    clean_env.setenv("TEMPORAL_NAMESPACE", "support-staging")
    clean_env.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", "/run/secrets/ca.pem")
    conn = resolve_connection()
    assert (conn.address, conn.namespace) == ("prod.example:7233", "support-staging")
    assert conn.server_ca_cert == Path("/run/secrets/ca.pem") and conn.client_cert == Path("/etc/routedesk/client.pem")
    clean_env.setenv("TEMPORAL_TLS", "false")
    assert resolve_connection().tls is False

    # An API key turns TLS on (Temporal Cloud); the environment's key wins.
    clean_env.delenv("TEMPORAL_TLS")
    clean_env.setenv("TEMPORAL_PROFILE", "cloud")
    clean_env.delenv("TEMPORAL_NAMESPACE")
    clean_env.delenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    conn = resolve_connection()
    assert (conn.api_key, conn.tls, conn.namespace) == ("from-the-file", True, "support.a1b2c")
    clean_env.setenv("TEMPORAL_API_KEY", "from-the-env")
    assert resolve_connection().api_key == "from-the-env"
    assert "API key" in resolve_connection().describe() and "from-the-env" not in resolve_connection().describe()


async def test_unusable_settings_fail_in_one_line_naming_what_was_tried(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(write_profiles(tmp_path / "temporal.toml")))
    clean_env.setenv("TEMPORAL_PROFILE", "staging")
    with pytest.raises(TemporalConfigError) as missing_profile:
        resolve_connection()
    assert "profile staging" in str(missing_profile.value) and "temporal.toml" in str(missing_profile.value)

    clean_env.setenv("TEMPORAL_PROFILE", "prod")  # its certificate files do not exist here
    with pytest.raises(TemporalConfigError) as unreadable:
        await connect()
    message = str(unreadable.value)
    assert "\n" not in message
    assert "cannot read the client certificate /etc/routedesk/client.pem (TEMPORAL_TLS_CLIENT_CERT_PATH)" in message
    assert message.startswith("cannot reach the Temporal server at prod.example:7233 (namespace support-prod, TLS")

    clean_env.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(TemporalConfigError, match="TEMPORAL_CONFIG_FILE names .*missing.toml, which is not a file"):
        resolve_connection()


@pytest_asyncio.fixture
async def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest_asyncio.fixture
async def mtls_proxy(client: Client, certs: Certs) -> AsyncIterator[TlsProxy]:
    proxy = await TlsProxy(certs, client.service_client.config.target_host, require_client_cert=True).start()
    yield proxy
    await proxy.close()


def tls_env(
    mp: pytest.MonkeyPatch, proxy: TlsProxy, certs: Certs, *, ca: bool = True, client_cert: bool = True
) -> None:
    mp.setenv("TEMPORAL_ADDRESS", proxy.address)
    mp.setenv("TEMPORAL_TLS", "true")
    mp.setenv("TEMPORAL_TLS_SERVER_NAME", SERVER_NAME)  # the certificate names no IP address
    if ca:
        mp.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    if client_cert:
        mp.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(certs.client_cert))
        mp.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(certs.client_key))


async def test_mtls_connection_routes_an_email_end_to_end(
    clean_env: pytest.MonkeyPatch, mtls_proxy: TlsProxy, certs: Certs, tmp_path: Path
) -> None:
    tls_env(clean_env, mtls_proxy, certs)
    secured = await connect()
    assert secured.service_client.config.target_host == mtls_proxy.address
    stack = Stack.create(secured, tmp_path / "stack", "tls", None)
    try:
        await stack.start_worker()  # polls through the proxy too
        sub = await stack.submit(example_email("03-key-account-outage.eml"))
        status = await stack.queued(sub.workflow_id)
        assert status.queue == "vip" and status.case_number
    finally:
        await stack.close()


async def test_tls_without_the_ca_or_the_client_certificate_fails_in_one_line(
    clean_env: pytest.MonkeyPatch, mtls_proxy: TlsProxy, certs: Certs
) -> None:
    tls_env(clean_env, mtls_proxy, certs, ca=False)
    with pytest.raises(TemporalUnavailable) as untrusted:
        await connect()
    message = str(untrusted.value)
    assert "\n" not in message and message.startswith(f"cannot reach the Temporal server at {mtls_proxy.address} (")
    assert "TEMPORAL_TLS_SERVER_CA_CERT_PATH" in message  # the hint: which CA to trust

    # The CA now, but no client certificate: the proxy requires one, as an mTLS cluster does.
    clean_env.delenv("TEMPORAL_TLS_CLIENT_CERT_PATH")
    clean_env.delenv("TEMPORAL_TLS_CLIENT_KEY_PATH")
    clean_env.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
    with pytest.raises(TemporalUnavailable) as no_client_cert:
        await connect()
    assert "\n" not in str(no_client_cert.value) and f"CA {certs.ca}" in str(no_client_cert.value)


async def test_cli_reads_a_profile_from_the_config_file_and_reports_tls_failures(
    mtls_proxy: TlsProxy, certs: Certs, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(
        f"""
[profile.secure]
address = "{mtls_proxy.address}"
[profile.secure.tls]
server_name = "{SERVER_NAME}"
server_ca_cert_path = "{certs.ca}"
client_cert_path = "{certs.client_cert}"
client_key_path = "{certs.client_key}"
"""
    )
    env = {"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "secure", "TEMPORAL_ADDRESS": ""}
    ok = await routedesk("temporal", "setup", "--check", env=env)
    assert ok.code == 0, ok.err
    assert f"registered on namespace default at {mtls_proxy.address}" in ok.out

    # An empty variable counts as unset: the profile's certificate still applies.
    empty = await routedesk("temporal", "setup", "--check", env={**env, "TEMPORAL_TLS_CLIENT_CERT_PATH": ""})
    assert empty.code == 0, empty.err
    # A variable beats the profile: the wrong CA now.
    wrong_ca = await routedesk(
        "temporal", "setup", "--check", env={**env, "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certs.client_cert)}
    )
    assert wrong_ca.code == 2 and "Traceback" not in wrong_ca.err
    assert len(wrong_ca.err.strip().splitlines()) == 1
    assert f"cannot reach the Temporal server at {mtls_proxy.address} (TLS, CA {certs.client_cert}" in wrong_ca.err
    assert "profile secure of" in wrong_ca.err
