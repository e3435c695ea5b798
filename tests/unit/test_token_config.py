"""Token validation's configuration: JWKS files, the realms file, bounded key reloads, claim rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from session_store.config import Settings, TokenSettings
from session_store.errors import InvalidTokenError, TokenExpiredError
from session_store.model.token import TokenKind, kind_accepted
from session_store.security.jwks import KeySet, TokenConfigError, load_hmac_secret, parse_jwks
from session_store.security.tokens import RealmTokenConfig, check_claims, check_token_files, load_realms_file
from tests.token_helpers import ec_key, rsa_key, write_jwks

RSA = rsa_key("r1")
RSA_NEXT = rsa_key("r2")
EC = ec_key("e1")
WEAK = rsa_key("weak", bits=1024)


def jwks(*keys: dict[str, Any]) -> bytes:
    """A JWKS document of raw JWKs."""
    return json.dumps({"keys": list(keys)}).encode()


class FakeMonotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        """Start at 1000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current reading."""
        return self.now


class TestParseJwks:
    def test_signature_keys_by_kid(self) -> None:
        """RSA and EC public keys are indexed by kid; an `alg` on the JWK pins the key to it."""
        keys = parse_jwks(jwks(RSA.jwk, EC.jwk), "test")

        assert ["e1", "r1"] == sorted(keys)
        assert (True, False) == (keys["r1"].usable_with("RS256"), keys["r1"].usable_with("PS256"))
        assert (True, False) == (keys["e1"].usable_with("ES256"), keys["e1"].usable_with("ES384"))

    def test_a_key_without_alg_serves_its_whole_family(self) -> None:
        """An RSA JWK without `alg` verifies RS* and PS*, never EC or EdDSA."""
        key = parse_jwks(jwks({k: v for k, v in RSA.jwk.items() if k != "alg"}), "test")["r1"]

        assert [True, True, False, False] == [
            key.usable_with(a) for a in ("RS512", "PS256", "ES256", "EdDSA")
        ]

    def test_encryption_keys_and_unknown_algorithms_are_skipped(self) -> None:
        """Keys for `enc` use or an algorithm we do not verify are left out, not refused."""
        enc = {**RSA_NEXT.jwk, "use": "enc", "alg": "RSA-OAEP"}
        odd = {**EC.jwk, "kid": "e2", "alg": "ES256K"}

        assert ["r1"] == sorted(parse_jwks(jwks(RSA.jwk, enc, odd), "test"))

    @pytest.mark.parametrize(
        ("jwk", "message"),
        [
            pytest.param({"kty": "oct", "kid": "s", "k": "c2VjcmV0"}, "symmetric", id="oct"),
            pytest.param({**RSA.jwk, "d": "AQAB"}, "private", id="private-rsa"),
            pytest.param({k: v for k, v in RSA.jwk.items() if k != "kid"}, "kid", id="no-kid"),
            pytest.param(WEAK.jwk, "RSA key under 2048", id="weak-rsa"),
            pytest.param({**RSA.jwk, "n": "!!"}, "malformed", id="garbage-modulus"),
            pytest.param({**EC.jwk, "alg": "RS256"}, "does not fit", id="alg-of-another-family"),
            pytest.param({"kty": "XYZ", "kid": "x"}, "kty", id="unknown-kty"),
        ],
    )
    def test_dangerous_or_broken_keys_are_refused(self, jwk: dict[str, Any], message: str) -> None:
        """Secrets, private parts, missing kids, weak RSA and malformed keys fail the whole file."""
        with pytest.raises(TokenConfigError, match=message):
            parse_jwks(jwks(jwk), "test")

    def test_a_repeated_kid_is_refused(self) -> None:
        """Two keys under one kid would make the choice ambiguous."""
        with pytest.raises(TokenConfigError, match="twice"):
            parse_jwks(jwks(RSA.jwk, {**RSA_NEXT.jwk, "kid": "r1"}), "test")

    @pytest.mark.parametrize("data", [b"not json", b"[]", b'{"keys": {}}', b'{"keys": [1]}'])
    def test_a_document_that_is_no_jwks_is_refused(self, data: bytes) -> None:
        """Only `{"keys": [objects]}` is a JWKS."""
        with pytest.raises(TokenConfigError):
            parse_jwks(data, "test")


class TestHmacSecret:
    def test_secret_must_be_as_long_as_the_strongest_hash(self, tmp_path: Path) -> None:
        """A 48-byte secret serves HS256 and HS384 but not HS512; one trailing newline is dropped."""
        path = tmp_path / "secret"
        path.write_bytes(b"s" * 48 + b"\n")

        assert b"s" * 48 == load_hmac_secret(path, frozenset({"HS256", "HS384"}))
        with pytest.raises(TokenConfigError, match="64 bytes"):
            load_hmac_secret(path, frozenset({"HS512"}))


class TestRealmsFile:
    def realms(self, tmp_path: Path, text: str, name: str = "realms.yaml") -> dict[str, RealmTokenConfig]:
        """Write a realms file (and realm A's JWKS) and load it."""
        write_jwks(tmp_path / "a.jwks.json", RSA)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return load_realms_file(path)

    def test_yaml_with_defaults_and_relative_paths(self, tmp_path: Path) -> None:
        """Omitted fields take their defaults; paths are resolved from the realms file's folder."""
        found = self.realms(
            tmp_path,
            "realms:\n  a:\n    issuer: https://i/a\n    audiences: api\n    jwks_file: a.jwks.json\n",
        )

        expected = RealmTokenConfig(
            realm="a",
            issuer="https://i/a",
            audiences=("api",),
            refresh_audiences=("https://i/a",),
            algorithms=frozenset({"RS256"}),
            leeway_seconds=0,
            jwks_file=tmp_path / "a.jwks.json",
        )
        assert {"a": expected} == found

    def test_json_by_suffix(self, tmp_path: Path) -> None:
        """A `.json` realms file is read as JSON."""
        document = {
            "realms": {"a": {"issuer": "https://i/a", "audiences": ["api"], "jwks_file": "a.jwks.json"}}
        }

        assert ["a"] == list(self.realms(tmp_path, json.dumps(document), "realms.json"))

    @pytest.mark.parametrize(
        ("entry", "message"),
        [
            pytest.param('algorithms: ["none"]', "none", id="alg-none"),
            pytest.param("algorithms: [HS256]", "hmac_secret_file", id="hs-without-secret"),
            pytest.param("algorithms: [RS1]", "not supported", id="unknown-alg"),
            pytest.param("leeway_seconds: 301", "leeway_seconds", id="big-leeway"),
            pytest.param("leeway_seconds: true", "leeway_seconds", id="boolean-leeway"),
            pytest.param("audience: api", "unknown field", id="typo"),
            pytest.param("audiences: []", "audiences", id="no-audiences"),
        ],
    )
    def test_bad_realm_entries_are_refused(self, tmp_path: Path, entry: str, message: str) -> None:
        """`none`, HS* without an explicit secret file, unknown fields and bad values fail the file."""
        text = "realms:\n  a:\n    issuer: https://i/a\n    jwks_file: a.jwks.json\n"
        if not entry.startswith("audiences"):
            text += "    audiences: [api]\n"
        with pytest.raises(TokenConfigError, match=message):
            self.realms(tmp_path, f"{text}    {entry}\n")

    def test_asymmetric_algorithms_need_a_jwks_file(self, tmp_path: Path) -> None:
        """A realm allowing RS256 without a JWKS file is refused."""
        with pytest.raises(TokenConfigError, match="jwks_file"):
            self.realms(tmp_path, "realms:\n  a:\n    issuer: https://i/a\n    audiences: [api]\n")

    def test_check_token_files_reads_every_key_file(self, tmp_path: Path) -> None:
        """The command line's pre-flight check fails on a JWKS file the realms file names but lacks."""
        path = tmp_path / "realms.yaml"
        path.write_text(
            "realms:\n  a:\n    issuer: https://i/a\n    audiences: [api]\n    jwks_file: missing.json\n"
        )

        with pytest.raises(TokenConfigError, match=r"missing\.json"):
            check_token_files(TokenSettings(realms_file=path))
        assert 0 == check_token_files(TokenSettings())

    def test_settings_read_the_realms_file_and_reload_interval(self) -> None:
        """SESSION_STORE_TOKEN_* variables land in Settings.tokens."""
        settings = Settings.from_env(
            {
                "SESSION_STORE_TOKEN_REALMS_FILE": "/etc/ss/realms.yaml",
                "SESSION_STORE_TOKEN_KEYS_RELOAD_SECONDS": "5",
            }
        )

        assert (
            TokenSettings(realms_file=Path("/etc/ss/realms.yaml"), keys_reload_seconds=5) == settings.tokens
        )


class TestKeyReload:
    async def test_unknown_kids_reload_the_file_at_most_once_per_interval(self, tmp_path: Path) -> None:
        """A stream of unknown kids reads the file once per interval; a key added in between waits for it."""
        path = tmp_path / "jwks.json"
        write_jwks(path, RSA)
        clock = FakeMonotonic()
        keys = KeySet("r", path, reload_seconds=30, monotonic=clock)

        for _ in range(5):
            assert await keys.find("made-up") is None
        write_jwks(path, RSA, RSA_NEXT)
        clock.now += 29
        missing_early = await keys.find("r2")
        reloads_early = keys.reloads
        clock.now += 1
        found = await keys.find("r2")
        for _ in range(5):
            await keys.find("made-up")

        assert (None, 0) == (missing_early, reloads_early)
        assert found is not None
        assert ("r2", 1) == (found.kid, keys.reloads)

    async def test_a_changed_file_is_picked_up_on_a_known_kid_too(self, tmp_path: Path) -> None:
        """Once the interval passed, a lookup notices a changed file: a removed key stops being found."""
        path = tmp_path / "jwks.json"
        write_jwks(path, RSA, RSA_NEXT)
        clock = FakeMonotonic()
        keys = KeySet("r", path, reload_seconds=30, monotonic=clock)
        write_jwks(path, RSA_NEXT)

        still_there = await keys.find("r1")
        clock.now += 30

        assert still_there is not None
        assert await keys.find("r1") is None

    async def test_an_unchanged_file_is_not_read_again_for_a_known_kid(self, tmp_path: Path) -> None:
        """A known kid after the interval only compares the file's stamp."""
        path = tmp_path / "jwks.json"
        write_jwks(path, RSA)
        clock = FakeMonotonic()
        keys = KeySet("r", path, reload_seconds=30, monotonic=clock)
        clock.now += 31

        assert await keys.find("r1") is not None
        assert 0 == keys.reloads

    async def test_a_broken_file_keeps_the_keys_and_is_logged(self, tmp_path: Path) -> None:
        """A re-read that fails leaves the old keys in place and logs why."""
        path = tmp_path / "jwks.json"
        write_jwks(path, RSA)
        clock = FakeMonotonic()
        keys = KeySet("r", path, reload_seconds=0, monotonic=clock)
        path.write_text("{broken", encoding="utf-8")

        with capture_logs() as logs:
            assert await keys.find("other") is None
        assert await keys.find("r1") is not None
        assert ["token_keys_reload_failed"] == [e["event"] for e in logs]


ISSUER = "https://i/a"
CONFIG = RealmTokenConfig(
    realm="a",
    issuer=ISSUER,
    audiences=("api",),
    refresh_audiences=(ISSUER,),
    algorithms=frozenset({"RS256"}),
    leeway_seconds=10,
)


def payload(**override: Any) -> dict[str, Any]:
    """Claims of an access token issued at 1000 for 300 s; None drops a claim."""
    claims = {
        "iss": ISSUER,
        "aud": "api",
        "typ": "Bearer",
        "sid": "s1",
        "azp": "app",
        "iat": 1000,
        "exp": 1300,
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


class TestCheckClaims:
    def check(self, claims: dict[str, Any], now: float = 1000, **kwargs: Any) -> Any:
        """check_claims with the defaults of an any-kind request."""
        options: dict[str, Any] = {"audience": "", "expected": TokenKind.UNSPECIFIED, "require_client": False}
        options.update(kwargs)
        return check_claims(claims, CONFIG, now=now, **options)

    def test_exp_with_leeway_is_exclusive(self) -> None:
        """A token is current until exp + leeway, expired from that second on."""
        assert 1300 == self.check(payload(), now=1309.9).expires_at
        with pytest.raises(TokenExpiredError):
            self.check(payload(), now=1310)

    def test_offline_tokens_may_omit_exp(self) -> None:
        """Only an offline token may come without exp (Keycloak's offline tokens without a maximum)."""
        offline = self.check(payload(typ="Offline", aud=ISSUER, exp=None))

        assert (TokenKind.OFFLINE, 0) == (offline.kind, offline.expires_at)
        with pytest.raises(InvalidTokenError):
            self.check(payload(typ="Refresh", aud=ISSUER, exp=None))

    def test_route_suffix_of_the_session_id_is_stripped(self) -> None:
        """A sid with a sticky-session `.route` suffix names the session without it."""
        assert "s1" == self.check(payload(sid="s1.node-7")).session_id

    def test_refresh_tokens_need_azp(self) -> None:
        """Refresh tokens (and access tokens when a client session is required) must name their client."""
        assert "" == self.check(payload(azp=None)).client_id
        with pytest.raises(InvalidTokenError, match="azp"):
            self.check(payload(azp=None), require_client=True)
        with pytest.raises(InvalidTokenError, match="azp"):
            self.check(payload(typ="Refresh", aud=ISSUER, azp=None))

    @pytest.mark.parametrize(
        ("expected", "accepted"),
        [
            (TokenKind.UNSPECIFIED, {TokenKind.ACCESS, TokenKind.REFRESH, TokenKind.OFFLINE}),
            (TokenKind.ACCESS, {TokenKind.ACCESS}),
            (TokenKind.REFRESH, {TokenKind.REFRESH, TokenKind.OFFLINE}),
            (TokenKind.OFFLINE, {TokenKind.OFFLINE}),
        ],
    )
    def test_kind_acceptance(self, expected: TokenKind, accepted: set[TokenKind]) -> None:
        """Any accepts every kind, REFRESH accepts offline tokens too, the others only themselves."""
        kinds = (TokenKind.ACCESS, TokenKind.REFRESH, TokenKind.OFFLINE)

        assert accepted == {k for k in kinds if kind_accepted(expected, k)}
