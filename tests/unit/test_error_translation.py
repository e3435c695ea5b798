"""How storage/_errors.py maps what Redis answers to the store's errors: the Redis Cluster answers
that prove a command did not run become retryable partition errors, a failed node is unavailable,
and anything else is a plain SessionStoreError that quotes none of the Redis text."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from session_store import SessionStoreError
from session_store.errors import (
    LimitExceededError,
    PartitionFrozenError,
    PartitionMovedError,
    SessionNotFoundError,
    ShardUnavailableError,
)
from session_store.storage._errors import translate


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            redis_errors.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
            PartitionFrozenError,
        ),
        (redis_errors.ResponseError("ASK 1584 127.0.0.1:7001"), PartitionFrozenError),
        (redis_errors.ResponseError("MOVED 1584 127.0.0.1:7001"), PartitionMovedError),
        (redis_errors.ResponseError("CLUSTERDOWN The cluster is down"), ShardUnavailableError),
        (redis_errors.NoScriptError("NOSCRIPT No matching script."), PartitionFrozenError),
        (
            redis_errors.ResponseError("READONLY You can't write against a read only replica."),
            ShardUnavailableError,
        ),
        (redis_errors.ResponseError("OOM command not allowed"), LimitExceededError),
        (redis_errors.ResponseError("SS_NOT_FOUND session"), SessionNotFoundError),
        (redis_errors.ConnectionError("Connection refused"), ShardUnavailableError),
        (redis_errors.TimeoutError("Timeout reading"), ShardUnavailableError),
    ],
)
def test_redis_answers_map_to_store_errors(raised: Exception, expected: type[SessionStoreError]) -> None:
    """Each answer becomes exactly the expected class."""
    assert expected is type(translate(raised, "cluster/3"))


@pytest.mark.parametrize(
    "raised",
    [
        redis_errors.ResponseError("WEIRD user-42 secret-token"),
        redis_errors.DataError("user-42 secret-token"),
    ],
)
def test_unexpected_failures_quote_no_redis_text(raised: Exception) -> None:
    """An answer we do not know is a plain SessionStoreError naming the shard, not the Redis text
    (it may hold user ids or tokens)."""
    translated = translate(raised, "cluster/3")

    assert SessionStoreError is type(translated)
    assert "cluster/3" in str(translated)
    assert "secret" not in str(translated)
