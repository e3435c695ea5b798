"""The API listener's exposure and transport: loopback or not, TLS credentials, the unix socket's mode.

The rule: the API may listen on a unix socket or on loopback with nothing configured. Beyond loopback
it needs TLS (`SESSION_STORE_TLS_CERT_FILE`) *and* a way for callers to prove who they are (mutual TLS
or bearer JWTs); otherwise the server refuses to start unless `SESSION_STORE_ALLOW_INSECURE_REMOTE`
says so, and then logs a warning. The health-only port (`SESSION_STORE_HEALTH_LISTEN`) serves health
alone and is not subject to the rule.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from session_store.config import AuthSettings, SettingsError

UNIX_SOCKET_MODE = 0o600
"""Only the service's own user may connect to a unix-socket listener."""


class Exposure(enum.Enum):
    """Who can reach an API listener."""

    LOCAL = "local"
    """A unix socket or a loopback address: processes of this host (pod) only."""
    PROTECTED = "protected"
    """Beyond loopback, with TLS and caller authentication."""
    INSECURE = "insecure"
    """Beyond loopback without them: allowed only by SESSION_STORE_ALLOW_INSECURE_REMOTE."""


def unix_socket_path(address: str) -> Path | None:
    """The socket file of a `unix:path` or `unix:///absolute/path` address; None for TCP addresses."""
    if not address.startswith("unix:"):
        return None
    rest = address.removeprefix("unix:")
    return Path(rest.removeprefix("//") if rest.startswith("//") else rest)


def is_loopback(address: str) -> bool:
    """Whether a `host:port` address binds loopback only (127.0.0.0/8, ::1, `localhost`).

    A wildcard (`0.0.0.0`, `[::]`, empty host), any other address and any other host name count as
    beyond loopback.
    """
    host = address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(address: str, settings: AuthSettings) -> Exposure:
    """How exposed an API listener on `address` is under `settings`.

    Raises:
        SettingsError: the listener would be reachable beyond loopback without TLS and caller
            authentication and `allow_insecure_remote` is off, or TLS is configured for a unix socket.
    """
    if unix_socket_path(address) is not None:
        if settings.tls:
            raise SettingsError(
                "SESSION_STORE_TLS_* apply to a TCP listener; a unix socket's peer is "
                "SESSION_STORE_AUTH_UNIX_IDENTITY (unset the TLS files or listen on host:port)"
            )
        return Exposure.LOCAL
    if is_loopback(address):
        return Exposure.LOCAL
    if settings.tls and (settings.mutual_tls or settings.jwt):
        return Exposure.PROTECTED
    if settings.allow_insecure_remote:
        return Exposure.INSECURE
    raise SettingsError(
        f"refusing to serve the API on {address}: beyond loopback it needs TLS "
        "(SESSION_STORE_TLS_CERT_FILE/_KEY_FILE) and caller authentication (SESSION_STORE_TLS_CLIENT_CA_FILE "
        "or SESSION_STORE_AUTH_JWT_KEYS_FILE); listen on 127.0.0.1 or a unix socket, configure them, or "
        "set SESSION_STORE_ALLOW_INSECURE_REMOTE=true (serve --allow-insecure) to accept the risk"
    )


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"SESSION_STORE_{variable}: {path} cannot be read ({exc.strerror or exc})"
        ) from None


def server_credentials(settings: AuthSettings) -> grpc.ServerCredentials | None:
    """The TLS credentials of a TCP API listener (None: plaintext), read and checked now.

    With a client CA, callers must present a certificate it signed; a caller without one (or with
    one from another CA) fails the TLS handshake, before any call: its client sees UNAVAILABLE.

    Raises:
        SettingsError: a file cannot be read or is not PEM of the expected kind.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = _read(settings.tls_cert_file, "TLS_CERT_FILE")
    key = _read(settings.tls_key_file, "TLS_KEY_FILE")
    try:
        x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise SettingsError(
            f"SESSION_STORE_TLS_CERT_FILE: {settings.tls_cert_file} is not PEM certificates"
        ) from None
    try:
        load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        # Never the key's bytes or the parser's message: only which file.
        raise SettingsError(
            f"SESSION_STORE_TLS_KEY_FILE: {settings.tls_key_file} is not an unencrypted PEM private key"
        ) from None
    ca: bytes | None = None
    if settings.tls_client_ca_file is not None:
        ca = _read(settings.tls_client_ca_file, "TLS_CLIENT_CA_FILE")
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise SettingsError(
                f"SESSION_STORE_TLS_CLIENT_CA_FILE: {settings.tls_client_ca_file} is not PEM certificates"
            ) from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
    )


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add the API listener to `server`; returns the bound TCP port (0 for a unix socket or a failure).

    A unix socket is created with mode 0600 (umask during the bind, then chmod), so only this user's
    processes can connect; TCP listeners get TLS when `credentials` are given.
    """
    path = unix_socket_path(address)
    if path is None:
        if credentials is not None:
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    previous = os.umask(0o177)  # no window in which the socket is group- or world-accessible
    try:
        port = server.add_insecure_port(address)
    finally:
        os.umask(previous)
    path.chmod(UNIX_SOCKET_MODE)
    return port
