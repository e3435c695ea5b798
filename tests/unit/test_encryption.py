"""Note encryption: AES-GCM round trips, values bound to their place, key rings that rotate."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.errors import PreconditionFailedError
from session_store.security.encryption import PREFIX, KeyFileError, NoteCipher


def ring(*ids: str) -> NoteCipher:
    """A cipher with one fresh random key per id, the last one newest."""
    return NoteCipher([(i, os.urandom(32)) for i in ids])


class TestNoteCipher:
    @given(value=st.text(), realm=st.text(min_size=1), sid=st.text(min_size=1))
    def test_round_trip(self, value: str, realm: str, sid: str) -> None:
        """Any text decrypts back to itself in the same context, and is never stored as itself."""
        cipher = ring("k1")
        sealed = cipher.encrypt(value, realm, sid, "n", "note")
        assert sealed.startswith(f"{PREFIX}k1:")
        assert value == cipher.decrypt(sealed, realm, sid, "n", "note")

    def test_same_value_twice_gives_different_ciphertexts(self) -> None:
        """A random nonce per value: equal notes do not show as equal in Redis."""
        cipher = ring("k1")
        assert cipher.encrypt("secret", "r", "s") != cipher.encrypt("secret", "r", "s")

    @pytest.mark.parametrize(
        "other",
        [("r2", "s1", "n", "a"), ("r1", "s2", "n", "a"), ("r1", "s1", "n", "b"), ("r1", "s1", "c", "a")],
    )
    def test_a_value_copied_elsewhere_does_not_decrypt(self, other: tuple[str, ...]) -> None:
        """Another realm, session, note name or kind of note: other associated data, so decryption fails."""
        cipher = ring("k1")
        sealed = cipher.encrypt("token", "r1", "s1", "n", "a")
        with pytest.raises(PreconditionFailedError, match="copied from elsewhere"):
            cipher.decrypt(sealed, *other)

    def test_tampered_value_does_not_decrypt(self) -> None:
        """Flipping one byte of the ciphertext is detected."""
        cipher = ring("k1")
        sealed = cipher.encrypt("token", "r", "s")
        raw = bytearray(base64.urlsafe_b64decode(sealed.split(":", 2)[2]))
        raw[-1] ^= 1
        tampered = f"{PREFIX}k1:{base64.urlsafe_b64encode(bytes(raw)).decode()}"
        with pytest.raises(PreconditionFailedError):
            cipher.decrypt(tampered, "r", "s")

    def test_older_keys_stay_readable_and_need_rotation(self) -> None:
        """A ring with a new key still reads the old key's values and flags them for rotation."""
        k1 = os.urandom(32)
        old = NoteCipher([("k1", k1)])
        sealed = old.encrypt("v", "r", "s")
        rotated = NoteCipher([("k1", k1), ("k2", os.urandom(32))])
        assert "v" == rotated.decrypt(sealed, "r", "s")
        assert rotated.needs_rotation(sealed)
        assert not rotated.needs_rotation(rotated.encrypt("v", "r", "s"))
        assert rotated.needs_rotation("written before encryption")

    def test_unknown_key_id_is_a_clear_error(self) -> None:
        """A value under a key the ring does not hold names that key."""
        sealed = ring("gone").encrypt("v", "r")
        with pytest.raises(PreconditionFailedError, match="'gone'"):
            ring("k2").decrypt(sealed, "r")

    def test_without_keys_values_pass_through(self) -> None:
        """No ring: values are stored and read in clear; clear values are read under a ring too."""
        cipher = NoteCipher()
        assert "v" == cipher.encrypt("v", "r")
        assert not cipher.needs_rotation("v")
        assert "v" == ring("k1").decrypt("v", "r")


class TestKeyFile:
    def test_reads_a_ring_newest_last(self, tmp_path: Path) -> None:
        """The last key of the file encrypts."""
        path = tmp_path / "keys.json"
        keys = [{"id": i, "key": base64.b64encode(os.urandom(32)).decode()} for i in ("a", "b")]
        path.write_text(json.dumps({"keys": keys}))
        assert "b" == NoteCipher.from_file(path).current

    @pytest.mark.parametrize(
        "content",
        [
            "not json",
            json.dumps({"keys": []}),
            json.dumps({"keys": [{"id": "a", "key": base64.b64encode(b"short").decode()}]}),
            json.dumps({"keys": [{"id": "bad id", "key": base64.b64encode(bytes(32)).decode()}]}),
            json.dumps({"keys": [{"id": "a", "key": "not base64!"}]}),
        ],
    )
    def test_malformed_files_are_refused(self, tmp_path: Path, content: str) -> None:
        """A malformed ring is a settings error naming the file, never a silent clear-text store."""
        path = tmp_path / "keys.json"
        path.write_text(content)
        with pytest.raises(KeyFileError, match=str(path.name)):
            NoteCipher.from_file(path)
