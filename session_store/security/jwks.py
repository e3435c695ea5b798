"""A realm's signature keys: its JWKS file parsed into public keys by `kid`, re-read on rotation, bounded.

A JWKS file holds public keys only (RSA of at least 2048 bits, EC on P-256/P-384/P-521, Ed25519/Ed448),
each with a `kid`. Keys marked for another use than signing (`"use": "enc"`, as Keycloak's certs
endpoint lists) and keys for algorithms session-store does not verify are skipped; a symmetric
(`oct`) key or any private member is refused, because a shared secret has no place in a file of
public keys (HS* secrets come from a separate file, see `load_hmac_secret`).

Rotation: a token whose `kid` is unknown re-reads the file, and so does a lookup once the file has
changed on disk; both at most once per `reload_seconds` per realm, so a stream of made-up `kid`s costs
one file read per interval, never one per request. A file that fails to parse on a re-read leaves the
keys as they were (logged); one that fails at startup fails startup.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    SECP384R1,
    SECP521R1,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from session_store.config import SettingsError

log = structlog.get_logger(__name__)

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": SECP256R1.name, "ES384": SECP384R1.name, "ES512": SECP521R1.name}
"""EC algorithm -> the one curve it is defined on (RFC 7518 §3.4)."""
HMAC_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
"""HMAC algorithm -> the shortest secret it accepts: its hash size (RFC 7518 §3.2)."""
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHMS) | {"EdDSA"}
SUPPORTED_ALGORITHMS = ASYMMETRIC_ALGORITHMS | frozenset(HMAC_SECRET_BYTES)
"""Every `alg` a realm may allow. `none` is not one of them, nor ever will be."""
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 1024 * 1024
"""Largest JWKS or secret file read."""
MAX_KID_LENGTH = 255
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey


class TokenConfigError(SettingsError):
    """A realms file, JWKS file or secret file is missing, unreadable or malformed; the message says
    which file and why (never a key's secret material)."""


@dataclass(frozen=True)
class VerificationKey:
    """One public key of a realm's JWKS, by `kid`; `alg` empty when the JWK does not pin one."""

    kid: str
    key: PublicKey
    alg: str = ""

    def usable_with(self, alg: str) -> bool:
        """Whether a signature of algorithm `alg` may be verified with this key.

        The key's family must be the algorithm's (RSA for RS*/PS*, the algorithm's own curve for ES*,
        an Edwards curve for EdDSA), and a JWK that names an `alg` serves that algorithm only.
        """
        if self.alg and self.alg != alg:
            return False
        if alg in RSA_ALGORITHMS:
            return isinstance(self.key, RSAPublicKey)
        if alg in EC_ALGORITHMS:
            return isinstance(self.key, EllipticCurvePublicKey) and self.key.curve.name == EC_ALGORITHMS[alg]
        if alg == "EdDSA":
            return isinstance(self.key, Ed25519PublicKey | Ed448PublicKey)
        return False


def _read_bounded(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenConfigError(f"{what} {path}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise TokenConfigError(f"{what} {path}: larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _parse_key(jwk: Mapping[str, Any], where: str) -> VerificationKey | None:
    """One JWK as a verification key; None for a key that is not for us (encryption, other alg)."""
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise TokenConfigError(
            f"{where}: every key needs a `kid` (a string of 1-{MAX_KID_LENGTH} characters)"
        )
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    if kty == "oct":
        raise TokenConfigError(
            f"{where}: key {kid!r} is symmetric; shared secrets go in the realm's hmac_secret_file"
        )
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise TokenConfigError(f"{where}: key {kid!r} holds private key material; publish public keys only")
    alg = jwk.get("alg", "")
    if not isinstance(alg, str):
        raise TokenConfigError(f"{where}: key {kid!r} has a non-string `alg`")
    if alg and alg not in ASYMMETRIC_ALGORITHMS:
        return None
    parsers: dict[str, Callable[[dict[str, Any]], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    if kty not in parsers:
        raise TokenConfigError(f"{where}: key {kid!r} has an unsupported kty (RSA, EC or OKP)")
    try:
        key = parsers[kty](dict(jwk))
    except Exception as exc:  # pyjwt and cryptography raise several types for bad key material
        raise TokenConfigError(f"{where}: key {kid!r} is malformed ({type(exc).__name__})") from None
    if not isinstance(key, PublicKey):
        raise TokenConfigError(f"{where}: key {kid!r} is not a public key")
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise TokenConfigError(f"{where}: key {kid!r} is an RSA key under {MIN_RSA_BITS} bits")
    parsed = VerificationKey(kid, key, alg)
    if alg and not parsed.usable_with(alg):
        raise TokenConfigError(f"{where}: key {kid!r} does not fit its own alg {alg}")
    return parsed


def parse_jwks(data: bytes, where: str) -> dict[str, VerificationKey]:
    """The signature keys of a JWKS document (`{"keys": [...]}`), by `kid`.

    Raises:
        TokenConfigError: not JSON, no `keys` list, a key without `kid`, a repeated `kid`, a symmetric
            or private key, an RSA key under 2048 bits, or malformed key material.
    """
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TokenConfigError(f"{where}: not a JSON document") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TokenConfigError(f'{where}: expected a JWKS object {{"keys": [...]}}')
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            raise TokenConfigError(f"{where}: every key must be a JSON object")
        parsed = _parse_key(jwk, where)
        if parsed is None:
            continue
        if parsed.kid in keys:
            raise TokenConfigError(f"{where}: kid {parsed.kid!r} appears twice")
        keys[parsed.kid] = parsed
    return keys


def load_jwks(path: Path) -> dict[str, VerificationKey]:
    """The signature keys of a JWKS file, by `kid`.

    Raises:
        TokenConfigError: the file cannot be read or does not parse (see `parse_jwks`).
    """
    return parse_jwks(_read_bounded(path, "JWKS file"), f"JWKS file {path}")


def load_hmac_secret(path: Path, algorithms: frozenset[str]) -> bytes:
    """A realm's shared HMAC secret: the file's bytes, one trailing newline dropped.

    Raises:
        TokenConfigError: the file cannot be read, or the secret is shorter than the hash size of the
            strongest HS* algorithm the realm allows.
    """
    secret = _read_bounded(path, "HMAC secret file").removesuffix(b"\n").removesuffix(b"\r")
    needed = max((HMAC_SECRET_BYTES[a] for a in algorithms if a in HMAC_SECRET_BYTES), default=0)
    if len(secret) < needed:
        raise TokenConfigError(f"HMAC secret file {path}: shorter than {needed} bytes")
    return secret


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a changed file: (mtime ns, size)."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class KeySet:
    """A realm's JWKS keys by `kid`, re-read on an unknown `kid` or a changed file, at most once per
    `reload_seconds`."""

    def __init__(
        self,
        realm: str,
        path: Path,
        *,
        reload_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the file now.

        Args:
            realm: the realm (for log lines).
            path: the JWKS file.
            reload_seconds: least time between two looks at the file after this first read.
            monotonic: the clock of that interval (tests pass their own).

        Raises:
            TokenConfigError: the file cannot be read or does not parse.
        """
        self._realm = realm
        self._path = path
        self._reload_seconds = reload_seconds
        self._monotonic = monotonic
        self._keys = load_jwks(path)
        self._stamp = _stamp(path)
        self._checked_at = monotonic()
        self._lock = asyncio.Lock()
        self.reloads = 0
        """How often the file was read again after the first time."""

    def _due(self) -> bool:
        return self._monotonic() - self._checked_at >= self._reload_seconds

    async def find(self, kid: str) -> VerificationKey | None:
        """The key with this `kid`, looking at the file again when allowed; None when there is none."""
        key = self._keys.get(kid)
        if key is not None and not self._due():
            return key
        if self._due():
            await self._refresh(force=key is None)
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        """Re-read the file if it changed (or, `force`, in any case), unless another call just did."""
        async with self._lock:
            if not self._due():
                return
            self._checked_at = self._monotonic()
            try:
                stamp = await asyncio.to_thread(_stamp, self._path)
                if not force and stamp == self._stamp:
                    return
                keys = await asyncio.to_thread(load_jwks, self._path)
            except (OSError, TokenConfigError) as exc:
                log.warning("token_keys_reload_failed", realm=self._realm, error=str(exc))
                return
            self._keys = keys
            self._stamp = stamp
            self.reloads += 1
            log.info("token_keys_reloaded", realm=self._realm, keys=len(keys))
