"""Encryption at rest of note values (DESIGN invariant 7): AES-256-GCM, a random 96-bit nonce per
value, associated data that names where the value belongs, and key ids so keys rotate.

A stored value is ``ss1:<key id>:<base64url(nonce || ciphertext || tag)>``. The associated data is
the value's context joined with US (0x1f): realm, the owning object's id and the field, so a value
copied into another session, client, tab or field fails to decrypt. New values use the newest key;
values under an older configured key stay readable until `session-store keys rotate` rewrites them.
Values stored before encryption was switched on (no prefix) are read as they are.

Keys come from a JSON file (never the environment)::

    {"keys": [{"id": "2026-11", "key": "<base64 of 32 random bytes>"}, ...]}

ordered oldest to newest; the last one encrypts. Generate a key with
``python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from session_store.config import SettingsError
from session_store.errors import PreconditionFailedError

PREFIX = "ss1:"
"""Marks an encrypted value (format version 1)."""
NONCE_BYTES = 12
KEY_BYTES = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class KeyFileError(SettingsError):
    """The key file is missing, unreadable or malformed; the message says which and why."""


def _context(parts: Sequence[str]) -> bytes:
    return "\x1f".join(parts).encode()


class NoteCipher:
    """Encrypts and decrypts note values under a ring of keys (none: values pass through in clear)."""

    def __init__(self, keys: Sequence[tuple[str, bytes]] = ()) -> None:
        """Use `keys` (id, 32-byte key), oldest first; the last encrypts. No keys: no encryption.

        Raises:
            KeyFileError: a key id is malformed or repeated, or a key is not 32 bytes.
        """
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise KeyFileError(f"key id {key_id!r} must be 1-32 of A-Z a-z 0-9 _ . -")
            if key_id in self._keys:
                raise KeyFileError(f"key id {key_id!r} appears twice")
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}")
            self._keys[key_id] = AESGCM(key)
        self.current = keys[-1][0] if keys else ""

    @classmethod
    def from_file(cls, path: Path) -> NoteCipher:
        """Read the key ring from a JSON key file (see the module docstring).

        Raises:
            KeyFileError: the file is unreadable or malformed.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["keys"]
            if not isinstance(entries, list) or not entries:
                raise KeyFileError(f"{path}: 'keys' must be a non-empty list")
            keys = [(str(e["id"]), base64.b64decode(str(e["key"]), validate=True)) for e in entries]
        except KeyFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise KeyFileError(f"{path}: cannot read the encryption keys ({type(exc).__name__})") from None
        try:
            return cls(keys)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    @property
    def enabled(self) -> bool:
        """Whether new values are encrypted."""
        return bool(self.current)

    def encrypt(self, value: str, *context: str) -> str:
        """`value` encrypted under the newest key for this context (unchanged when disabled)."""
        if not self.current:
            return value
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, value.encode(), _context(context))
        return f"{PREFIX}{self.current}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, value: str, *context: str) -> str:
        """The clear text of a stored value (a value without the prefix is returned as it is).

        Raises:
            PreconditionFailedError: the value's key id is not configured, or the value does not
                belong to this context (copied elsewhere) or was altered.
        """
        if not value.startswith(PREFIX):
            return value
        key_id, _, body = value[len(PREFIX) :].partition(":")
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise PreconditionFailedError(
                f"a stored note is encrypted with key {key_id!r}, which is not configured"
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _context(context)).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise PreconditionFailedError(
                "a stored note failed to decrypt: altered, or copied from elsewhere"
            ) from None

    def needs_rotation(self, value: str) -> bool:
        """Whether a stored value should be rewritten under the newest key (clear or an older key)."""
        if not self.current:
            return False
        return not value.startswith(f"{PREFIX}{self.current}:")

    def encrypt_map(self, values: Mapping[str, str], *context: str) -> dict[str, str]:
        """Each value encrypted with its name appended to the context."""
        return {name: self.encrypt(v, *context, name) for name, v in values.items()}

    def decrypt_map(self, values: Mapping[str, str], *context: str) -> dict[str, str]:
        """Each value decrypted with its name appended to the context.

        Raises:
            PreconditionFailedError: see `decrypt`.
        """
        return {name: self.decrypt(v, *context, name) for name, v in values.items()}


NO_ENCRYPTION = NoteCipher()
"""The cipher of a store without keys: values are stored in clear."""
