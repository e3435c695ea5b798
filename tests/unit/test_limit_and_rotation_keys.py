"""KEYS of the rotation and session-limit script calls: one slot each; no extra calls without limits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.model.ids import home_partition, user_partition
from session_store.model.session import (
    LimitBehavior,
    NewClientSession,
    NewUserSession,
    RefreshToken,
    SessionLimits,
)
from session_store.storage import keys
from tests.unit.test_keys import (
    SCRIPT_CALLS,
    Call,
    CallRecordedError,
    RecordingRepository,
    assert_one_slot_per_call,
    redirect_target,
    valid_ids,
)


class StaleOnce(RecordingRepository):
    """A recorder whose first call of `script` answers that the user index holds `ids`."""

    def __init__(self, script: str, ids: Sequence[str]) -> None:
        """Answer stale once for `script`."""
        super().__init__()
        self._stale_script = script
        self._ids = list(ids)

    async def _call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        if script == self._stale_script and self._ids:
            self.calls.append(Call(partition, script, tuple(keys_)))
            ids, self._ids = self._ids, []
            return ["stale", *ids]
        return await super()._call(partition, script, keys_, args)


JTI = "jti-1"
TERMINATE = SessionLimits(
    realm_limit=3, client_limit=2, client_id="app", behavior=LimitBehavior.TERMINATE_OLDEST_SESSION
)


EVENT_KEYS = keys.event_keys(0)


class TestLimitedCreateKeys:
    @SCRIPT_CALLS
    @given(realm=valid_ids, user_id=valid_ids, ids=st.lists(valid_ids, min_size=1, max_size=5, unique=True))
    async def test_retried_with_the_users_session_keys_in_one_slot(
        self, realm: str, user_id: str, ids: list[str]
    ) -> None:
        """A limited create is retried with the session keys of the ids the index holds, all in one slot."""
        repo = StaleOnce("create_user_session", ids)

        with pytest.raises(CallRecordedError):
            await repo.create_user_session(NewUserSession(realm=realm, user_id=user_id), limits=TERMINATE)

        partition = user_partition(realm, user_id)
        first, retry = repo.calls[-2:]
        fixed = 4 + len(EVENT_KEYS)
        assert fixed == len(first.keys)
        assert first.keys == retry.keys[:fixed]
        assert keys.client_index(partition, realm, offline=False) == retry.keys[3]
        assert keys.event_keys(partition) == list(retry.keys[4:fixed])
        assert [keys.session(partition, i, offline=False) for i in ids] == list(retry.keys[fixed:])
        assert_one_slot_per_call(repo.calls)

    @pytest.mark.parametrize("limits", [None, SessionLimits(), SessionLimits(client_id="app")])
    async def test_without_limits_a_create_is_one_call(self, limits: SessionLimits | None) -> None:
        """No limits, or limits that are all 0, keep the create at one script call with its fixed keys."""
        repo = RecordingRepository()

        with pytest.raises(CallRecordedError):
            await repo.create_user_session(NewUserSession(realm="master", user_id="alice"), limits=limits)

        assert [("create_user_session", 4 + len(EVENT_KEYS))] == [(c.script, len(c.keys)) for c in repo.calls]


class TestLimitedAttachKeys:
    @SCRIPT_CALLS
    @given(
        realm=valid_ids,
        user_id=valid_ids,
        session_id=valid_ids,
        ids=st.lists(valid_ids, min_size=1, max_size=5, unique=True),
    )
    async def test_reads_the_user_then_attaches_with_the_users_keys(
        self, realm: str, user_id: str, session_id: str, ids: list[str]
    ) -> None:
        """A limited attach reads the session, then attaches with the user's index and sessions: one slot."""
        repo = StaleOnce("attach_client_session", ids)
        repo.online_user = (realm, user_id, "")

        with pytest.raises(CallRecordedError):
            await repo.attach_client_session(
                realm, session_id, NewClientSession(client_id="app"), offline=False, limits=TERMINATE
            )

        partition = home_partition(session_id)
        assert ["get_user_session", "attach_client_session", "attach_client_session"] == [
            c.script for c in repo.calls
        ]
        assert (
            keys.session(partition, session_id, offline=False),
            keys.pointer(partition, session_id),
            keys.client_index(partition, realm, offline=False),
            *keys.event_keys(partition),
            keys.user_index(partition, realm, user_id, offline=False),
            keys.realm_index(partition, realm, offline=False),
            keys.session(partition, session_id, offline=False),
        ) == repo.calls[1].keys
        fixed = 5 + len(EVENT_KEYS)
        assert [keys.session(partition, i, offline=False) for i in ids] == list(repo.calls[2].keys[fixed:])
        assert_one_slot_per_call(repo.calls)

    async def test_without_a_client_limit_an_attach_is_one_call(self) -> None:
        """Limits without a client limit (an attach ignores the realm limit) keep the attach at one call."""
        repo = RecordingRepository()

        with pytest.raises(CallRecordedError):
            await repo.attach_client_session(
                "master",
                "sid",
                NewClientSession(client_id="app"),
                offline=False,
                limits=SessionLimits(realm_limit=2),
            )

        assert [("attach_client_session", 3 + len(EVENT_KEYS))] == [
            (c.script, len(c.keys)) for c in repo.calls
        ]


class TestUseRefreshTokenKeys:
    @SCRIPT_CALLS
    @given(realm=valid_ids, session_id=valid_ids, offline=st.booleans(), redirected=st.booleans())
    async def test_session_pointer_and_indexes_of_one_slot(
        self, realm: str, session_id: str, offline: bool, redirected: bool
    ) -> None:
        """use_refresh_token sends session, pointer, realm and client index keys of the session's slot."""
        repo = RecordingRepository(redirect_to=redirect_target(session_id) if redirected else None)

        with pytest.raises(CallRecordedError):
            await repo.use_refresh_token(
                realm, session_id, RefreshToken(client_id="app", token_id=JTI, issued_at=1), offline=offline
            )

        partition = redirect_target(session_id) if redirected else home_partition(session_id)
        assert (
            Call(
                partition,
                "use_refresh_token",
                (
                    keys.session(partition, session_id, offline=offline),
                    keys.pointer(partition, session_id),
                    keys.realm_index(partition, realm, offline=offline),
                    keys.client_index(partition, realm, offline=offline),
                    *keys.event_keys(partition),
                ),
            )
            == repo.calls[-1]
        )
        assert (2 if redirected else 1) == len(repo.calls)
        assert_one_slot_per_call(repo.calls)
