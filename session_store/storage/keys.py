"""The key layout: the only code that formats a Redis key.

Every key that belongs to a partition starts with ``ss:{PPP}:`` where PPP is the partition number in
three hex digits; the braces make it the Redis Cluster hash tag, so all keys of one partition (and
so of one user) share one slot. Realm and user ids cannot hold whitespace (see model.ids), so a
space separates them unambiguously; free-text parts (broker ids) always come last.

==========================================  =====================================================
key                                         holds
==========================================  =====================================================
``ss:{P}:s:<id>`` / ``ss:{P}:o:<id>``       online / offline user session hash (TTL = deadline)
``ss:{P}:p:<id>``                           pointer: partition of a caller-brought id's session
``ss:{P}:u:<realm> <user>`` (``uo``)        zset of the user's session ids (online / offline)
``ss:{P}:r:<realm>`` (``ro``)               zset session id -> deadline ms, per realm
``ss:{P}:c:<realm>`` (``co``)               zset "<client> <session id>" -> client deadline ms
``ss:{P}:bs:<realm> <broker session id>``   zset hint "<partition>:<session id>" (online)
``ss:{P}:bu:<realm> <broker user id>``      zset hint, online (``buo``: offline)
``ss:{P}:su:<realm> <key>``                 single-use object hash: notes + deadline (TTL)
``ss:{P}:lf:<realm> <user>``                login-failure hash of a user (no TTL)
``ss:{P}:lfr:<realm>``                      set of the user ids with a login-failure record
``ss:{P}:a:<realm> <root id>``              root authentication session hash: ``ts`` (epoch s of
                                            its last change), ``n`` (tabs created), ``t:<tab id>``
                                            tab JSON; P = home partition of the id (TTL = deadline)
``ss:{P}:x``                                expiry index: zset "s <id>"/"o <id>" -> deadline ms of
                                            every session of the partition not yet ended
``ss:{P}:xm``                               hash, same members -> JSON {r realm, u user, m max
                                            deadline ms or -1, c [client ids]}: what an event needs
                                            after Redis dropped the session hash
``ss:policy:<realm>``                       the realm's session policy (JSON), on every shard
``ss:markers:<realm>``                      bulk-removal markers (hash), on every shard
``ss:events``                               the shard's event stream (Redis Stream), see below
``ss:due``                                  zset partition (3 hex digits) -> lower bound of the
                                            earliest deadline in its expiry index (or a sweeper's
                                            claim: now + lease)
``ss:counts``                               hash "s:<realm>"/"o:<realm>" -> sessions not yet ended,
                                            "e:<type>" -> events appended, on this shard
``ss:shard``                                this shard's random identity (names it in cursors)
``ss:own``                                  which partitions this shard owns: one byte per partition
                                            ('1' owned, '3' being copied out, '2' frozen, '4' frozen
                                            and handed to a move's target, '0' not owned), then
                                            ``:`` and the map epoch it was set from
``ss:journal``                              set of the keys touched in partitions being copied out
``ss:topology``                             hash: ``epoch``, ``map`` (JSON: shards with URL and
                                            weight, owner of every partition); on every shard
``ss:rebalance``                            the move plan in progress (JSON), on every shard
``ss:rebalance:lock``                       the mover's lease
==========================================  =====================================================

The per-shard keys (events, due, counts, policies, markers, own, topology ...) carry no partition:
in standalone mode a script may touch any key of its shard, and one stream per shard is what lets a
watcher follow a whole shard with one XREAD.

**Grouped layout (the Redis Cluster backend).** In a Redis Cluster a script may only touch keys of
one slot, so there the partitions are grouped into 16 (or 256) *groups* and the hash tag is the group:
the first one (or two) hex digits of the partition. A partition key ``ss:{abc}:rest`` becomes
``ss:{a}bc:rest`` (``ss:{ab}c:rest``), the same length with the braces moved, and a per-shard key
``ss:events`` becomes ``ss:{a}:events``: each group is a *virtual shard* with its own per-shard keys,
all in one slot. Code everywhere builds keys in the standalone form; the group's connection
(`storage/cluster.py`) maps them with `in_group` on the way out, so this module stays the only code
that formats a key.

Event stream entries (fields; absent fields are empty): ``t`` type (created, refreshed,
client_attached, client_detached, logged_out, revoked, expired), ``r`` realm, ``u`` user id, ``s``
session id, ``o`` "1" for an offline session, ``c`` JSON array of the client ids involved, ``why``
reason (revoked: admin, limit, user, realm_removed; expired: idle, max; client_detached: logout,
client_removed), ``at`` epoch ms of the decision, ``dl`` the deadline ms (expired only).
"""

from __future__ import annotations

import re

from session_store.model.ids import PARTITION_COUNT

PREFIX = "ss:"
_PARTITIONED = re.compile(r"ss:\{([0-9a-f]{1,3})\}([0-9a-f]{0,2}):")
"""A partitioned key in either layout: ``ss:{abc}:`` (standalone) or ``ss:{a}bc:`` / ``ss:{ab}c:``."""


def tag(partition: int) -> str:
    """The hash-tagged prefix of every key of a partition."""
    if not 0 <= partition < PARTITION_COUNT:
        raise ValueError(f"partition {partition} out of range")
    return f"{PREFIX}{{{partition:03x}}}:"


def session(partition: int, session_id: str, *, offline: bool) -> str:
    """The hash of one user session."""
    return f"{tag(partition)}{'o' if offline else 's'}:{session_id}"


def pointer(partition: int, session_id: str) -> str:
    """The pointer from a caller-brought id's home partition to its session's partition."""
    return f"{tag(partition)}p:{session_id}"


def user_index(partition: int, realm: str, user_id: str, *, offline: bool) -> str:
    """The set of one user's session ids."""
    return f"{tag(partition)}{'uo' if offline else 'u'}:{realm} {user_id}"


def realm_index(partition: int, realm: str, *, offline: bool) -> str:
    """A partition's sessions of one realm, scored by deadline."""
    return f"{tag(partition)}{'ro' if offline else 'r'}:{realm}"


def client_index(partition: int, realm: str, *, offline: bool) -> str:
    """A partition's client sessions of one realm, scored by deadline."""
    return f"{tag(partition)}{'co' if offline else 'c'}:{realm}"


def broker_session_hints(partition: int, realm: str, broker_session_id: str) -> str:
    """Hints to the sessions with a broker session id (online only, as in Keycloak)."""
    return f"{tag(partition)}bs:{realm} {broker_session_id}"


def broker_user_hints(partition: int, realm: str, broker_user_id: str, *, offline: bool) -> str:
    """Hints to the sessions with a broker user id."""
    return f"{tag(partition)}{'buo' if offline else 'bu'}:{realm} {broker_user_id}"


def single_use_object(partition: int, realm: str, key: str) -> str:
    """A single-use object (partition: lookup_partition(realm, "su", key)); the key comes last."""
    return f"{tag(partition)}su:{realm} {key}"


def login_failure(partition: int, realm: str, user_id: str) -> str:
    """A user's login-failure record, in the user's partition."""
    return f"{tag(partition)}lf:{realm} {user_id}"


def login_failure_index(partition: int, realm: str) -> str:
    """The user ids of a partition that have a login-failure record in a realm."""
    return f"{tag(partition)}lfr:{realm}"


def root_auth_session(partition: int, realm: str, root_id: str) -> str:
    """A root authentication session with its tabs (partition: home_partition(root_id))."""
    return f"{tag(partition)}a:{realm} {root_id}"


def realm_policy(realm: str) -> str:
    """A realm's session policy; written to every shard."""
    return f"{PREFIX}policy:{realm}"


def realm_markers(realm: str) -> str:
    """A realm's removal markers (field "" = the realm, else a client id -> epoch s); every shard."""
    return f"{PREFIX}markers:{realm}"


def expiry_index(partition: int) -> str:
    """A partition's sessions not yet ended, scored by deadline (the event pipeline's source)."""
    return f"{tag(partition)}x"


def expiry_meta(partition: int) -> str:
    """What an event about a partition's session needs once its hash is gone."""
    return f"{tag(partition)}xm"


def expiry_member(session_id: str, *, offline: bool) -> str:
    """The member of a session in its partition's expiry index and meta hash."""
    return f"{'o' if offline else 's'} {session_id}"


EVENTS = f"{PREFIX}events"
"""The shard's event stream."""
DUE = f"{PREFIX}due"
"""The shard's partitions with a deadline to sweep, scored by (a lower bound of) the earliest."""
COUNTS = f"{PREFIX}counts"
"""The shard's counters: sessions per realm, events per type."""
SHARD_IDENTITY = f"{PREFIX}shard"
"""The shard's random identity."""


OWNERSHIP = f"{PREFIX}own"
"""The shard's ownership string (read by every script's guard)."""
JOURNAL = f"{PREFIX}journal"
"""The keys touched in this shard's partitions that are being copied out."""
TOPOLOGY = f"{PREFIX}topology"
"""The partition map with its epoch (the newest any mover wrote to this shard)."""
REBALANCE = f"{PREFIX}rebalance"
"""The move plan in progress."""
REBALANCE_LOCK = f"{PREFIX}rebalance:lock"
"""The lease of the one mover that may work on the plan."""
GUARD_KEYS = (OWNERSHIP, JOURNAL)
"""Appended to every script call: the ownership guard of the prelude takes them off again."""


def partition_pattern(first_digit: int) -> str:
    """A SCAN pattern for every key of the partitions whose number starts with hex digit `first_digit`."""
    if not 0 <= first_digit < 16:
        raise ValueError(f"hex digit {first_digit} out of range")
    return f"{PREFIX}{{{first_digit:x}??}}:*"


SHARD_KEYS = (EVENTS, DUE, COUNTS)
"""The per-shard keys a partition's script may take besides its partition's own keys."""


def event_keys(partition: int) -> list[str]:
    """The keys a script that begins, changes or ends a session of a partition takes for events."""
    return [expiry_index(partition), expiry_meta(partition), DUE, EVENTS, COUNTS]


def partition_of(key: str) -> int:
    """The partition of a partitioned key, in either layout (the inverse of `tag` and `in_group`).

    Raises:
        ValueError: the key has no partition tag.
    """
    match = _PARTITIONED.match(key)
    # int(_, 16) alone would also take "-01", " 1f", "0_1" or "ABC": only the exact tag counts.
    if match is None or len(match.group(1)) + len(match.group(2)) != 3:
        raise ValueError(f"not a partitioned key: {key!r}")
    return int(match.group(1) + match.group(2), 16)


GROUP_COUNTS = (16, 256)
"""How many groups (virtual shards) a Redis Cluster deployment may use: the hash tag is then the first
one or two hex digits of the partition."""


def group_width(groups: int) -> int:
    """Hex digits of the group tag for a group count (16 -> 1, 256 -> 2).

    Raises:
        ValueError: not one of `GROUP_COUNTS`.
    """
    if groups not in GROUP_COUNTS:
        raise ValueError(f"groups must be one of {GROUP_COUNTS}, not {groups}")
    return 1 if groups == 16 else 2


def group_of(partition: int, groups: int) -> int:
    """The group (virtual shard) of a partition: its first hex digit(s)."""
    if not 0 <= partition < PARTITION_COUNT:
        raise ValueError(f"partition {partition} out of range")
    return partition >> (4 * (3 - group_width(groups)))


def group_tag(group: int, groups: int) -> str:
    """The hash tag of a group, braces included: every key of the group hashes to its slot."""
    width = group_width(groups)
    if not 0 <= group < groups:
        raise ValueError(f"group {group} out of range")
    return f"{{{group:0{width}x}}}"


def in_group(key: str, group: int, groups: int) -> str:
    """A standalone-layout key in the grouped layout of `group` (see the module docstring).

    A partition key keeps its partition (its own first digits must name `group`, else Redis answers
    CROSSSLOT: a routing bug, never a silent write elsewhere); a key already grouped is returned as is,
    so keys read back from the cluster (SCAN) can be passed again; a per-shard key gets the group's tag.

    Raises:
        ValueError: not one of our keys.
    """
    if key.startswith("ss:{"):
        if key[7:8] == "}":  # ss:{abc}:rest
            width = group_width(groups)
            return f"ss:{{{key[4 : 4 + width]}}}{key[4 + width : 7]}{key[8:]}"
        return key
    if key.startswith(PREFIX):
        return f"{PREFIX}{group_tag(group, groups)}:{key[len(PREFIX) :]}"
    raise ValueError(f"not a session-store key: {key!r}")


def standalone_form(key: str) -> str:
    """A partition key in the standalone layout, whichever layout it is in (the inverse of `in_group`
    for partition keys; others are returned as they are): lets tools and tests compare keys read
    from either backend."""
    if key.startswith("ss:{") and key[7:8] != "}":
        match = _PARTITIONED.match(key)
        if match is not None and len(match.group(1)) + len(match.group(2)) == 3:
            return f"{tag(int(match.group(1) + match.group(2), 16))}{key[match.end() :]}"
    return key


def pattern_in_group(pattern: str, group: int, groups: int) -> str:
    """A SCAN pattern over every partitioned key (``ss:{*``) limited to one group's keys.

    Raises:
        ValueError: any other pattern (the grouped layout supports no other SCAN).
    """
    if pattern != f"{PREFIX}{{*":
        raise ValueError(f"no grouped form of the SCAN pattern {pattern!r}")
    return f"{PREFIX}{group_tag(group, groups)}*"
