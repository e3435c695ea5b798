"""Size and count limits on what a caller may store; the README lists them."""

from __future__ import annotations

MAX_ID_LENGTH = 255
"""Longest realm, user, client or session id, in characters."""
MAX_FIELD_LENGTH = 1024
"""Longest free-text field (login username, IP address, auth method, action, protocol, broker ids)."""
MAX_REDIRECT_URI_LENGTH = 4096
"""Longest redirect URI."""
MAX_NOTE_NAME_LENGTH = 255
"""Longest note name."""
MAX_NOTE_VALUE_LENGTH = 4096
"""Longest note value, in characters."""
MAX_NOTES = 64
"""Most notes on one user session or one client session."""
MAX_CLIENT_SESSIONS = 128
"""Most client sessions on one user session."""
MAX_TIMEOUT_SECONDS = 10 * 365 * 24 * 3600
"""Longest timeout a realm policy may set (ten years)."""
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Largest gRPC message the server accepts or sends."""
