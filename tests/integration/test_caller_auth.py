"""Caller authentication and per-realm authorisation on a real server: mutual TLS with certificates made
here, bearer JWTs signed here, the unix-socket peer, the listener exposure rule, and no secret in logs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ipaddress
import json
import re
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import jwt
import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from jwt.algorithms import ECAlgorithm

from session_store import (
    AsyncSessionStoreClient,
    ClientTLS,
    EventType,
    PermissionDeniedError,
    RealmPolicy,
    SessionNotFoundError,
    SessionStoreClient,
    UnauthenticatedError,
    UnavailableError,
)
from session_store.config import AuthSettings, Settings, SettingsError, ShardSettings
from session_store.errors import ERROR_DOMAIN
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from session_store.v1 import events_pb2, events_pb2_grpc

pytestmark = pytest.mark.timeout(60)

REALM = "realm-a"
OTHER = "realm-b"
ISSUER = "https://idp.test/realms/master"
AUDIENCE = "session-store"
KID = "k1"
ANY_ADDRESS = "0.0.0.0:0"  # handed to a start that must refuse it before binding


# -- certificates ----------------------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (fast to make)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    sans: tuple[x509.GeneralName, ...] = (),
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer_key` (self-signed CA when `issuer` is None)."""
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pki:
    """A CA, the server's certificate, client certificates of the CA and one of another CA (files too)."""

    directory: Path
    ca: bytes
    clients: dict[str, tuple[bytes, bytes]]

    def client_tls(self, name: str | None) -> ClientTLS:
        """TLS material of client `name` (None: no client certificate), trusting our CA."""
        if name is None:
            return ClientTLS(root_certificates=self.ca)
        cert, key = self.clients[name]
        return ClientTLS(root_certificates=self.ca, certificate_chain=cert, private_key=key)

    def auth(self, callers: Path) -> AuthSettings:
        """Mutual TLS with our CA, grants from `callers`."""
        return AuthSettings(
            tls_cert_file=self.directory / "server.pem",
            tls_key_file=self.directory / "server-key.pem",
            tls_client_ca_file=self.directory / "ca.pem",
            callers_file=callers,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for this module: server (127.0.0.1), `idp` (URI SAN), `ops`, `stranger`, `rogue`."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, other_ca_key = new_key(), new_key()
    ca = certificate("test-ca", ca_key, None, ca_key)
    other_ca = certificate("other-ca", other_ca_key, None, other_ca_key)
    server_key = new_key()
    server = certificate(
        "session-store",
        server_key,
        ca,
        ca_key,
        sans=(x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")),
    )
    (directory / "ca.pem").write_bytes(pem(ca))
    (directory / "server.pem").write_bytes(pem(server))
    (directory / "server-key.pem").write_bytes(key_pem(server_key))
    clients: dict[str, tuple[bytes, bytes]] = {}
    for name, cn, sans, issuer, issuer_key in (
        (
            "idp",
            "idp-node-1",
            (x509.UniformResourceIdentifier("spiffe://test/idp"), x509.DNSName("idp.test")),
            ca,
            ca_key,
        ),
        ("ops", "ops", (), ca, ca_key),
        ("stranger", "stranger", (), ca, ca_key),
        ("rogue", "ops", (), other_ca, other_ca_key),  # the name of a real caller, the wrong CA
    ):
        key = new_key()
        clients[name] = (pem(certificate(cn, key, issuer, issuer_key, sans=sans)), key_pem(key))
    return Pki(directory, pem(ca), clients)


# -- tokens ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """The key that signs callers' tokens (published as KID in `jwks`), and a key nobody trusts."""

    key: ec.EllipticCurvePrivateKey
    stranger_key: ec.EllipticCurvePrivateKey
    jwks: Path

    def token(
        self,
        *,
        sub: str = "idp",
        role: str | None = "write",
        realms: list[str] | None = None,
        exp_in: float = 300,
        nbf_in: float | None = None,
        aud: str = AUDIENCE,
        iss: str = ISSUER,
        kid: str = KID,
        key: ec.EllipticCurvePrivateKey | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        """An ES256 token; each argument bends one claim or header field."""
        now = time.time()
        claims: dict[str, Any] = {
            "iss": iss,
            "aud": aud,
            "sub": sub,
            "iat": int(now),
            "exp": int(now + exp_in),
        }
        if role is not None:
            claims["role"] = role
            claims["realms"] = [REALM] if realms is None else realms
        if nbf_in is not None:
            claims["nbf"] = int(now + nbf_in)
        for name in drop:
            del claims[name]
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": kid})

    def auth(self, callers: Path | None = None) -> AuthSettings:
        """Bearer JWTs with our JWKS; grants from `callers` for tokens without a role claim."""
        return AuthSettings(jwt_keys_file=self.jwks, jwt_issuer=ISSUER, callers_file=callers)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A P-256 signing key published in a JWKS file, and a stranger's key."""
    key = new_key()
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig"}]}))
    return Signer(key, new_key(), path)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS built by hand (for headers pyjwt would not produce)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)))


# -- servers and clients ----------------------------------------------------------------------------------

Start = Callable[..., Awaitable[SessionStoreServer]]


@pytest.fixture
async def start(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock, settings: Settings
) -> AsyncIterator[Start]:
    """Starts in-process servers with given AuthSettings (on 127.0.0.1:0 unless told); stops them after."""
    servers: list[SessionStoreServer] = []

    # No sweeper or keyspace listener: these tests need neither (the scripts append Watch's events),
    # and background tasks of a server stopped right after its start are slow to end on a busy machine.
    events = dataclasses.replace(settings.events, sweeper=False, notifications=False)

    async def _start(auth: AuthSettings, listen: str = "127.0.0.1:0") -> SessionStoreServer:
        srv = SessionStoreServer(
            dataclasses.replace(settings, auth=auth, listen=listen, events=events),
            flushed_shards,
            clock=clock,
        )
        await srv.start()
        servers.append(srv)
        return srv

    yield _start
    for srv in servers:
        await srv.stop(grace=0)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ss-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_callers(directory: Path, grants: dict[str, tuple[list[str], str]]) -> Path:
    """A callers file (JSON) granting each identity its (realms, role)."""
    path = directory / "callers.json"
    document = {
        "callers": {identity: {"realms": realms, "role": role} for identity, (realms, role) in grants.items()}
    }
    path.write_text(json.dumps(document))
    return path


def client(port: int, **kwargs: Any) -> AsyncSessionStoreClient:
    """An async client of 127.0.0.1:`port` that tries each call once."""
    return AsyncSessionStoreClient(f"127.0.0.1:{port}", max_attempts=1, **kwargs)


def error_reason(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str]:
    """(code, ErrorInfo reason, ErrorInfo domain) of a failed raw call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]  # an AioRpcError carries the trailers
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return err.code(), info.reason, info.domain


# -- mutual TLS -------------------------------------------------------------------------------------------


class TestMutualTls:
    @pytest.fixture
    async def srv(self, start: Start, pki: Pki, tmp_path: Path) -> SessionStoreServer:
        """A server requiring client certificates of our CA; idp writes realm-a, ops administers all."""
        callers = write_callers(
            tmp_path,
            {"tls:spiffe://test/idp": ([REALM], "write"), "tls:ops": (["*"], "admin")},
        )
        return await start(pki.auth(callers))

    async def test_certificate_of_the_ca_is_accepted_for_its_realms(
        self, srv: SessionStoreServer, pki: Pki
    ) -> None:
        """The idp certificate (named by its URI SAN) writes in realm-a and is refused realm-b."""
        async with client(srv.port, tls=pki.client_tls("idp")) as store:
            session = await store.create_user_session(REALM, "user-1")
            assert REALM == (await store.get_user_session(REALM, session.id)).realm
            with pytest.raises(PermissionDeniedError, match="tls:spiffe://test/idp may not write in realm"):
                await store.create_user_session(OTHER, "user-1")

    @pytest.mark.parametrize("name", [None, "rogue"])
    async def test_no_certificate_or_another_ca_fails_the_handshake(
        self, srv: SessionStoreServer, pki: Pki, name: str | None
    ) -> None:
        """Without a client certificate, or with one of another CA (even named `ops`), no call runs."""
        async with client(srv.port, tls=pki.client_tls(name)) as store:
            with pytest.raises(UnavailableError):
                await store.create_user_session(REALM, "user-1")
        async with client(srv.port, tls=pki.client_tls("ops")) as admin:
            assert 0 == await admin.count_sessions(REALM)

    async def test_plaintext_caller_is_refused(self, srv: SessionStoreServer) -> None:
        """A plaintext client cannot talk to the TLS listener at all."""
        async with client(srv.port) as store:
            with pytest.raises(UnavailableError):
                await store.get_user_session(REALM, "x" * 24)

    async def test_certificate_without_grant_is_denied(self, srv: SessionStoreServer, pki: Pki) -> None:
        """A certificate of our CA whose name the callers file does not list may do nothing."""
        async with client(srv.port, tls=pki.client_tls("stranger")) as store:
            with pytest.raises(PermissionDeniedError, match="tls:stranger has no grant"):
                await store.count_sessions(REALM)

    async def test_admin_certificate_may_change_policy_and_remove_a_realm(
        self, srv: SessionStoreServer, pki: Pki
    ) -> None:
        """The ops certificate (named by its CN) sets a policy and removes a realm; idp may not."""
        async with client(srv.port, tls=pki.client_tls("ops")) as ops:
            await ops.set_realm_policy(RealmPolicy(realm=OTHER, sso_session_idle_timeout=600))
            assert 0 == (await ops.remove_sessions(OTHER)).removed
        async with client(srv.port, tls=pki.client_tls("idp")) as idp:
            with pytest.raises(PermissionDeniedError, match="admin"):
                await idp.remove_sessions(REALM)
            with pytest.raises(PermissionDeniedError, match="admin"):
                await idp.set_realm_policy(RealmPolicy(realm=REALM))

    async def test_blocking_client_with_tls(self, srv: SessionStoreServer, pki: Pki) -> None:
        """SessionStoreClient takes the same TLS material."""

        def run() -> str:
            with SessionStoreClient(f"127.0.0.1:{srv.port}", tls=pki.client_tls("idp"), max_attempts=1) as s:
                return s.create_user_session(REALM, "user-2").realm

        assert REALM == await asyncio.to_thread(run)


# -- bearer JWTs ------------------------------------------------------------------------------------------


class TestBearerTokens:
    @pytest.fixture
    async def srv(self, start: Start, signer: Signer, tmp_path: Path) -> SessionStoreServer:
        """A loopback server verifying JWTs; `jwt:batch` (no role claim) reads realm-a (callers file)."""
        return await start(signer.auth(write_callers(tmp_path, {"jwt:batch": ([REALM], "read")})))

    async def test_valid_token_is_accepted(self, srv: SessionStoreServer, signer: Signer) -> None:
        """A token with the right issuer, audience, key and times writes in its realm."""
        async with client(srv.port, token=signer.token()) as store:
            assert REALM == (await store.create_user_session(REALM, "user-1")).realm

    async def test_expiry_within_the_leeway_is_accepted(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """A token that expired 10 s ago is still inside the default 30 s leeway."""
        async with client(srv.port, token=signer.token(exp_in=-10)) as store:
            await store.create_user_session(REALM, "user-1")

    @pytest.mark.parametrize(
        ("bend", "message"),
        [
            ({"exp_in": -120}, "expired"),
            ({"aud": "another-service"}, "audience"),
            ({"iss": "https://evil.test"}, "issuer"),
            ({"nbf_in": 300}, "not valid yet"),
            ({"kid": "k-unknown"}, "unknown key"),
            ({"drop": ("exp",)}, "'exp' claim"),
            ({"drop": ("sub",)}, "'sub' claim"),
            ({"role": "owner"}, "claim 'role' is not"),
        ],
    )
    async def test_bad_claims_are_unauthenticated(
        self, srv: SessionStoreServer, signer: Signer, bend: dict[str, Any], message: str
    ) -> None:
        """Each wrong claim is UNAUTHENTICATED with a message naming it, and nothing runs."""
        async with client(srv.port, token=signer.token(**bend)) as store:
            with pytest.raises(UnauthenticatedError, match=message):
                await store.create_user_session(REALM, "user-1")
        async with client(srv.port, token=signer.token()) as store:
            assert 0 == await store.count_sessions(REALM)

    async def test_signature_of_another_key_is_unauthenticated(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """A token signed by a key that is not the one its kid names does not verify."""
        async with client(srv.port, token=signer.token(key=signer.stranger_key)) as store:
            with pytest.raises(UnauthenticatedError, match="signature"):
                await store.count_sessions(REALM)

    @pytest.mark.parametrize(
        ("token", "message"),
        [
            (
                unsigned({"alg": "none", "kid": KID}, {"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}),
                "algorithm",
            ),
            (
                jwt.encode(
                    {
                        "iss": ISSUER,
                        "aud": AUDIENCE,
                        "sub": "x",
                        "exp": 4102444800,
                        "role": "admin",
                        "realms": "*",
                    },
                    "a-shared-secret-of-at-least-32-bytes!",
                    algorithm="HS256",
                    headers={"kid": KID},
                ),
                "algorithm",
            ),
            (unsigned({"alg": "RS256", "kid": KID}, {"sub": "x"}, b"sig"), "does not fit its key"),
            (unsigned({"alg": "ES256"}, {"sub": "x"}, b"sig"), "no key"),
            ("not-a-jwt", "not a signed JWT"),
        ],
    )
    async def test_refused_algorithms_and_malformed_tokens(
        self, srv: SessionStoreServer, token: str, message: str
    ) -> None:
        """`none`, HS256 (a shared secret), an RSA alg on an EC key, no kid and garbage are refused."""
        async with client(srv.port, token=token) as store:
            with pytest.raises(UnauthenticatedError, match=message):
                await store.count_sessions(REALM)

    async def test_missing_token_is_unauthenticated(self, srv: SessionStoreServer) -> None:
        """A call without credentials is UNAUTHENTICATED, with the ErrorInfo reason of the error tree."""
        async with client(srv.port) as store:
            with pytest.raises(UnauthenticatedError, match="no credentials"):
                await store.count_sessions(REALM)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = events_pb2_grpc.SessionEventsStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEventStats(events_pb2.GetEventStatsRequest(), timeout=5)
        assert (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", ERROR_DOMAIN) == error_reason(
            caught.value
        )

    async def test_other_schemes_and_repeated_headers_are_unauthenticated(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """`Basic …` is not a bearer token; two authorization headers are refused."""
        bearer = ("authorization", f"Bearer {signer.token()}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = events_pb2_grpc.SessionEventsStub(channel)
            for metadata in ((("authorization", "Basic dXNlcjpwdw=="),), (bearer, bearer)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetEventStats(events_pb2.GetEventStatsRequest(), metadata=metadata, timeout=5)
                assert grpc.StatusCode.UNAUTHENTICATED == caught.value.code()

    async def test_token_without_role_takes_the_callers_file_grant(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """`jwt:batch` carries no role claim: the callers file lets it read realm-a, not write."""
        async with client(srv.port, token=signer.token(sub="batch", role=None)) as store:
            with pytest.raises(SessionNotFoundError):
                await store.get_user_session(REALM, "x" * 24)
            with pytest.raises(PermissionDeniedError, match="needs the write role"):
                await store.create_user_session(REALM, "user-1")
        async with client(srv.port, token=signer.token(sub="nobody", role=None)) as store:
            with pytest.raises(PermissionDeniedError, match="jwt:nobody has no grant"):
                await store.count_sessions(REALM)

    async def test_token_callable_is_asked_before_every_call(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """A callable token source is called per call, so a refreshed token is used at once."""
        asked: list[int] = []

        def token() -> str:
            asked.append(1)
            return signer.token()

        async with client(srv.port, token=token) as store:
            await store.count_sessions(REALM)
            await store.count_sessions(REALM)
        assert 2 == len(asked)

    async def test_health_is_public_and_reflection_is_not(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """Health answers without credentials; the reflection stream needs an authenticated caller."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]  # the stubs lack the generated methods
            assert health_pb2.HealthCheckResponse.SERVING == reply.status
            reflection: Any = reflection_pb2_grpc.ServerReflectionStub(cast("grpc.Channel", channel))
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in reflection.ServerReflectionInfo(iter([request]), timeout=5):
                    pass
            assert grpc.StatusCode.UNAUTHENTICATED == caught.value.code()
            reader = (("authorization", f"Bearer {signer.token(role='read')}"),)
            replies = [
                r async for r in reflection.ServerReflectionInfo(iter([request]), metadata=reader, timeout=5)
            ]
            assert 1 == len(replies)


# -- authorisation ---------------------------------------------------------------------------------------


class TestAuthorisation:
    @pytest.fixture
    async def srv(self, start: Start, signer: Signer) -> SessionStoreServer:
        """A loopback server verifying JWTs whose claims carry the grants."""
        return await start(signer.auth())

    def as_(
        self, srv: SessionStoreServer, signer: Signer, role: str, realms: list[str]
    ) -> AsyncSessionStoreClient:
        """A client whose token grants `role` on `realms`."""
        return client(
            srv.port, token=signer.token(sub=f"{role}-{'-'.join(realms)}", role=role, realms=realms)
        )

    async def test_reader_reads_and_may_not_write(self, srv: SessionStoreServer, signer: Signer) -> None:
        """Read-only RPCs pass with read; a create, a single-use put and a login failure need write."""
        async with self.as_(srv, signer, "read", [REALM]) as reader:
            assert 0 == await reader.count_sessions(REALM)
            assert [] == await reader.list_user_sessions(REALM, "user-1")
            assert not await reader.contains_single_use_object(REALM, "code-1")
            with pytest.raises(PermissionDeniedError, match="needs the write role"):
                await reader.create_user_session(REALM, "user-1")
            with pytest.raises(PermissionDeniedError):
                await reader.put_single_use_object(REALM, "code-1", 60)
            with pytest.raises(PermissionDeniedError):
                await reader.record_login_failure(REALM, "user-1")

    async def test_writer_is_confined_to_its_realms(self, srv: SessionStoreServer, signer: Signer) -> None:
        """A writer of realm-a writes there; every call on realm-b is denied, reads included."""
        async with self.as_(srv, signer, "write", [REALM]) as writer:
            session = await writer.create_user_session(REALM, "user-1")
            await writer.attach_client_session(REALM, session.id, "app")
            root = await writer.get_or_create_root_authentication_session(REALM)
            await writer.create_authentication_session(REALM, root.id, "app")
            for call in (
                writer.get_user_session(OTHER, session.id),
                writer.create_user_session(OTHER, "user-1"),
                writer.get_or_create_root_authentication_session(OTHER),
                writer.get_login_failure(OTHER, "user-1"),
                writer.get_realm_policy(OTHER),
            ):
                with pytest.raises(PermissionDeniedError, match="realm 'realm-b'"):
                    await call

    async def test_realm_removal_policy_and_realm_wide_removals_need_admin(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """Writers may not remove a realm (stream), change its policy or clear its login failures."""
        async with self.as_(srv, signer, "write", ["*"]) as writer:
            with pytest.raises(PermissionDeniedError, match="admin"):
                await writer.remove_sessions(REALM)
            with pytest.raises(PermissionDeniedError, match="admin"):
                await writer.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
            with pytest.raises(PermissionDeniedError, match="admin"):
                await writer.remove_realm_login_failures(REALM)
        async with self.as_(srv, signer, "admin", [REALM]) as admin:
            await admin.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=60))
            assert 0 == await admin.remove_realm_login_failures(REALM)
            await admin.remove_sessions(REALM)
            with pytest.raises(PermissionDeniedError, match="realm 'realm-b'"):
                await admin.remove_sessions(OTHER)

    async def test_cluster_wide_stats_need_admin_of_every_realm(
        self, srv: SessionStoreServer, signer: Signer
    ) -> None:
        """GetEventStats is cluster-wide: an admin of one realm is PERMISSION_DENIED (with its reason)."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = events_pb2_grpc.SessionEventsStub(channel)
            realm_admin = (("authorization", f"Bearer {signer.token(role='admin', realms=[REALM])}"),)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEventStats(events_pb2.GetEventStatsRequest(), metadata=realm_admin, timeout=5)
            assert (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", ERROR_DOMAIN) == error_reason(
                caught.value
            )
            root = (("authorization", f"Bearer {signer.token(role='admin', realms=['*'])}"),)
            stats = await stub.GetEventStats(events_pb2.GetEventStatsRequest(), metadata=root, timeout=5)
            assert isinstance(stats, events_pb2.EventStats)

    async def test_watch_is_checked_on_its_realms(self, srv: SessionStoreServer, signer: Signer) -> None:
        """A reader of realm-a may watch realm-a (and gets its events), not realm-b nor every realm."""
        async with self.as_(srv, signer, "read", [REALM]) as reader:
            for realms in ([OTHER], [REALM, OTHER], []):
                async with reader.watch(realms=realms) as denied:
                    with pytest.raises(PermissionDeniedError):
                        await anext(denied)
            async with reader.watch(realms=[REALM], types=[EventType.CREATED]) as events:
                pending = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0.2)  # the watch starts from now: let it subscribe first
                async with self.as_(srv, signer, "write", [REALM]) as writer:
                    session = await writer.create_user_session(REALM, "user-1")
                event = await asyncio.wait_for(pending, 20)
        assert (EventType.CREATED, session.id) == (event.type, event.session_id)


# -- unix socket --------------------------------------------------------------------------------------------


class TestUnixSocket:
    async def test_socket_is_private_and_its_peer_is_admin(
        self, start: Start, signer: Signer, short_dir: Path
    ) -> None:
        """The socket file is mode 0600; with JWTs on, the peer without a token is `unix:local`, admin."""
        path = short_dir / "ss.sock"
        await start(signer.auth(), listen=f"unix:{path}")

        assert 0o600 == stat.S_IMODE(path.stat().st_mode)
        async with AsyncSessionStoreClient(f"unix:{path}", max_attempts=1) as store:
            await store.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=600))
            await store.remove_sessions(REALM)

    async def test_socket_is_private_without_authentication_too(self, start: Start, short_dir: Path) -> None:
        """The default (no authentication) unix listener is mode 0600 as well."""
        path = short_dir / "ss.sock"
        await start(AuthSettings(), listen=f"unix://{path}")

        assert 0o600 == stat.S_IMODE(path.stat().st_mode)

    async def test_callers_file_can_narrow_the_unix_peer(
        self, start: Start, signer: Signer, short_dir: Path
    ) -> None:
        """A callers-file entry for `unix:local` replaces the default admin grant."""
        path = short_dir / "ss.sock"
        callers = write_callers(short_dir, {"unix:local": ([REALM], "read")})
        await start(signer.auth(callers), listen=f"unix:{path}")
        async with AsyncSessionStoreClient(f"unix:{path}", max_attempts=1) as store:
            assert 0 == await store.count_sessions(REALM)
            with pytest.raises(PermissionDeniedError, match="unix:local needs the write role"):
                await store.create_user_session(REALM, "user-1")


# -- exposure --------------------------------------------------------------------------------------------


class TestListenerExposure:
    async def test_refuses_all_interfaces_without_authentication(
        self, flushed_shards: tuple[ShardSettings, ...], settings: Settings
    ) -> None:
        """start() on 0.0.0.0 with nothing configured raises before it connects or binds anything."""
        srv = SessionStoreServer(settings, flushed_shards, clock=TestClock())
        try:
            with pytest.raises(SettingsError, match=re.escape("refusing to serve the API on 0.0.0.0:0")):
                await srv.start(ANY_ADDRESS)
            assert 0 == srv.port
        finally:
            await srv.router.close()


# -- logs ------------------------------------------------------------------------------------------------


class TestNoSecretsInLogs:
    async def test_tokens_never_reach_the_logs(self, start: Start, signer: Signer) -> None:
        """Accepted, expired and denied tokens: refusals are logged, the token strings never are."""
        srv = await start(signer.auth())
        good, expired, reader = signer.token(), signer.token(exp_in=-600), signer.token(role="read")
        with structlog.testing.capture_logs() as logs:
            async with client(srv.port, token=good) as store:
                session = await store.create_user_session(REALM, "user-1", notes={"token": "note-secret"})
                await store.remove_user_session(REALM, session.id)
            async with client(srv.port, token=expired) as store:
                with pytest.raises(UnauthenticatedError):
                    await store.count_sessions(REALM)
            async with client(srv.port, token=reader) as store:
                with pytest.raises(PermissionDeniedError):
                    await store.create_user_session(REALM, "user-2")

        text = repr(logs)
        assert {"rpc_unauthenticated", "rpc_denied"} <= {entry["event"] for entry in logs}
        for secret in (good, expired, reader, good.split(".")[2], "note-secret"):
            assert secret not in text
