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
MAX_SINGLE_USE_KEY_LENGTH = 1024
"""Longest single-use object key (an authorization code, an action-token key, "<jti>.revoked")."""
MAX_SINGLE_USE_LIFESPAN_SECONDS = MAX_TIMEOUT_SECONDS
"""Longest single-use object lifespan: a revoked-token marker lives as long as its token could."""
MAX_AUTH_NOTES = 64
"""Most notes in each of the three note maps (user-session, auth, client notes) of one tab."""
MAX_AUTH_NOTE_VALUE_LENGTH = 16 * 1024
"""Longest note value on a tab, in characters: auth notes carry serialized broker contexts and requests."""
MAX_EXECUTION_STATUSES = 128
"""Most authenticators with an execution status on one tab."""
MAX_REQUIRED_ACTIONS = 64
"""Most required actions on one tab."""
MAX_CLIENT_SCOPES = 256
"""Most client scopes on one tab."""
MAX_AUTH_SESSION_BYTES = 64 * 1024
"""Largest stored tab (its compact JSON), in bytes; bounds a root at the tab limit times this."""
MAX_ROOT_AUTH_SESSION_BYTES = 2 * 1024 * 1024
"""Largest root authentication session (all its tabs' JSON), in bytes: a root fits in one reply."""
MAX_REFRESH_TOKEN_CHAINS = 64
"""Most refresh-token chains (reuse ids) whose rotation state one client session keeps; the chain
refreshed longest ago is forgotten first (its next token then counts as that chain's first use)."""
