"""The history of a storm: every operation, clock change, fault and watched event, as JSON lines.

One record per line, each with a ``type``: ``meta`` (the run's parameters: realm, policy, limited
users), ``op`` (one client call: who, what, when invoked and acknowledged, and the outcome),
``clock`` (a move of the nodes' shared test clock, with the window during which nodes disagreed),
``fault`` (a fault the rig applied, with its window), ``event`` (a session event the watcher
received) and ``note`` (anything else the checker must know, e.g. whether the watcher drained).

Outcomes: ``ok``; ``fail``, an error that says what happened (not found, limit denial, a rotation
rejection: the call changed nothing, or only what its error documents); ``unknown``, an error that
does not (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL...): the call may have taken effect, even after
the error came back (a request stuck in a stalled shard runs when the shard resumes).

Times ``t0``/``t1`` are seconds on the runner's monotonic clock since the run began; clock values
(``*_ms``) are the nodes' test clock, in epoch milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from session_store.errors import (
    PartitionFrozenError,
    PartitionMovedError,
    SessionStoreError,
    StoreMemoryLowError,
    UnavailableError,
)

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class Meta:
    """The run's parameters the checker reasons with."""

    scenario: str
    realm: str
    marker_realm: str
    clients: tuple[str, ...]
    users: tuple[str, ...]
    idle_s: int
    max_s: int
    max_reuse: int
    limits: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """Limited users: user -> (realm limit, behavior "deny" or "terminate")."""
    initial_clock_ms: int = 0
    shards: int = 0
    nodes: int = 0
    appendfsync: str = ""
    events: bool = True
    """Whether a watcher recorded the event stream."""
    expect: tuple[str, ...] = ()
    """A control run: the violation kinds its fault must produce (see scenarios.Scenario.expect)."""


@dataclass(frozen=True, kw_only=True)
class Op:
    """One client call as the caller saw it."""

    seq: int
    worker: str
    node: int
    op: str
    args: Mapping[str, Any]
    t0: float
    t1: float
    outcome: str
    result: Mapping[str, Any] | None = None
    error: str = ""
    detail: str = ""
    """The error's message (for the operator; the checker reads `error` and `outcome` only)."""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        """Acknowledged success."""
        return self.outcome == OK

    @property
    def unknown(self) -> bool:
        """Unacknowledged: it may have taken effect, at any time after `t0`."""
        return self.outcome == UNKNOWN

    @property
    def stray_possible(self) -> bool:
        """An execution of this call may land after `t1`: its outcome is unknown, or it was retried (an
        earlier attempt that failed with UNAVAILABLE may still run, e.g. when a stalled shard resumes)."""
        return self.outcome == UNKNOWN or self.attempts > 1


@dataclass(frozen=True, kw_only=True)
class ClockChange:
    """The shared test clock moved from `from_ms` to `to_ms`; inside [t0, t1] a node may have used any
    value from `low_ms` (a restarted node starts at the wall clock) up to `to_ms`."""

    t0: float
    t1: float
    from_ms: int
    to_ms: int
    low_ms: int
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Fault:
    """A fault the rig applied during [t0, t1] (kill and restart, stall and resume, clock jump)."""

    t0: float
    t1: float
    kind: str
    target: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Event:
    """A session event as the watcher received it (`t`: when)."""

    t: float
    id: str
    kind: str
    """The event type: created, client_attached, client_detached, logged_out, revoked, expired..."""
    realm: str
    user: str
    session: str
    clients: tuple[str, ...] = ()
    reason: str = ""
    at_ms: int = 0
    deadline_ms: int = 0


@dataclass
class History:
    """A whole run, read back from its JSONL file."""

    meta: Meta
    ops: list[Op] = field(default_factory=list)
    clocks: list[ClockChange] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


def classify(exc: BaseException) -> str:
    """The outcome an exception stands for: FAIL when it proves what happened, else UNKNOWN."""
    if isinstance(exc, PartitionMovedError | PartitionFrozenError | StoreMemoryLowError):
        return FAIL  # the server proves the call did not run
    if isinstance(exc, UnavailableError):
        return UNKNOWN
    if type(exc) is SessionStoreError:
        return UNKNOWN  # INTERNAL / UNKNOWN status: no reason, no proof
    if isinstance(exc, SessionStoreError):
        return FAIL
    return UNKNOWN


def _record(kind: str, value: object) -> str:
    data = asdict(value)  # type: ignore[call-overload]  # one of the record dataclasses above
    return json.dumps({"type": kind, **data}, separators=(",", ":"), sort_keys=True)


class HistoryWriter:
    """Appends records to a JSONL file as they happen (line-buffered: a crash keeps what was written)."""

    def __init__(self, path: Path) -> None:
        """Create (truncate) `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", buffering=1)
        self._seq = 0

    def next_seq(self) -> int:
        """A new operation sequence number."""
        self._seq += 1
        return self._seq

    def meta(self, meta: Meta) -> None:
        """Write the run's parameters (first)."""
        self._file.write(_record("meta", meta) + "\n")

    def op(self, op: Op) -> None:
        """Write one operation."""
        self._file.write(_record("op", op) + "\n")

    def clock(self, change: ClockChange) -> None:
        """Write one clock change."""
        self._file.write(_record("clock", change) + "\n")

    def fault(self, fault: Fault) -> None:
        """Write one fault."""
        self._file.write(_record("fault", fault) + "\n")

    def event(self, event: Event) -> None:
        """Write one watched event."""
        self._file.write(_record("event", event) + "\n")

    def note(self, **values: Any) -> None:
        """Write free-form facts for the checker and the report (later notes win)."""
        self._file.write(json.dumps({"type": "note", **values}, sort_keys=True) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


def _tuple_fields(raw: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    for name in names:
        if name in raw and isinstance(raw[name], list):
            raw[name] = tuple(raw[name])
    return raw


def parse_lines(lines: Iterable[str]) -> History:
    """A history from JSONL text lines (the checker's tests build them by hand).

    Raises:
        ValueError: a line is not a record, or there is no meta record.
    """
    meta: Meta | None = None
    ops: list[Op] = []
    clocks: list[ClockChange] = []
    faults: list[Fault] = []
    events: list[Event] = []
    notes: dict[str, Any] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            kind = raw.pop("type")
            if kind == "meta":
                raw["limits"] = {u: (int(v[0]), str(v[1])) for u, v in raw.get("limits", {}).items()}
                meta = Meta(**_tuple_fields(raw, ("clients", "users", "expect")))
            elif kind == "op":
                ops.append(Op(**raw))
            elif kind == "clock":
                clocks.append(ClockChange(**raw))
            elif kind == "fault":
                faults.append(Fault(**raw))
            elif kind == "event":
                events.append(Event(**_tuple_fields(raw, ("clients",))))
            elif kind == "note":
                notes.update(raw)
            else:
                raise ValueError(f"unknown record type {kind!r}")
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"line {n}: not a history record: {exc}") from exc
    if meta is None:
        raise ValueError("no meta record")
    return History(meta=meta, ops=ops, clocks=clocks, faults=faults, events=events, notes=notes)


def read_history(path: Path) -> History:
    """Read a history file written by `HistoryWriter`.

    Raises:
        ValueError: a malformed line or no meta record.
    """
    with path.open() as f:
        return parse_lines(f)


def dumps(kind: str, value: object) -> str:
    """One record as a JSON line (for hand-made histories)."""
    return _record(kind, value)
