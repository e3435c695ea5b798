"""Caller authentication as the server uses it: read the files once, give it an interceptor, a bind."""

from __future__ import annotations

import grpc
import structlog

from session_store.config import AuthSettings
from session_store.security.bearer import BearerVerifier
from session_store.security.grants import load_callers
from session_store.security.interceptor import Authenticator, AuthInterceptor
from session_store.security.transport import Exposure, bind, exposure, server_credentials

log = structlog.get_logger(__name__)


class ServerSecurity:
    """The API listener's TLS, and (when authentication is on) the interceptor checking every call."""

    def __init__(self, settings: AuthSettings) -> None:
        """Read and check every file now (TLS certificate and key, client CA, JWKS, callers file).

        Raises:
            SettingsError: a file is missing or malformed (the message names the variable).
        """
        self.settings = settings
        self.credentials = server_credentials(settings)
        callers = load_callers(settings.callers_file)
        bearer = BearerVerifier(settings, callers) if settings.jwt else None
        self.interceptor: AuthInterceptor | None = (
            AuthInterceptor(Authenticator(settings, callers, bearer)) if settings.enforced else None
        )

    @property
    def mode(self) -> str:
        """How callers authenticate, for the startup log line: `off`, or e.g. `mtls+jwt`."""
        parts = [
            name
            for name, on in (
                ("mtls", self.settings.mutual_tls),
                ("jwt", self.settings.jwt),
                ("callers-file", self.settings.callers_file is not None),
            )
            if on
        ]
        return "+".join(parts) or "off"

    def check_listener(self, address: str) -> Exposure:
        """Refuse an API address reachable beyond loopback without protection (unless allowed: warn).

        Raises:
            SettingsError: see `security.transport.exposure`.
        """
        found = exposure(address, self.settings)
        if found is Exposure.INSECURE:
            detail = (
                "without TLS: tokens and session data cross the network in the clear"
                if self.settings.enforced and not self.settings.tls
                else "without caller authentication: any peer that reaches it is admin of every realm"
            )
            log.warning(
                "insecure_remote_listener",
                listen=address,
                detail=f"the API listens beyond loopback {detail} (SESSION_STORE_ALLOW_INSECURE_REMOTE)",
            )
        return found

    def bind(self, server: grpc.aio.Server, address: str) -> int:
        """Add the API listener (TLS, or a 0600 unix socket); returns the TCP port (0: unix or failure)."""
        return bind(server, address, None if address.startswith("unix:") else self.credentials)
