"""The grpc.aio server: wiring of shards, stores and servicers; health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from session_store.api.auth_sessions import AuthenticationSessionsServicer
from session_store.api.cluster import ClusterAdminServicer
from session_store.api.events import SessionEventsServicer
from session_store.api.login_failures import LoginFailuresServicer
from session_store.api.servicer import SessionStoreServicer, TestClockServicer
from session_store.api.single_use import SingleUseObjectsServicer
from session_store.api.tokens import TokenValidationServicer
from session_store.config import Settings, ShardSettings
from session_store.errors import SessionStoreError
from session_store.events.stats import PipelineStats, gather_pipeline_stats
from session_store.events.sweeper import Sweeper
from session_store.events.watch import StreamHub
from session_store.metrics import Metrics
from session_store.model.clock import Clock, SystemClock, TestClock
from session_store.model.limits import MAX_REQUEST_BYTES
from session_store.security.encryption import NO_ENCRYPTION, NoteCipher
from session_store.security.setup import ServerSecurity
from session_store.security.tokens import TokenValidator
from session_store.storage.access import build_shards
from session_store.storage.auth_sessions import AuthenticationSessionRepository
from session_store.storage.bulk import BulkRemoval
from session_store.storage.login_failures import LoginFailureRepository
from session_store.storage.policies import PolicyStore
from session_store.storage.rebalance import Rebalancer
from session_store.storage.router import Router
from session_store.storage.sessions import SessionRepository
from session_store.storage.shard import Shard
from session_store.storage.single_use import SingleUseObjectRepository
from session_store.v1 import (
    authentication_sessions_pb2,
    authentication_sessions_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    login_failures_pb2,
    login_failures_pb2_grpc,
    session_store_pb2,
    session_store_pb2_grpc,
    single_use_objects_pb2,
    single_use_objects_pb2_grpc,
    test_clock_pb2,
    test_clock_pb2_grpc,
    tokens_pb2,
    tokens_pb2_grpc,
)

log = structlog.get_logger(__name__)

SERVICE_NAME = session_store_pb2.DESCRIPTOR.services_by_name["SessionStore"].full_name
TEST_CLOCK_SERVICE_NAME = test_clock_pb2.DESCRIPTOR.services_by_name["TestClock"].full_name
SINGLE_USE_SERVICE_NAME = single_use_objects_pb2.DESCRIPTOR.services_by_name["SingleUseObjects"].full_name
LOGIN_FAILURES_SERVICE_NAME = login_failures_pb2.DESCRIPTOR.services_by_name["LoginFailures"].full_name
AUTH_SESSIONS_SERVICE_NAME = authentication_sessions_pb2.DESCRIPTOR.services_by_name[
    "AuthenticationSessions"
].full_name
EVENTS_SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["SessionEvents"].full_name
TOKENS_SERVICE_NAME = tokens_pb2.DESCRIPTOR.services_by_name["TokenValidation"].full_name
CLUSTER_SERVICE_NAME = cluster_pb2.DESCRIPTOR.services_by_name["ClusterAdmin"].full_name


HEALTH_STOP_GRACE_SECONDS = 0.25
"""How long the health-only port stays open after the API stopped, for watchers to read NOT_SERVING."""


class SessionStoreServer:
    """One service node: a router over the shards and a gRPC server in front of it."""

    def __init__(
        self,
        settings: Settings,
        shards: tuple[ShardSettings, ...],
        *,
        clock: Clock | None = None,
    ) -> None:
        """Wire everything; nothing connects or listens until `start`.

        Args:
            settings: the service configuration.
            shards: the Redis shards to use (the configured ones, or embedded ones).
            clock: the clock of expiry decisions; a TestClock also serves the TestClock RPCs.
        """
        self.settings = settings
        self.clock = clock or SystemClock()
        # Metrics cost a little on every call: with no endpoint configured, nothing is recorded.
        self.metrics = Metrics() if settings.metrics_listen else None
        # TLS, ACL credentials and a memory guard per shard (storage/access.py); a bad password or
        # TLS file fails here with SettingsError, before anything connects.
        observer = self.metrics.observe_shard_call if self.metrics else None

        def shard_factory(name: str, url: str) -> Shard:
            return build_shards(settings.redis, [ShardSettings(name=name, url=url)], observer=observer)[name]

        self.router = Router(
            build_shards(settings.redis, shards, observer=observer),
            factory=shard_factory,
            on_retry=self.metrics.observe_retry if self.metrics else None,
        )
        self.policies = PolicyStore(self.router, settings.policy_refresh_seconds)
        # Encryption of note values at rest; a bad key file fails here, before anything connects.
        self.cipher = (
            NoteCipher.from_file(settings.encryption_keys_file)
            if settings.encryption_keys_file
            else NO_ENCRYPTION
        )
        self.sessions = SessionRepository(
            self.router, self.policies, self.clock, settings.events, self.cipher
        )
        self.health = health.aio.HealthServicer()
        # Caller authentication and per-realm authorisation; TLS, JWKS and callers files are read here.
        self.security = ServerSecurity(settings.auth)
        # Metrics outermost, so refused calls are counted with their UNAUTHENTICATED/PERMISSION_DENIED.
        interceptors: list[grpc.aio.ServerInterceptor] = [
            i for i in (self.metrics.interceptor() if self.metrics else None, self.security.interceptor) if i
        ]
        self.server = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                # Off unless asked for: grpcio's default (on) lets a second server bind a taken port
                # silently; on, several processes share one port to use several cores.
                ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
            ],
        )
        self.bulk = BulkRemoval(self.router, self.policies, self.clock)
        self.sweeper = Sweeper(self.router, self.clock, settings.events)
        session_store_pb2_grpc.add_SessionStoreServicer_to_server(
            SessionStoreServicer(self.sessions, self.policies, self.bulk), self.server
        )
        self.single_use = SingleUseObjectRepository(self.router, self.clock, self.cipher)
        single_use_objects_pb2_grpc.add_SingleUseObjectsServicer_to_server(
            SingleUseObjectsServicer(self.single_use), self.server
        )
        self.login_failures = LoginFailureRepository(self.router, self.policies, self.clock)
        login_failures_pb2_grpc.add_LoginFailuresServicer_to_server(
            LoginFailuresServicer(self.login_failures), self.server
        )
        self.auth_sessions = AuthenticationSessionRepository(
            self.router, self.policies, self.clock, self.cipher
        )
        authentication_sessions_pb2_grpc.add_AuthenticationSessionsServicer_to_server(
            AuthenticationSessionsServicer(self.auth_sessions), self.server
        )
        names = [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME, AUTH_SESSIONS_SERVICE_NAME]
        # One StreamHub per node: a blocking reader per shard, shared by every watch of this node.
        self.events = StreamHub(self.router, socket_timeout=settings.redis.timeout_seconds)
        events_pb2_grpc.add_SessionEventsServicer_to_server(
            SessionEventsServicer(self.events, self.pipeline_stats), self.server
        )
        names += [SINGLE_USE_SERVICE_NAME, LOGIN_FAILURES_SERVICE_NAME, EVENTS_SERVICE_NAME]
        # Token validation; a bad realms, JWKS or secret file fails here, before anything connects.
        self.tokens = TokenValidator.from_settings(settings.tokens, self.sessions, self.clock)
        tokens_pb2_grpc.add_TokenValidationServicer_to_server(
            TokenValidationServicer(self.tokens), self.server
        )
        names.append(TOKENS_SERVICE_NAME)
        self.cluster_admin = ClusterAdminServicer(self.router, shard_factory)
        cluster_pb2_grpc.add_ClusterAdminServicer_to_server(self.cluster_admin, self.server)
        names.append(CLUSTER_SERVICE_NAME)
        if isinstance(self.clock, TestClock):
            test_clock_pb2_grpc.add_TestClockServicer_to_server(TestClockServicer(self.clock), self.server)
            names.append(TEST_CLOCK_SERVICE_NAME)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(names, self.server)
        self.port = 0
        self.metrics_port = 0
        self._sessions_refresh: asyncio.Task[None] | None = None
        # Kubernetes gRPC probes dial the pod IP: this server serves Health alone (the same servicer,
        # so NOT_SERVING on shutdown shows on both ports) while the API may stay on loopback.
        self.health_server: grpc.aio.Server | None = None
        if settings.health_listen:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.health_port = 0

    async def start(self, listen: str | None = None) -> int:
        """Connect every shard (bounded retries), then listen; returns the bound TCP port (0 for unix).

        With `health_listen` set, Health is also served alone on that address (bound port in
        `health_port`), started after the API so a probe never passes before the API listens.

        Raises:
            ShardUnavailableError: a shard did not answer during startup (or refused our credentials).
            PreconditionFailedError: a shard's eviction policy may drop sessions (`allkeys-*` without
                SESSION_STORE_REDIS_ALLOW_EVICTION).
            SettingsError: the API address is reachable beyond loopback without TLS and caller
                authentication, and SESSION_STORE_ALLOW_INSECURE_REMOTE is off (nothing connected or bound).
            RuntimeError: an address could not be bound.
            OSError: the metrics address (`metrics_listen`) could not be bound.
        """
        self.security.check_listener(listen or self.settings.listen)
        await self.router.connect(attempts=self.settings.redis.startup_attempts)
        await self._repair_interrupted_move()
        address = listen or self.settings.listen
        self.port = self.security.bind(self.server, address)
        if self.port == 0 and not address.startswith("unix:"):
            raise RuntimeError(f"could not listen on {address}")
        if self.health_server is not None:
            # Bound before anything starts: a taken health port fails startup with nothing running.
            self.health_port = self.health_server.add_insecure_port(self.settings.health_listen)
            if self.health_port == 0:
                raise RuntimeError(f"could not listen on {self.settings.health_listen}")
        if self.metrics is not None:
            # Last of the binds, so a failed gRPC bind leaves no metrics thread behind.
            self.metrics.mark_shards_up(list(self.router.shards))
            self.metrics_port = self.metrics.start_http(self.settings.metrics_listen)
            self._sessions_refresh = asyncio.create_task(
                self.metrics.run_pipeline_refresh(self.pipeline_stats, self.policies)
            )
        await self.events.start()
        await self.server.start()
        self.sweeper.start()
        served = (
            SERVICE_NAME,
            SINGLE_USE_SERVICE_NAME,
            LOGIN_FAILURES_SERVICE_NAME,
            AUTH_SESSIONS_SERVICE_NAME,
            TOKENS_SERVICE_NAME,
            CLUSTER_SERVICE_NAME,
        )
        for name in ("", *served, EVENTS_SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.health_server is not None:
            await self.health_server.start()
        log.info(
            "server_started",
            listen=address,
            port=self.port,
            health_listen=self.settings.health_listen or None,
            health_port=self.health_port or None,
            shards=len(self.router.shards),
            metrics_port=self.metrics_port or None,
            test_clock=isinstance(self.clock, TestClock),
            tls=self.security.credentials is not None and not address.startswith("unix:"),
            caller_auth=self.security.mode,
        )
        return self.port

    async def _repair_interrupted_move(self) -> None:
        """Leave no partition frozen or half-moved by a mover that died (its lease lapsed): each ends on
        one shard; the rest of its plan waits for `session-store cluster resume`."""
        try:
            await Rebalancer(self.router).recover(resume=False)
        except SessionStoreError as exc:
            log.warning("interrupted_move_not_repaired", error=exc.message)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, then (for a configured shutdown, `grace` None) wait the shutdown delay so
        health-checking clients move away, refuse new calls, let in-flight calls finish within the grace.
        """
        await self.health.enter_graceful_shutdown()
        if grace is None and self.settings.shutdown_delay_seconds > 0:
            await asyncio.sleep(self.settings.shutdown_delay_seconds)
        # Watch streams never end by themselves and would hold server.stop for its whole grace.
        await self.events.stop()
        await self.cluster_admin.stop()
        await self.server.stop(self.settings.grace_seconds if grace is None else grace)
        if self.health_server is not None:
            # Kept up through the drain so probes read NOT_SERVING rather than a refused connection;
            # its short grace lets open Health.Watch streams send that NOT_SERVING before they close.
            await self.health_server.stop(HEALTH_STOP_GRACE_SECONDS)
        if self._sessions_refresh is not None:
            self._sessions_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sessions_refresh
        if self.metrics is not None:
            await self.metrics.stop_http()
        await self.sweeper.stop()
        await self.router.close()

    async def pipeline_stats(self) -> PipelineStats:
        """The event pipeline's numbers: the shards' counters, this node's watchers and sweeper."""
        return await gather_pipeline_stats(
            self.router,
            self.clock,
            watchers=lambda: (self.events.watcher_count, self.events.watcher_lags_ms()),
            sweeper_expired=self.sweeper.stats.expired,
            notifications=self.sweeper.stats.notifications,
            listening=self.sweeper.stats.listening,
        )

    async def wait(self) -> None:
        """Until the server terminates."""
        await self.server.wait_for_termination()


async def run_until_signal(server: SessionStoreServer, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then drain within the grace and log one summary line."""
    await stop.wait()
    log.info("server_stopping", grace_seconds=server.settings.grace_seconds)
    started = asyncio.get_running_loop().time()
    await server.stop()
    log.info("server_stopped", drain_seconds=round(asyncio.get_running_loop().time() - started, 3))
