"""Redis memory per user session, as session-store stores it.

The job: start one fresh redis-server (AOF off) per variant, create N user sessions, each with one
client session, by calling the service's own Lua scripts by SHA with the arguments SessionRepository
builds (keys from `storage/keys.py`, policy arguments of the default realm policy, ids minted in the
user's partition), pipelined in batches; then report the growth of `used_memory` (INFO memory)
divided by N. A few sessions are read back through SessionRepository to prove they are what the
service would have written. Variants: Redis's default `hash-max-listpack-value` (64 bytes) and a
raised one, because the client session is a JSON value of ~130 bytes in the session hash and any
value over the limit turns the whole hash from a listpack into a hash table.

Usage:
    .venv/bin/python scripts/memory.py [--sessions 100000] [--listpack-value 1024] [--client-notes 0]

Every redis-server started binds 127.0.0.1 and is stopped by PID, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from session_store.embedded import RedisProcess, start_redis
from session_store.logging import configure_logging
from session_store.model.clock import SystemClock
from session_store.model.ids import home_partition, mint_session_id, user_partition
from session_store.model.policy import RealmPolicy, effective_policy
from session_store.storage import keys
from session_store.storage._scripts import load_scripts
from session_store.storage.policies import PolicyStore, policy_args
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository
from session_store.storage.shard import Shard

# Realistic field sizes (bytes): what a Keycloak login through a web app leaves behind.
REALM = "acme-users"  # 10
LOGIN_DOMAIN = "@example.com"  # login username "user012345@example.com": 22
AUTH_METHOD = "openid-connect"  # 14
CLIENT_ID = "account-console"  # 15
REDIRECT_URI = "https://shop.example.com/oidc/callback01"  # 40
PROTOCOL = "openid-connect"  # 14
USER_NOTES = {  # five notes, names 9-10 bytes, values 10-17 bytes
    "AUTH_TIME": "1763900000",
    "auth_type": "authorization",
    "loa_level": "level-1-password",
    "client_ip": "10.1.2.3:54321",
    "user_agent": "Mozilla/5.0 (X11)",
}
CLIENT_NOTE_TEMPLATE = ("note_{i}", "value-{i:010d}")  # optional client-session notes, 6 + 16 bytes

DEFAULT_SESSIONS = 100_000
DEFAULT_BATCH = 1000
DEFAULT_LISTPACK_VALUE = 1024
TARGET_BYTES_PER_SESSION = 1024
VERIFY_SAMPLE = 20


@dataclass(frozen=True)
class Variant:
    """One fresh server: a label and the CONFIG SET pairs applied before loading."""

    label: str
    config: tuple[tuple[str, str], ...]


@dataclass
class Result:
    """What one variant measured."""

    variant: Variant
    sessions: int
    used_before: int
    used_after: int
    keys: int
    seconds: float
    session_encoding: str
    sample_usage: dict[str, int]

    @property
    def per_session(self) -> float:
        """used_memory growth per session, bytes."""
        return (self.used_after - self.used_before) / self.sessions


def _ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def session_calls(
    i: int, user_id: str, client_notes: int
) -> tuple[str, int, tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """(session id, partition, create (KEYS, ARGV), attach (KEYS, ARGV)) as SessionRepository builds them."""
    partition = user_partition(REALM, user_id)
    sid = mint_session_id(partition)
    header = ["", *POLICY_ARGS]  # "" = the script reads the shard's TIME, as with SystemClock
    create_args = [*header, sid, REALM, user_id, f"user{i:06d}{LOGIN_DOMAIN}", _ip(i), AUTH_METHOD]
    create_args += ["0", "", "", "0", "0", "0", "", "0", str(len(USER_NOTES))]  # no session limits
    for name, value in USER_NOTES.items():
        create_args += [name, value]
    create_keys = [
        keys.session(partition, sid, offline=False),
        keys.user_index(partition, REALM, user_id, offline=False),
        keys.realm_index(partition, REALM, offline=False),
    ]
    attach_args = [*header, REALM, str(partition), "0", CLIENT_ID, REDIRECT_URI, "", PROTOCOL]
    attach_args += ["", "0", "0", str(client_notes)]  # no session limits, then the notes
    for n in range(client_notes):
        attach_args += [CLIENT_NOTE_TEMPLATE[0].format(i=n), CLIENT_NOTE_TEMPLATE[1].format(i=n)]
    attach_keys = [
        keys.session(partition, sid, offline=False),
        keys.pointer(partition, sid),
        keys.client_index(partition, REALM, offline=False),
    ]
    return sid, partition, (create_keys, create_args), (attach_keys, attach_args)


POLICY_ARGS = policy_args(effective_policy(RealmPolicy(realm=REALM)))


def _used_memory(r: redis.Redis) -> int:
    info: dict[str, Any] = r.info("memory")
    return int(info["used_memory"])


def load(proc: RedisProcess, variant: Variant, sessions: int, batch: int, client_notes: int) -> Result:
    """Create the sessions on a fresh server and measure it.

    Raises:
        RuntimeError: a script answered with an error, or a session read back differs.
    """
    scripts = load_scripts()
    create_sha = scripts["create_user_session"].sha
    attach_sha = scripts["attach_client_session"].sha
    rng = random.Random(1)
    sample: list[str] = []
    with redis.Redis(host="127.0.0.1", port=proc.port, decode_responses=True) as r:
        for name, value in variant.config:
            r.config_set(name, value)
        for script in scripts.values():
            r.script_load(script.text)
        before = _used_memory(r)
        started = time.monotonic()
        for first in range(0, sessions, batch):
            pipe = r.pipeline(transaction=False)
            for i in range(first, min(first + batch, sessions)):
                user_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                sid, _, (ck, ca), (ak, aa) = session_calls(i, user_id, client_notes)
                pipe.evalsha(create_sha, len(ck), *ck, *ca)
                pipe.evalsha(attach_sha, len(ak), *ak, *aa)
                if len(sample) < VERIFY_SAMPLE and i % max(1, sessions // VERIFY_SAMPLE) == 0:
                    sample.append(sid)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, redis.ResponseError):
                    raise RuntimeError(f"a script failed: {reply}")
        seconds = time.monotonic() - started
        after = _used_memory(r)
        key_count = int(r.dbsize())
        sid = sample[0]
        partition = home_partition(sid)  # a minted id names its user's partition
        session_key = next(iter(r.scan_iter(match=f"ss:*:s:{sid}", count=10_000)))
        usage = {
            "session hash": int(r.memory_usage(session_key, samples=0) or 0),
            "user index (1 session)": _first_usage(r, "ss:*:u:*"),
            "realm index per partition": int(
                r.memory_usage(keys.realm_index(partition, REALM, offline=False)) or 0
            ),
            "client index per partition": int(
                r.memory_usage(keys.client_index(partition, REALM, offline=False)) or 0
            ),
        }
        encoding = str(r.object("encoding", session_key))
    asyncio.run(_verify(proc, sample, client_notes))
    return Result(variant, sessions, before, after, key_count, seconds, encoding, usage)


def _first_usage(r: redis.Redis, pattern: str) -> int:
    for key in r.scan_iter(match=pattern, count=1000):
        return int(r.memory_usage(key, samples=0) or 0)
    return 0


async def _verify(proc: RedisProcess, sample: Sequence[str], client_notes: int) -> None:
    """Read sessions back through SessionRepository: the stored shape must be the service's."""
    router = Router({proc.name: Shard(proc.name, proc.url)})
    try:
        await router.connect(attempts=3)
        repository = SessionRepository(router, PolicyStore(router), SystemClock())
        for sid in sample:
            session = await repository.get_user_session(REALM, sid, offline=False)
            client = session.client_sessions.get(CLIENT_ID)
            ok = (
                dict(session.notes) == USER_NOTES
                and client is not None
                and client.redirect_uri == REDIRECT_URI
                and len(client.notes) == client_notes
            )
            if not ok:
                raise RuntimeError(f"session {sid} read back differs: {session}")
    finally:
        await router.close()


def report(results: Sequence[Result], client_notes: int) -> dict[str, Any]:
    """Print the results; return them as data."""
    cs_json = json.dumps(
        {
            "r": REDIRECT_URI,
            "a": "",
            "p": PROTOCOL,
            "t": 1763900000,
            "s": 1763900000,
            "us": 1763900000,
            "n": {
                CLIENT_NOTE_TEMPLATE[0].format(i=n): CLIENT_NOTE_TEMPLATE[1].format(i=n)
                for n in range(client_notes)
            },
        },
        separators=(",", ":"),
    )
    print(
        f"fields: realm {len(REALM)} B, user id UUID 36 B, login {len('user000000' + LOGIN_DOMAIN)} B, "
        f"auth method {len(AUTH_METHOD)} B, {len(USER_NOTES)} user-session notes "
        f"(names {min(map(len, USER_NOTES))}-{max(map(len, USER_NOTES))} B, values "
        f"{min(map(len, USER_NOTES.values()))}-{max(map(len, USER_NOTES.values()))} B); one client session "
        f"({CLIENT_ID}, redirect URI {len(REDIRECT_URI)} B, {client_notes} notes) "
        f"stored as a ~{len(cs_json)} B JSON value"
    )
    header = f"{'variant':<28}{'sessions':>9}{'keys':>9}{'B/session':>11}{'session hash':>14}"
    header += f"{'encoding':>11}{'load s':>8}"
    print(header)
    print("-" * len(header))
    data: dict[str, Any] = {"variants": {}}
    for res in results:
        verdict = "met" if res.per_session <= TARGET_BYTES_PER_SESSION else "MISSED"
        print(
            f"{res.variant.label:<28}{res.sessions:9d}{res.keys:9d}{res.per_session:11.0f}"
            f"{res.sample_usage['session hash']:14d}{res.session_encoding:>11}{res.seconds:8.1f}"
            f"   target <= {TARGET_BYTES_PER_SESSION} B: {verdict}"
        )
        data["variants"][res.variant.label] = {
            "bytes_per_session": res.per_session,
            "used_memory_delta": res.used_after - res.used_before,
            "keys": res.keys,
            "session_encoding": res.session_encoding,
            "memory_usage_samples": res.sample_usage,
        }
    print("MEMORY USAGE of sample keys (bytes):")
    for res in results:
        parts = ", ".join(f"{k} {v}" for k, v in res.sample_usage.items())
        print(f"  {res.variant.label}: {parts}")
    return data


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every variant; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="script calls per pipeline / 2")
    parser.add_argument(
        "--listpack-value",
        type=int,
        default=DEFAULT_LISTPACK_VALUE,
        help="hash-max-listpack-value of the second variant",
    )
    parser.add_argument("--client-notes", type=int, default=0, help="notes per client session")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 10_000_000 or not 1 <= args.batch <= 100_000:
        parser.error("--sessions or --batch out of range")
    if not 0 <= args.client_notes <= 64:
        parser.error("--client-notes must be between 0 and 64")
    configure_logging("warning", json=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop everything even where SIGINT was ignored at start (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    variants = [
        Variant("Redis default (listpack value 64)", (("hash-max-listpack-value", "64"),)),
        Variant(
            f"listpack value {args.listpack_value}",
            (("hash-max-listpack-value", str(args.listpack_value)),),
        ),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="session-store-memory-"))
    results: list[Result] = []
    try:
        for n, variant in enumerate(variants):
            proc = start_redis(f"memory-{n}", tmp / f"redis-{n}", appendonly=False)
            try:
                results.append(load(proc, variant, args.sessions, args.batch, args.client_notes))
            finally:
                proc.stop()
        data = report(results, args.client_notes)
        if args.json:
            args.json.write_text(json.dumps(data, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted: the started redis-server was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
