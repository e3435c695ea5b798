"""The public surface: `session_store.__all__` and the error tree the client and server share."""

from __future__ import annotations

import inspect

import grpc

import session_store
from session_store import errors
from session_store.errors import ERRORS_BY_REASON, SessionStoreError, UnavailableError


def all_error_classes() -> set[type[SessionStoreError]]:
    """SessionStoreError and every subclass of it, at any depth."""
    found: set[type[SessionStoreError]] = set()
    pending: list[type[SessionStoreError]] = [SessionStoreError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("session_store."):  # not a test's own subclass
            found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


class TestAll:
    def test_all_is_sorted_without_duplicates(self) -> None:
        """`__all__` is sorted and names each export once."""
        assert sorted(set(session_store.__all__)) == session_store.__all__

    def test_every_exported_name_resolves(self) -> None:
        """Every name in `__all__` is an attribute of the package."""
        missing = [name for name in session_store.__all__ if not hasattr(session_store, name)]

        assert [] == missing

    def test_every_public_error_is_exported(self) -> None:
        """Every error class of session_store.errors is re-exported by the package."""
        public = {
            name
            for name, obj in vars(errors).items()
            if inspect.isclass(obj) and obj.__module__ == errors.__name__ and not name.startswith("_")
        }

        assert set() == public - set(session_store.__all__)

    def test_client_settings_and_policy_are_exported(self) -> None:
        """The clients, Settings and the realm policy types are part of the public surface."""
        expected = {
            "AsyncSessionStoreClient",
            "SessionStoreClient",
            "Settings",
            "RealmPolicy",
            "ClientPolicy",
        }

        assert set() == expected - set(session_store.__all__)


class TestErrorTree:
    def test_every_code_is_a_grpc_status_code_name(self) -> None:
        """Each error class's code names a grpc.StatusCode member."""
        bad = {
            cls.__name__: cls.code
            for cls in ERRORS_BY_REASON.values()
            if cls.code not in grpc.StatusCode.__members__
        }

        assert {} == bad

    def test_reasons_are_unique_and_index_their_class(self) -> None:
        """Every error class has its own reason, and the table maps each reason to its class."""
        classes = all_error_classes()

        assert len(classes) == len({cls.reason for cls in classes})
        assert {cls.reason: cls for cls in classes} == ERRORS_BY_REASON

    def test_every_error_class_is_in_the_table(self) -> None:
        """The client can raise every error the server can: all subclasses are in ERRORS_BY_REASON."""
        assert all_error_classes() == set(ERRORS_BY_REASON.values())

    def test_unavailable_errors_are_all_unavailable(self) -> None:
        """Moved, frozen and shard-down errors travel as UNAVAILABLE, so clients may retry them."""
        codes = {cls.code for cls in ERRORS_BY_REASON.values() if issubclass(cls, UnavailableError)}

        assert {"UNAVAILABLE"} == codes

    def test_base_error_is_internal(self) -> None:
        """An error that is no more specific than SessionStoreError is INTERNAL."""
        assert ("INTERNAL", "INTERNAL") == (SessionStoreError.code, SessionStoreError.reason)

    def test_message_is_kept(self) -> None:
        """An error keeps the caller-facing message as `message` and as its text."""
        error = errors.SessionNotFoundError("session not found")

        assert ("session not found", "session not found") == (error.message, str(error))
