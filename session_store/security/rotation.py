"""`session-store keys rotate`: rewrite every encrypted (or still clear) note value under the newest
key, shard by shard, while the service keeps serving.

Each hash is read, its values re-encrypted in this process, and written back by compare-and-set
(replace_hash_fields.lua): a value that changed in between is left as the newer write made it (that
write used the newest key already). Keys expire on their own; a key gone by the time it is written
is skipped. Progress is logged every few seconds; the pace is bounded by `max_keys_per_second`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from session_store.security.encryption import NoteCipher
from session_store.storage import keys
from session_store.storage.router import Router
from session_store.storage.shard import Shard

log = structlog.get_logger(__name__)

SCAN_COUNT = 500
PROGRESS_SECONDS = 5.0


@dataclass
class RotationReport:
    """What a rotation did: hashes read, values rewritten, values left because they changed meanwhile."""

    keys: int = 0
    rewritten: int = 0
    skipped: int = 0


def _kind(key: str) -> tuple[str, str]:
    """(kind, rest) of a partitioned key: kind is s, o, su or a (else "")."""
    try:
        rest = key[len(keys.tag(keys.partition_of(key))) :]
    except ValueError:
        return "", ""
    for kind in ("su", "s", "o", "a"):
        if rest.startswith(kind + ":"):
            return kind, rest[len(kind) + 1 :]
    return "", ""


def _session_changes(cipher: NoteCipher, sid: str, fields: dict[str, str]) -> list[tuple[str, str, str]]:
    realm = fields.get("realm", "")
    changes: list[tuple[str, str, str]] = []
    for field, value in fields.items():
        if field.startswith("n:") and cipher.needs_rotation(value):
            clear = cipher.decrypt(value, realm, sid, "n", field[2:])
            changes.append((field, value, cipher.encrypt(clear, realm, sid, "n", field[2:])))
        elif field.startswith("c:"):
            client = field[2:]
            data = json.loads(value)
            notes = data.get("n") or {}
            if isinstance(notes, dict) and any(cipher.needs_rotation(v) for v in notes.values()):
                clear_notes = cipher.decrypt_map(notes, realm, sid, "c", client)
                data["n"] = cipher.encrypt_map(clear_notes, realm, sid, "c", client)
                changes.append((field, value, json.dumps(data, ensure_ascii=False, separators=(",", ":"))))
    return changes


def _single_use_changes(cipher: NoteCipher, rest: str, fields: dict[str, str]) -> list[tuple[str, str, str]]:
    realm, _, key = rest.partition(" ")
    return [
        (name, value, cipher.encrypt(cipher.decrypt(value, realm, "su", key, name), realm, "su", key, name))
        for name, value in fields.items()
        if name != "\0" and cipher.needs_rotation(value)
    ]


def _auth_changes(cipher: NoteCipher, rest: str, fields: dict[str, str]) -> list[tuple[str, str, str]]:
    realm, _, root = rest.partition(" ")
    changes: list[tuple[str, str, str]] = []
    for field, value in fields.items():
        if not field.startswith("t:"):
            continue
        tab = field[2:]
        data = json.loads(value)
        changed = False
        for short in ("un", "an", "cn"):
            notes = data.get(short) or {}
            if isinstance(notes, dict) and any(cipher.needs_rotation(v) for v in notes.values()):
                clear = cipher.decrypt_map(notes, realm, root, tab, short)
                data[short] = cipher.encrypt_map(clear, realm, root, tab, short)
                changed = True
        if changed:
            changes.append((field, value, json.dumps(data, ensure_ascii=False, separators=(",", ":"))))
    return changes


_CHANGES: dict[str, Callable[[NoteCipher, str, dict[str, str]], list[tuple[str, str, str]]]] = {
    "s": _session_changes,
    "o": _session_changes,
    "su": _single_use_changes,
    "a": _auth_changes,
}


async def _rotate_key(shard: Shard, cipher: NoteCipher, key: str, report: RotationReport) -> None:
    kind, rest = _kind(key)
    if kind not in _CHANGES:
        return
    flat: Any = await shard.command("HGETALL", key)
    fields = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else dict(flat)
    if not fields:
        return
    report.keys += 1
    changes = _CHANGES[kind](cipher, rest, fields)
    if not changes:
        return
    args = [part for change in changes for part in change]
    replaced = int(await shard.call("replace_hash_fields", [key], args))
    report.rewritten += replaced
    report.skipped += len(changes) - replaced


async def rotate_keys(
    router: Router, cipher: NoteCipher, *, max_keys_per_second: float = 2000.0
) -> RotationReport:
    """Rewrite every note value not under the newest key, on every shard; returns the totals.

    Raises:
        SessionStoreError: a shard failed (rerun: finished keys are not redone, they need nothing).
        PreconditionFailedError: a stored value is under a key the ring does not hold.
    """
    report = RotationReport()
    if not cipher.enabled:
        return report
    started = time.monotonic()
    last_log = started
    for shard in router.shards.values():
        cursor = "0"
        while True:
            cursor, batch = await shard.command(
                "SCAN", cursor, "MATCH", f"{keys.PREFIX}{{*", "COUNT", SCAN_COUNT
            )
            await asyncio.gather(*(_rotate_key(shard, cipher, key, report) for key in batch))
            # Pace: never faster than max_keys_per_second on average.
            ahead = report.keys / max_keys_per_second - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
            if time.monotonic() - last_log >= PROGRESS_SECONDS:
                last_log = time.monotonic()
                log.info(
                    "key_rotation_progress", shard=shard.name, keys=report.keys, rewritten=report.rewritten
                )
            if str(cursor) == "0":
                break
    log.info(
        "key_rotation_done",
        keys=report.keys,
        rewritten=report.rewritten,
        skipped=report.skipped,
        seconds=round(time.monotonic() - started, 1),
        key_id=cipher.current,
    )
    return report
