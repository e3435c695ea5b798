"""The Python client of session-store: `AsyncSessionStoreClient` and `SessionStoreClient`."""

from __future__ import annotations

from session_store.client._credentials import ClientTLS
from session_store.client.aio import AsyncSessionStoreClient
from session_store.client.sync import SessionStoreClient

__all__ = ["AsyncSessionStoreClient", "ClientTLS", "SessionStoreClient"]
