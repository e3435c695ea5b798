"""Single-use objects (Keycloak's SingleUseObjectProvider, keycloak-semantics.md §1.5): value and rules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from session_store.errors import InvalidArgumentError
from session_store.model.limits import MAX_SINGLE_USE_KEY_LENGTH, MAX_SINGLE_USE_LIFESPAN_SECONDS

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

REVOKED_KEY_SUFFIX = ".revoked"
"""Keycloak's `SingleUseObjectProvider.REVOKED_KEY`: an object under such a key marks a revoked token."""


@dataclass(frozen=True, kw_only=True)
class SingleUseObject:
    """The notes stored under a key, and when they expire."""

    key: str
    notes: Mapping[str, str] = field(default_factory=dict)
    expires_at_ms: int = 0
    """Epoch ms; the object is gone from this instant on."""


def validate_single_use_key(key: str) -> str:
    """Check a single-use object key (codes, action-token keys, "<token id>.revoked").

    Returns:
        The key unchanged.

    Raises:
        InvalidArgumentError: empty, longer than MAX_SINGLE_USE_KEY_LENGTH, or holding a control
            character (spaces are allowed).
    """
    if not key:
        raise InvalidArgumentError("key must not be empty")
    if len(key) > MAX_SINGLE_USE_KEY_LENGTH:
        raise InvalidArgumentError(f"key is longer than {MAX_SINGLE_USE_KEY_LENGTH} characters")
    if _CONTROL_CHARS.search(key):
        raise InvalidArgumentError("key must not contain control characters")
    return key


def validate_lifespan(seconds: int) -> int:
    """Check a single-use object lifespan (Keycloak: must be > 0).

    Raises:
        InvalidArgumentError: not positive, or above MAX_SINGLE_USE_LIFESPAN_SECONDS.
    """
    if seconds <= 0:
        raise InvalidArgumentError("lifespan_seconds must be > 0")
    if seconds > MAX_SINGLE_USE_LIFESPAN_SECONDS:
        raise InvalidArgumentError(f"lifespan_seconds must be at most {MAX_SINGLE_USE_LIFESPAN_SECONDS}")
    return seconds
