"""Keys, JWKS files and Keycloak-shaped tokens for the token-validation tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass(frozen=True)
class SigningKey:
    """A private key with the `kid` and `alg` its tokens name, and its public JWK."""

    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def public_pem(self) -> bytes:
        """The public key in PEM (what an algorithm-confusion attacker would use as an HMAC secret)."""
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def rsa_key(kid: str, *, bits: int = 2048) -> SigningKey:
    """A fresh RSA key for RS256."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "RS256", private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


def ec_key(kid: str) -> SigningKey:
    """A fresh P-256 key for ES256."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    return SigningKey(kid, "ES256", private, {**jwk, "kid": kid, "use": "sig"})


def write_jwks(path: Path, *keys: SigningKey, extra: list[dict[str, Any]] | None = None) -> None:
    """Write a JWKS file with the public halves of `keys` (and any raw `extra` JWKs)."""
    path.write_text(json.dumps({"keys": [k.jwk for k in keys] + (extra or [])}), encoding="utf-8")


def sign(key: SigningKey, claims: dict[str, Any], *, kid: str | None = None) -> str:
    """A compact JWS of `claims` signed by `key`, its header naming `kid` (default: the key's)."""
    return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], *, hmac_key: bytes | None = None) -> str:
    """A token built by hand: HMAC-SHA256 with `hmac_key`, or no signature at all (alg none)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if hmac_key is None:
        return f"{signing_input}."
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def token_claims(
    *,
    issuer: str,
    session_id: str,
    now: int,
    typ: str = "Bearer",
    user: str = "user-1",
    client: str = "app",
    audience: str | list[str] = "orders-api",
    lifetime: int | None = 300,
    **override: Any,
) -> dict[str, Any]:
    """Keycloak-shaped claims; an override of None drops that claim."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": user,
        "aud": audience,
        "typ": typ,
        "azp": client,
        "sid": session_id,
        "iat": now,
        "scope": "openid profile email",
        "jti": f"jti-{now}-{typ}",
    }
    if lifetime is not None:
        claims["exp"] = now + lifetime
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}
