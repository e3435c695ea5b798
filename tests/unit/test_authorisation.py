"""The authorisation table covers every RPC; grants, callers files, exposure and AuthSettings behave.

The coverage test enumerates every service of every generated module of protos/ (plus health and
reflection), so a new RPC fails here until it has a rule: none can slip past the interceptor.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import session_store.v1
from session_store.config import AuthSettings, Settings, SettingsError
from session_store.errors import PermissionDeniedError
from session_store.security.grants import (
    ALL_REALMS,
    Caller,
    Grant,
    Role,
    load_callers,
    parse_callers,
)
from session_store.security.interceptor import authorise, certificate_names
from session_store.security.rules import RULES, TABLE, Rule, Scope
from session_store.security.setup import ServerSecurity
from session_store.security.transport import Exposure, exposure, is_loopback, unix_socket_path
from session_store.v1 import session_store_pb2 as pb

ANY_ADDRESS = "0.0.0.0:50051"  # an address to classify, never bound


def served_services() -> list[Any]:
    """The descriptor of every service of every generated module in session_store/v1, health, reflection."""
    services: list[Any] = []
    for module in pkgutil.iter_modules(session_store.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"session_store.v1.{module.name}").DESCRIPTOR
            services.extend(descriptor.services_by_name.values())
    services.append(health_pb2.DESCRIPTOR.services_by_name["Health"])
    services.append(reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"])
    return services


def all_methods() -> dict[str, tuple[Any, str]]:
    """`/package.Service/Method` -> (service, method name) of every served RPC."""
    return {
        f"/{service.full_name}/{method.name}": (service, method.name)
        for service in served_services()
        for method in service.methods
    }


def field_of(service: Any, method: str, path: str) -> Any:
    """The descriptor of the (dotted) request field `path` of an RPC."""
    message = service.methods_by_name[method].input_type
    found: Any = None
    for name in path.split("."):
        found = message.fields_by_name[name]
        message = found.message_type
    assert found is not None
    return found


class TestTableCoversEveryRpc:
    def test_the_proto_enumeration_finds_the_services(self) -> None:
        """The enumeration sees the five core services and health, so the coverage test can fail."""
        names = {service.full_name for service in served_services()}
        expected = {
            "session_store.v1.SessionStore",
            "session_store.v1.AuthenticationSessions",
            "session_store.v1.SingleUseObjects",
            "session_store.v1.LoginFailures",
            "session_store.v1.SessionEvents",
            "session_store.v1.TestClock",
            "grpc.health.v1.Health",
        }
        assert set() == expected - names

    def test_every_rpc_has_a_rule_and_every_rule_an_rpc(self) -> None:
        """The rules name exactly the RPCs of the protos: none missing, none stale."""
        served = set(all_methods())

        assert (set(), set()) == (served - set(RULES), set(RULES) - served)

    def test_every_realm_field_is_a_string_field_of_the_request(self) -> None:
        """A REALM rule reads a singular string field; a REALMS rule a repeated one."""
        methods = all_methods()
        for path, rule in RULES.items():
            if not rule.needs_request:
                continue
            service, method = methods[path]
            field = field_of(service, method, rule.field)
            assert FieldDescriptor.TYPE_STRING == field.type, path
            repeated = field.is_repeated
            assert (rule.scope is Scope.REALMS) == repeated, path

    def test_requests_with_a_realm_field_are_checked_on_it(self) -> None:
        """Every request message that has a top-level `realm` field is authorised on that field."""
        methods = all_methods()
        for path, rule in RULES.items():
            service, method = methods[path]
            if "realm" in service.methods_by_name[method].input_type.fields_by_name:
                assert (Scope.REALM, "realm") == (rule.scope, rule.field), path

    def test_client_streaming_rpcs_need_no_request_field(self) -> None:
        """A client-streaming RPC cannot be checked on a request field before its handler runs."""
        methods = all_methods()
        for path, rule in RULES.items():
            service, method = methods[path]
            if service.methods_by_name[method].client_streaming:
                assert not rule.needs_request, path

    @pytest.mark.parametrize(
        "path",
        [
            "/session_store.v1.SessionStore/RemoveSessions",
            "/session_store.v1.SessionStore/SetRealmPolicy",
            "/session_store.v1.LoginFailures/RemoveRealmLoginFailures",
            "/session_store.v1.SessionEvents/GetEventStats",
            "/session_store.v1.TestClock/AdvanceClock",
        ],
    )
    def test_realm_removal_policy_changes_and_cluster_wide_rpcs_are_admin(self, path: str) -> None:
        """The RPCs that remove a realm's data, change its policy or act cluster-wide need admin."""
        assert Role.ADMIN == RULES[path].role

    def test_reads_need_read_and_other_changes_need_write(self) -> None:
        """Outside the admin set, Get/List/Count/Find/Contains need read (not GetOrCreate), others write."""
        readers = ("Get", "List", "Count", "Find", "Contains", "Validate")
        for service in ("SessionStore", "AuthenticationSessions", "SingleUseObjects", "LoginFailures"):
            for method, rule in TABLE[f"session_store.v1.{service}"].items():
                if rule.role is Role.ADMIN:
                    continue
                reads = method.startswith(readers) and "OrCreate" not in method
                expected = Role.READ if reads else Role.WRITE
                assert expected == rule.role, method

    def test_only_health_is_public(self) -> None:
        """Health needs no credentials (kubelet probes); every other RPC does."""
        public = {path for path, rule in RULES.items() if rule.scope is Scope.PUBLIC}

        assert {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"} == public


class TestAuthorise:
    writer = Caller("jwt:idp", Grant.of(Role.WRITE, ["a", "b"]))

    def test_role_and_realm_both_needed(self) -> None:
        """A writer of realms a and b may write in a, not in c, and may not do admin work in a."""
        authorise(
            RULES["/session_store.v1.SessionStore/CreateUserSession"],
            self.writer,
            pb.CreateUserSessionRequest(realm="a"),
        )
        with pytest.raises(PermissionDeniedError, match="realm 'c'"):
            authorise(
                RULES["/session_store.v1.SessionStore/GetUserSession"],
                self.writer,
                pb.GetUserSessionRequest(realm="c"),
            )
        with pytest.raises(PermissionDeniedError, match="admin"):
            authorise(
                RULES["/session_store.v1.SessionStore/RemoveSessions"],
                self.writer,
                pb.RemoveSessionsRequest(realm="a"),
            )

    def test_policy_realm_is_read_from_the_nested_policy(self) -> None:
        """SetRealmPolicy is checked on policy.realm."""
        admin = Caller("tls:ops", Grant.of(Role.ADMIN, ["a"]))
        rule = RULES["/session_store.v1.SessionStore/SetRealmPolicy"]

        authorise(rule, admin, pb.SetRealmPolicyRequest(policy=pb.RealmPolicy(realm="a")))
        with pytest.raises(PermissionDeniedError):
            authorise(rule, admin, pb.SetRealmPolicyRequest(policy=pb.RealmPolicy(realm="b")))

    def test_watch_of_every_realm_needs_every_realm(self) -> None:
        """Watch checks each requested realm; an empty filter (every realm) needs a `*` grant."""
        rule = RULES["/session_store.v1.SessionEvents/Watch"]
        request = SimpleNamespace(realms=["a", "b"])
        authorise(rule, self.writer, request)
        with pytest.raises(PermissionDeniedError, match="every realm"):
            authorise(rule, self.writer, SimpleNamespace(realms=[]))
        authorise(rule, Caller("unix:local", Grant.of(Role.READ, [ALL_REALMS])), SimpleNamespace(realms=[]))

    def test_cluster_wide_needs_every_realm(self) -> None:
        """An admin of some realms is not an admin of the cluster."""
        rule = Rule(Role.ADMIN, Scope.CLUSTER)
        with pytest.raises(PermissionDeniedError, match="every realm"):
            authorise(rule, Caller("tls:ops", Grant.of(Role.ADMIN, ["a"])), None)
        authorise(rule, Caller("tls:root", Grant.of(Role.ADMIN, [ALL_REALMS])), None)

    def test_a_caller_without_grant_may_do_nothing(self) -> None:
        """An authenticated caller that no grant names is refused even a read."""
        with pytest.raises(PermissionDeniedError, match="no grant"):
            authorise(
                RULES["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"],
                Caller("tls:x", None),
                None,
            )


class TestCallersFile:
    def test_yaml_file_is_parsed(self, tmp_path: Path) -> None:
        """Identities map to their realms and role; a single realm may be a string."""
        path = tmp_path / "callers.yaml"
        path.write_text(
            'callers:\n  "tls:spiffe://x/idp": {realms: ["*"], role: write}\n'
            "  jwt:reporting: {realms: customers, role: READ}\n"
        )

        expected = {
            "tls:spiffe://x/idp": Grant.of(Role.WRITE, ["*"]),
            "jwt:reporting": Grant.of(Role.READ, ["customers"]),
        }
        assert expected == load_callers(path)

    @pytest.mark.parametrize(
        ("document", "message"),
        [
            ({"callers": {"idp": {"realms": ["a"], "role": "read"}}}, "must be tls:"),
            ({"callers": {"tls:idp": {"realms": [], "role": "read"}}}, "non-empty list"),
            ({"callers": {"tls:idp": {"realms": ["a"], "role": "owner"}}}, "role must be"),
            ({"callers": {"tls:idp": {"realms": ["a b"], "role": "read"}}}, "not a realm name"),
            ({"callers": {"tls:idp": {"realms": ["a"], "role": "read", "extra": 1}}}, "unknown keys"),
            ({"users": {}}, "top-level key"),
        ],
    )
    def test_malformed_files_are_refused(self, document: object, message: str) -> None:
        """Each malformation is refused with a message that says what is wrong."""
        with pytest.raises(ValueError, match=message):
            parse_callers(document, "callers.yaml")

    def test_unreadable_file_is_a_settings_error(self, tmp_path: Path) -> None:
        """A missing file fails startup with the variable's name."""
        with pytest.raises(SettingsError, match="SESSION_STORE_AUTH_CALLERS_FILE"):
            load_callers(tmp_path / "missing.yaml")


class TestCertificateNames:
    def test_uri_then_dns_then_common_name(self) -> None:
        """A certificate's names come URI SANs first, then DNS SANs, then the CN, without repeats."""
        context = {
            "x509_common_name": [b"idp"],
            "peer_dns": [b"idp.example", b"idp"],
            "peer_uri": [b"spiffe://x/idp"],
        }
        assert ["spiffe://x/idp", "idp.example", "idp"] == certificate_names(context)


class TestExposure:
    @pytest.mark.parametrize(
        ("address", "expected"),
        [
            ("127.0.0.1:50051", True),
            ("127.0.0.2:1", True),
            ("[::1]:50051", True),
            ("localhost:50051", True),
            (ANY_ADDRESS, False),
            ("[::]:50051", False),
            (":50051", False),
            ("10.0.0.7:50051", False),
            ("session-store:50051", False),
        ],
    )
    def test_loopback_addresses(self, address: str, expected: bool) -> None:
        """Only 127/8, ::1 and localhost are loopback; wildcards and other hosts are not."""
        assert expected == is_loopback(address)

    def test_unix_socket_paths(self) -> None:
        """Both `unix:path` and `unix:///absolute` forms name their file; TCP addresses none."""
        expected = (Path("/run/ss.sock"), Path("rel.sock"), Path("/abs.sock"), None)
        actual = (
            unix_socket_path("unix:/run/ss.sock"),
            unix_socket_path("unix:rel.sock"),
            unix_socket_path("unix:///abs.sock"),
            unix_socket_path("127.0.0.1:1"),
        )
        assert expected == actual

    def test_beyond_loopback_without_auth_is_refused(self) -> None:
        """The default settings refuse a wildcard address with a message naming the way out."""
        with pytest.raises(SettingsError, match="SESSION_STORE_ALLOW_INSECURE_REMOTE"):
            exposure(ANY_ADDRESS, AuthSettings())

    def test_jwt_without_tls_beyond_loopback_is_refused(self) -> None:
        """Tokens must not cross the network in the clear: JWT alone is not enough beyond loopback."""
        auth = AuthSettings(jwt_keys_file=Path("jwks.json"), jwt_issuer="https://idp")
        with pytest.raises(SettingsError, match="TLS"):
            exposure(ANY_ADDRESS, auth)

    def test_tls_with_caller_authentication_is_protected(self) -> None:
        """TLS with mutual TLS, or with JWTs, may listen beyond loopback."""
        tls = AuthSettings(tls_cert_file=Path("c.pem"), tls_key_file=Path("k.pem"))
        mtls = dataclasses.replace(tls, tls_client_ca_file=Path("ca.pem"))
        jwt = dataclasses.replace(tls, jwt_keys_file=Path("jwks.json"), jwt_issuer="https://idp")

        assert (Exposure.PROTECTED, Exposure.PROTECTED) == (
            exposure(ANY_ADDRESS, mtls),
            exposure(ANY_ADDRESS, jwt),
        )

    def test_local_addresses_need_nothing(self) -> None:
        """Loopback and unix sockets are local with nothing configured."""
        assert {Exposure.LOCAL} == {exposure(a, AuthSettings()) for a in ("127.0.0.1:0", "unix:/tmp/x.sock")}

    def test_allowed_insecure_listener_is_logged_as_a_warning(self) -> None:
        """With the explicit setting, the check passes and logs one warning (nothing is bound here)."""
        security = ServerSecurity(AuthSettings(allow_insecure_remote=True))
        with structlog.testing.capture_logs() as logs:
            found = security.check_listener(ANY_ADDRESS)

        assert Exposure.INSECURE == found
        assert [("insecure_remote_listener", "warning")] == [(e["event"], e["log_level"]) for e in logs]

    def test_tls_for_a_unix_socket_is_refused(self) -> None:
        """TLS settings do not apply to a unix socket: saying so beats ignoring them."""
        auth = AuthSettings(tls_cert_file=Path("c.pem"), tls_key_file=Path("k.pem"))
        with pytest.raises(SettingsError, match="unix socket"):
            exposure("unix:/tmp/x.sock", auth)


class TestAuthSettings:
    def test_defaults_leave_authentication_off(self) -> None:
        """Nothing configured: no TLS, no caller authentication, loopback only."""
        auth = Settings.from_env({}).auth

        assert (False, False, False, False, 30.0) == (
            auth.tls,
            auth.mutual_tls,
            auth.jwt,
            auth.enforced,
            auth.jwt_leeway_seconds,
        )

    def test_variables_are_read(self) -> None:
        """Each SESSION_STORE_TLS_* / _AUTH_* variable sets its setting."""
        auth = Settings.from_env(
            {
                "SESSION_STORE_TLS_CERT_FILE": "/tls/tls.crt",
                "SESSION_STORE_TLS_KEY_FILE": "/tls/tls.key",
                "SESSION_STORE_TLS_CLIENT_CA_FILE": "/tls/ca.crt",
                "SESSION_STORE_AUTH_JWT_KEYS_FILE": "/jwt/jwks.json",
                "SESSION_STORE_AUTH_JWT_ISSUER": "https://idp/realms/master",
                "SESSION_STORE_AUTH_JWT_ALGORITHMS": "ES256, EdDSA",
                "SESSION_STORE_AUTH_JWT_LEEWAY_SECONDS": "5",
                "SESSION_STORE_AUTH_CALLERS_FILE": "/etc/callers.yaml",
                "SESSION_STORE_ALLOW_INSECURE_REMOTE": "true",
            }
        ).auth

        expected = (
            Path("/tls/ca.crt"),
            Path("/jwt/jwks.json"),
            ("ES256", "EdDSA"),
            5.0,
            Path("/etc/callers.yaml"),
            True,
            True,
        )
        actual = (
            auth.tls_client_ca_file,
            auth.jwt_keys_file,
            auth.jwt_algorithms,
            auth.jwt_leeway_seconds,
            auth.callers_file,
            auth.allow_insecure_remote,
            auth.enforced,
        )
        assert expected == actual

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"tls_cert_file": Path("c")}, "go together"),
            ({"tls_client_ca_file": Path("ca")}, "needs SESSION_STORE_TLS_CERT_FILE"),
            ({"jwt_keys_file": Path("j")}, "ISSUER"),
            ({"jwt_algorithms": ("none",)}, "none not accepted"),
            ({"jwt_algorithms": ("HS256",)}, "HS256 not accepted"),
            ({"jwt_algorithms": ()}, "empty"),
            ({"jwt_leeway_seconds": 301.0}, "LEEWAY"),
            ({"jwt_role_claim": ""}, "ROLE_CLAIM"),
            ({"unix_identity": "a b"}, "UNIX_IDENTITY"),
        ],
    )
    def test_inconsistent_settings_are_refused(self, kwargs: dict[str, object], message: str) -> None:
        """Half a TLS pair, a CA without a certificate, JWT keys without issuer, `none`/HS* are refused."""
        with pytest.raises(SettingsError, match=message):
            AuthSettings(**kwargs)  # type: ignore[arg-type]  # each case sets one field of its own type
