"""The one place where Redis errors and our script error replies become session-store exceptions."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from redis import exceptions as redis_errors

from session_store.errors import (
    LimitExceededError,
    PartitionFrozenError,
    PartitionMovedError,
    RefreshTokenReuseError,
    SessionExistsError,
    SessionLimitExceededError,
    SessionNotFoundError,
    SessionStoreError,
    ShardUnavailableError,
    StaleRefreshTokenError,
)


class RedirectError(Exception):
    """Internal: the id's session lives in another partition (found through its pointer)."""

    def __init__(self, partition: int) -> None:
        """Remember where to go next."""
        super().__init__(f"session is in partition {partition}")
        self.partition = partition


class StaleHintError(Exception):
    """Internal: the keys the caller passed were based on a stale read; retry with `payload`."""

    def __init__(self, payload: str) -> None:
        """Remember what the script saw."""
        super().__init__("stale key hint")
        self.payload = payload


class NoMapError(Exception):
    """Internal: the shard has no ownership string (new or wiped); the router seeds it and retries."""


def _moved(message: str) -> PartitionMovedError:
    partition, _, epoch = message.partition(" ")
    known = int(epoch) if epoch.isdigit() else 0
    return PartitionMovedError(f"partition {partition} has moved to another shard", epoch=known)


def _frozen(message: str) -> PartitionFrozenError:
    return PartitionFrozenError(f"partition {message} is being moved; retry in a few milliseconds")


log = structlog.get_logger(__name__)

_SCRIPT_ERRORS: dict[str, type[SessionStoreError]] = {
    "SS_NOT_FOUND": SessionNotFoundError,
    "SS_EXISTS": SessionExistsError,
    "SS_LIMIT": LimitExceededError,
    "SS_SESSION_LIMIT": SessionLimitExceededError,
    "SS_RT_STALE": StaleRefreshTokenError,
    "SS_RT_REUSE": RefreshTokenReuseError,
}


_INTERNAL_SIGNALS: dict[str, Callable[[str], Exception]] = {
    "SS_REDIRECT": lambda message: RedirectError(int(message)),
    "SS_STALE": StaleHintError,
    "SS_NO_MAP": lambda _message: NoMapError(),
    "SS_MOVED": _moved,
    "SS_FROZEN": _frozen,
}
_REDIS_ERRORS: dict[str, tuple[type[SessionStoreError], str]] = {
    "OOM": (LimitExceededError, "is out of memory"),
    "READONLY": (ShardUnavailableError, "cannot take writes now"),
    "LOADING": (ShardUnavailableError, "is loading its data"),
    "MASTERDOWN": (ShardUnavailableError, "lost its primary"),
    # min-replicas-to-write refused the write before the script ran: safe to retry elsewhere/later.
    "NOREPLICAS": (ShardUnavailableError, "has too few replicas in sync to take writes"),
    "BUSY": (ShardUnavailableError, "is busy running a script"),
    # A shard we cannot use as configured (credentials, ACL) is unavailable to the caller; the
    # operator sees the reason in the startup check and the shard error metrics.
    "NOAUTH": (ShardUnavailableError, "requires authentication"),
    "WRONGPASS": (ShardUnavailableError, "refused our credentials"),
    "NOPERM": (ShardUnavailableError, "refused a command to our ACL user"),
    # Redis Cluster answers that prove the command did not run, left when storage/cluster.py's bounds
    # ran out: a slot being migrated (keys split between two nodes), a slot that moved again meanwhile
    # (both retried by the router like a frozen or moved partition), a cluster without quorum.
    "TRYAGAIN": (PartitionFrozenError, "is in a slot being migrated; retry in a few milliseconds"),
    "ASK": (PartitionFrozenError, "is in a slot being migrated; retry in a few milliseconds"),
    "MOVED": (PartitionMovedError, "is in a slot that moved; retry"),
    "CLUSTERDOWN": (ShardUnavailableError, "is in a Redis Cluster that is down"),
}


def _script_message(text: str) -> tuple[str, str]:
    """Split "SS_CODE message script: <sha>, on @user_script:N." into code and message."""
    text = text.split(" script: ", 1)[0].strip()
    code, _, message = text.partition(" ")
    return code, message


def _translate_answer(exc: redis_errors.ResponseError, shard: str) -> Exception:
    """An error answer of Redis or of our scripts."""
    code, message = _script_message(str(exc))
    if code in _INTERNAL_SIGNALS:
        return _INTERNAL_SIGNALS[code](message)
    if code in _SCRIPT_ERRORS:
        return _SCRIPT_ERRORS[code](message)
    if code in _REDIS_ERRORS:
        cls, text = _REDIS_ERRORS[code]
        return cls(f"shard {shard} {text} ({code})")
    # Only the error's first word: the rest may quote keys or arguments (user ids, tokens).
    log.warning("shard_unexpected_error", shard=shard, code=code[:40])
    return SessionStoreError(f"shard {shard} answered an unexpected error")


def translate(exc: Exception, shard: str) -> Exception:
    """Map a redis-py exception to ours (most specific first); the caller raises it `from exc`."""
    if isinstance(exc, redis_errors.ResponseError) and not isinstance(exc, redis_errors.NoScriptError):
        return _translate_answer(exc, shard)
    if isinstance(exc, redis_errors.NoScriptError):
        # Still NOSCRIPT after Shard.call loaded the scripts (a failover moved the slot meanwhile):
        # the script did not run, so the router may retry it like a frozen partition.
        return PartitionFrozenError(f"shard {shard} had not loaded the script yet (NOSCRIPT); retry")
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return ShardUnavailableError(f"shard {shard} is unavailable")
    log.warning("shard_unexpected_failure", shard=shard, error_type=type(exc).__name__)
    return SessionStoreError(f"shard {shard} failed unexpectedly")
