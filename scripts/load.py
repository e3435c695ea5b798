"""Drive realistic identity traffic against session-store and record what it did, second by second.

Operations (weights from `--mix`):

- `login`: CreateUserSession + AttachClientSession (a browser login to one client);
- `touch`: TouchUserSession with that client (a page load);
- `refresh`: UseRefreshToken on a live chain; the realm's `revoke_refresh_token` is switched on at
  start and each chain presents its next token (with `--no-rotation`, a refresh is a touch);
- `logout`: RemoveUserSession.

The run is bounded by `--duration` seconds AND `--max-ops`; Ctrl-C stops it cleanly. A live bar
shows ops/s, errors and p99 over the last second; at the end `load.csv` (one row per second) and
`load.png` (throughput, p50/p99) are written to `--out` and a summary is printed.

    python scripts/load.py --start --rate 500 --duration 20
    python scripts/load.py --target 127.0.0.1:50051 --rate max --max-ops 50000 --concurrency 64

`--start` runs its own `python -m session_store serve` (embedded shards on free loopback ports, data
in the output directory) and stops it by PID at the end. Everything stays on loopback unless
`--target` names another address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from session_store.client import AsyncSessionStoreClient
from session_store.errors import SessionStoreError
from session_store.model.policy import RealmPolicy

OPERATIONS = ("login", "touch", "refresh", "logout")
DEFAULT_MIX = "login=10,touch=60,refresh=20,logout=10"
CLIENT_ID = "account-console"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
MAX_LIVE_SESSIONS = 100_000
"""Logins beyond this many live sessions log out the oldest first, so memory stays bounded."""


def parse_mix(text: str) -> dict[str, int]:
    """`login=10,touch=60,...` → weights; unknown names, negative or all-zero weights are refused.

    Raises:
        argparse.ArgumentTypeError: the mix is malformed.
    """
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in OPERATIONS or not value.isdecimal():
            raise argparse.ArgumentTypeError(f"bad mix entry {part!r}: want one of {OPERATIONS} = weight")
        weights[name] = int(value)
    if not any(weights.values()):
        raise argparse.ArgumentTypeError("the mix needs at least one positive weight")
    return weights


def parse_rate(text: str) -> float | None:
    """`max` → None (as fast as possible), else a positive number of operations per second.

    Raises:
        argparse.ArgumentTypeError: not `max` and not a positive number.
    """
    if text == "max":
        return None
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate {text!r}: a number or 'max'") from None
    if not rate > 0:
        raise argparse.ArgumentTypeError("rate must be > 0")
    return rate


@dataclass
class LiveSession:
    """A logged-in browser: its user session, and the refresh-token chain of its client."""

    session_id: str
    token_seq: int = 1
    token_iat: int = 0


@dataclass
class Second:
    """What happened in one second of the run."""

    ops: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values by nearest rank; 0 for no values."""
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class LoadRun:
    """One bounded load run: workers, a shared pacer, the live-session pool and per-second stats."""

    def __init__(self, args: argparse.Namespace, clients: list[AsyncSessionStoreClient]) -> None:
        """Prepare a run with these clients (one channel each); nothing is sent yet."""
        self.args = args
        self.clients = clients
        self.names = [name for name in OPERATIONS if args.mix.get(name, 0) > 0]
        self.weights = [args.mix[name] for name in self.names]
        self.pool: list[LiveSession] = []
        self.seconds: dict[int, Second] = {}
        self.issued = 0
        self.done = 0
        self.stop = asyncio.Event()
        self.started = 0.0
        self.user_seq = 0

    def _checkout(self) -> LiveSession | None:
        """Take a random live session out of the pool, so no two workers use one chain at once."""
        if not self.pool:
            return None
        i = random.randrange(len(self.pool))
        self.pool[i], self.pool[-1] = self.pool[-1], self.pool[i]
        return self.pool.pop()

    async def _one(self, client: AsyncSessionStoreClient, kind: str) -> None:
        realm = self.args.realm
        live = None if kind == "login" else self._checkout()
        if live is None:
            kind = "login"
        if kind == "login":
            if len(self.pool) >= MAX_LIVE_SESSIONS:
                old = self._checkout()
                if old is not None:
                    await client.remove_user_session(realm, old.session_id)
            self.user_seq += 1
            session = await client.create_user_session(
                realm,
                f"load-user-{self.user_seq}",
                login_username=f"user{self.user_seq}",
                ip_address="127.0.0.1",
            )
            await client.attach_client_session(realm, session.id, CLIENT_ID, protocol="openid-connect")
            self.pool.append(LiveSession(session.id, token_iat=session.started))
            return
        assert live is not None  # noqa: S101 - narrowed above: only a login runs without a session
        if kind == "logout":
            await client.remove_user_session(realm, live.session_id)
            return
        try:
            if kind == "refresh" and not self.args.no_rotation:
                now = int(time.time())
                await client.use_refresh_token(
                    realm,
                    live.session_id,
                    CLIENT_ID,
                    f"{live.session_id}-t{live.token_seq}",
                    issued_at=live.token_iat,
                    reuse_id=f"{live.session_id}-chain",
                    new_issued_at=now,
                )
                live.token_seq += 1
                live.token_iat = now
            else:
                await client.touch_user_session(realm, live.session_id, client_ids=[CLIENT_ID])
        except SessionStoreError:
            raise  # a failed refresh detached the client, a missing session is gone: drop it
        self.pool.append(live)

    async def _pace(self) -> bool:
        """Wait for this worker's next slot; False when the run is over (time, count or Ctrl-C)."""
        loop = asyncio.get_running_loop()
        if self.stop.is_set() or self.issued >= self.args.max_ops:
            return False
        if loop.time() - self.started >= self.args.duration:
            return False
        slot = self.issued
        self.issued += 1
        if self.args.rate is not None:
            delay = self.started + slot / self.args.rate - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    return False
        return bool(loop.time() - self.started < self.args.duration)

    async def worker(self, n: int) -> None:
        """Issue operations until the run is over, recording latency and status per second."""
        loop = asyncio.get_running_loop()
        client = self.clients[n % len(self.clients)]
        while await self._pace():
            kind = random.choices(self.names, self.weights)[0]
            began = loop.time()
            error = ""
            try:
                await self._one(client, kind)
            except SessionStoreError as exc:
                error = exc.code
            second = self.seconds.setdefault(int(began - self.started), Second())
            second.ops += 1
            self.done += 1
            second.latencies_ms.append((loop.time() - began) * 1000)
            if error:
                second.errors[error] += 1

    def last_second(self) -> tuple[int, int, float]:
        """(ops, errors, p99 ms) of the last complete second."""
        now = int(asyncio.get_running_loop().time() - self.started)
        second = self.seconds.get(now - 1, Second())
        return second.ops, sum(second.errors.values()), percentile(sorted(second.latencies_ms), 0.99)

    async def run(self, console: Console) -> None:
        """Set the realm policy, run the workers under a live progress bar until a bound is hit."""
        if not self.args.no_rotation:
            await self.clients[0].set_realm_policy(
                RealmPolicy(realm=self.args.realm, revoke_refresh_token=True)
            )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        self.started = loop.time()
        columns = (
            TextColumn("[bold]load"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[ops]:>6} ops/s  {task.fields[errors]:>4} errors"),
            TextColumn("p99 {task.fields[p99]:>7.1f} ms"),
            TextColumn("total {task.completed:>8.0f}"),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("load", total=self.args.max_ops, ops=0, errors=0, p99=0.0)
            workers = asyncio.gather(*(self.worker(n) for n in range(self.args.concurrency)))
            while not workers.done():
                await asyncio.wait({workers}, timeout=0.25)
                ops, errors, p99 = self.last_second()
                progress.update(task, completed=self.done, ops=ops, errors=errors, p99=p99)
            await workers
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def write_results(run: LoadRun, out: Path) -> tuple[Path, Path]:
    """Write load.csv (one row per second) and load.png (throughput, p50/p99); returns both paths."""
    import matplotlib  # noqa: PLC0415 - heavy, only needed at the end

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the headless backend

    out.mkdir(parents=True, exist_ok=True)
    codes = sorted({code for s in run.seconds.values() for code in s.errors})
    last = max(run.seconds, default=-1)
    rows = []
    for t in range(last + 1):
        second = run.seconds.get(t, Second())
        lat = sorted(second.latencies_ms)
        rows.append(
            [t, second.ops, sum(second.errors.values())]
            + [second.errors.get(code, 0) for code in codes]
            + [round(percentile(lat, q), 3) for q in (0.5, 0.95, 0.99)]
        )
    csv_path = out / "load.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["second", "ops", "errors", *(f"errors_{c}" for c in codes), "p50_ms", "p95_ms", "p99_ms"]
        )
        writer.writerows(rows)
    png_path = out / "load.png"
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    seconds = [r[0] for r in rows]
    top.plot(seconds, [r[1] for r in rows], label="ops/s")
    top.plot(seconds, [r[2] for r in rows], label="errors/s", color="tab:red")
    top.set_ylabel("per second")
    top.legend(loc="upper right")
    top.set_title(f"session-store load: mix {run.args.mix_text}, rate {run.args.rate or 'max'}")
    bottom.plot(seconds, [r[-3] for r in rows], label="p50")
    bottom.plot(seconds, [r[-1] for r in rows], label="p99")
    bottom.set_ylabel("latency ms")
    bottom.set_xlabel("second of the run")
    bottom.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path


def summary(run: LoadRun, elapsed: float) -> str:
    """One block of text: totals, rate, errors by status, overall percentiles."""
    lat = sorted(x for s in run.seconds.values() for x in s.latencies_ms)
    errors: Counter[str] = Counter()
    for s in run.seconds.values():
        errors.update(s.errors)
    ops = len(lat)
    return (
        f"ops {ops} in {elapsed:.1f} s = {ops / elapsed if elapsed else 0:.0f} ops/s; "
        f"errors {sum(errors.values())} {dict(errors) or ''}; "
        f"latency ms p50 {percentile(lat, 0.5):.1f} p95 {percentile(lat, 0.95):.1f} "
        f"p99 {percentile(lat, 0.99):.1f} max {lat[-1] if lat else 0:.1f}; "
        f"live sessions left {len(run.pool)}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_service(data_dir: Path) -> Iterator[str]:
    """`python -m session_store serve` with embedded shards on loopback; stopped by PID on exit.

    Raises:
        RuntimeError: it did not become SERVING within START_TIMEOUT_SECONDS.
    """
    port = _free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SESSION_STORE_LISTEN": f"127.0.0.1:{port}",
        "SESSION_STORE_REDIS_URLS": "",
        "SESSION_STORE_DATA_DIR": str(data_dir),
        "SESSION_STORE_LOG_LEVEL": "warning",
        "SESSION_STORE_LOG_JSON": "true",
    }
    log = (data_dir / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "session_store", "serve"],
        env=env,
        stdout=log,
        stderr=log,
        # Its own session: a terminal's Ctrl-C reaches only this script, which then stops the service
        # by PID after the last call, instead of the service draining under the load.
        start_new_session=True,
    )
    log.close()
    try:
        _wait_serving(port, proc)
        yield f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_serving(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"session-store exited with {proc.returncode} (see its service.log)")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)  # type: ignore[attr-defined]  # the stubs lack the generated methods
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise RuntimeError(f"session-store on port {port} not SERVING within {START_TIMEOUT_SECONDS} s")


async def drive(args: argparse.Namespace, target: str, console: Console) -> tuple[LoadRun, float]:
    """Open `--channels` clients to `target`, run the load, close them; returns the run and its length."""
    clients = [
        # A local subchannel pool per client: otherwise grpc shares one connection among them.
        AsyncSessionStoreClient(target, channel_options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    run = LoadRun(args, clients)
    began = time.monotonic()
    try:
        await run.run(console)
    finally:
        for client in clients:
            await client.close()
    return run, time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the load, write the results; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--target", default="127.0.0.1:50051", help="host:port of a running service")
    where.add_argument("--start", action="store_true", help="start a local service with embedded shards")
    parser.add_argument(
        "--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX), help=f"default {DEFAULT_MIX}"
    )
    parser.add_argument("--rate", type=parse_rate, default=500.0, help="ops/s, or 'max' (default 500)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--max-ops", type=int, default=100_000, help="operations at most (default 100000)")
    parser.add_argument("--concurrency", type=int, default=32, help="operations in flight (default 32)")
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels (default 4)")
    parser.add_argument("--realm", default="load", help="realm to use (default load)")
    parser.add_argument("--no-rotation", action="store_true", help="leave revoke_refresh_token off")
    parser.add_argument("--out", type=Path, help="output directory (default .run/load/<timestamp>)")
    args = parser.parse_args(argv)
    args.mix_text = ",".join(f"{k}={v}" for k, v in args.mix.items())
    if args.duration <= 0 or args.max_ops < 1 or args.concurrency < 1 or args.channels < 1:
        parser.error("--duration, --max-ops, --concurrency and --channels must be positive")
    out: Path = args.out or Path(".run") / "load" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    console = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(local_service(out / "service")) if args.start else args.target
        console.print(f"target {target}  mix {args.mix_text}  rate {args.rate or 'max'}  out {out}")
        run, elapsed = asyncio.run(drive(args, target, console))
    csv_path, png_path = write_results(run, out)
    print(summary(run, elapsed))
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
