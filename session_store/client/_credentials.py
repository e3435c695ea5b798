"""What a client proves to the server, shared by both clients: TLS material and a bearer token.

A client on loopback or a unix socket (`unix:/path`) of a server without caller authentication needs
neither. Against a server with mutual TLS it passes `ClientTLS` with a client certificate; against a
server that verifies JWTs it passes `token`, a string or a callable asked before every call (so a
token that the caller refreshes is always the current one). The token travels as
``authorization: Bearer <token>`` metadata and is never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

TokenSource = str | Callable[[], str]
"""A bearer token, or a callable returning the current one (called before every call)."""


@dataclass(frozen=True, kw_only=True)
class ClientTLS:
    """TLS to the server: the CA that signed its certificate and, for mutual TLS, ours.

    Example::

        tls = ClientTLS.from_files(ca_file="ca.pem", cert_file="idp.pem", key_file="idp-key.pem")
        async with AsyncSessionStoreClient("session-store:50051", tls=tls) as store: ...
    """

    root_certificates: bytes | None = None
    """PEM CA certificates that verify the server; None: the system's trust store."""
    certificate_chain: bytes | None = None
    """PEM client certificate (chain) for mutual TLS; None: present none."""
    private_key: bytes | None = field(default=None, repr=False)
    """PEM private key of `certificate_chain` (never shown by repr)."""
    server_name: str = ""
    """The name expected in the server's certificate when the target address is not that name."""

    def __post_init__(self) -> None:
        """Check that a client certificate comes with its key.

        Raises:
            ValueError: only one of `certificate_chain` and `private_key` is given.
        """
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("certificate_chain and private_key go together")

    @classmethod
    def from_files(
        cls,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str = "",
    ) -> ClientTLS:
        """TLS material read from PEM files.

        Raises:
            OSError: a file cannot be read.
            ValueError: only one of `cert_file` and `key_file` is given.
        """

        def read(path: str | Path | None) -> bytes | None:
            return None if path is None else Path(path).read_bytes()

        return cls(
            root_certificates=read(ca_file),
            certificate_chain=read(cert_file),
            private_key=read(key_file),
            server_name=server_name,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials of this material."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """Channel options this material needs (the expected server name, when set)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def auth_metadata(token: TokenSource | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata that carries the bearer token (None without one).

    Raises:
        ValueError: the token (or what the callable returned) is empty or not a string.
    """
    if token is None:
        return None
    value = token() if callable(token) else token
    if not isinstance(value, str) or not value.strip():
        raise ValueError("the bearer token is empty")
    return (("authorization", f"Bearer {value.strip()}"),)
