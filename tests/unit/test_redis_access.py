"""Redis access settings (TLS, ACL user and password file, eviction and memory guard), the loading of
their files, and the pure parts of the memory guard: INFO parsing and the eviction-policy rule."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from session_store.config import RedisSettings, Settings, SettingsError, ShardSettings
from session_store.errors import PreconditionFailedError, StoreMemoryLowError
from session_store.storage.access import load_redis_access, tls_context
from session_store.storage.memory import (
    MemoryGuard,
    MemoryReading,
    check_eviction_policy,
    parse_memory_info,
)
from tests.redis_tls import Pki, make_pki

TLS_URL = "rediss://127.0.0.1:6380/0"
SECRET = "s3cret-Redis-pass!"  # noqa: S105 - a marker value of the tests, not a credential


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, written once for the module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _secret_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "redis-password"
    path.write_text(text, encoding="utf-8")
    return path


class TestAccessVariables:
    def test_every_access_variable_is_read(self, tmp_path: Path) -> None:
        """Each SESSION_STORE_REDIS_* access variable sets its setting."""
        settings = Settings.from_env(
            {
                "SESSION_STORE_REDIS_URLS": TLS_URL,
                "SESSION_STORE_REDIS_TLS_CA_FILE": "/etc/ca.pem",
                "SESSION_STORE_REDIS_TLS_CERT_FILE": "/etc/client.pem",
                "SESSION_STORE_REDIS_TLS_KEY_FILE": "/etc/client-key.pem",
                "SESSION_STORE_REDIS_TLS_CHECK_HOSTNAME": "false",
                "SESSION_STORE_REDIS_USERNAME": "session-store",
                "SESSION_STORE_REDIS_PASSWORD_FILE": "/run/secrets/redis",
                "SESSION_STORE_REDIS_ALLOW_EVICTION": "true",
                "SESSION_STORE_REDIS_MEMORY_GUARD_PERCENT": "75",
                "SESSION_STORE_REDIS_MEMORY_POLL_SECONDS": "0.5",
            }
        )

        assert (
            Path("/etc/ca.pem"),
            Path("/etc/client.pem"),
            Path("/etc/client-key.pem"),
            False,
            "session-store",
            Path("/run/secrets/redis"),
            True,
            75.0,
            0.5,
        ) == (
            settings.redis.tls_ca_file,
            settings.redis.tls_cert_file,
            settings.redis.tls_key_file,
            settings.redis.tls_check_hostname,
            settings.redis.username,
            settings.redis.password_file,
            settings.redis.allow_eviction,
            settings.redis.memory_guard_percent,
            settings.redis.memory_poll_seconds,
        )

    def test_defaults_are_safe(self) -> None:
        """By default: host names checked, eviction refused, creates refused at 90 % of maxmemory."""
        redis = Settings.from_env({}).redis

        assert (True, False, 90.0, None, None) == (
            redis.tls_check_hostname,
            redis.allow_eviction,
            redis.memory_guard_percent,
            redis.password_file,
            redis.tls_ca_file,
        )

    @pytest.mark.parametrize("urls", ["redis://127.0.0.1:6379/0", f"a={TLS_URL},b=redis://h:6379/0", ""])
    def test_tls_files_with_plaintext_or_local_shards_are_refused(self, urls: str) -> None:
        """TLS files are refused unless every configured shard is rediss:// (they would go unused)."""
        with pytest.raises(SettingsError, match="rediss://"):
            Settings.from_env(
                {"SESSION_STORE_REDIS_URLS": urls, "SESSION_STORE_REDIS_TLS_CA_FILE": "/etc/ca.pem"}
            )

    def test_unix_socket_shards_may_go_with_tls_shards(self) -> None:
        """A unix-socket shard (local, never TLS) does not block TLS files for the others."""
        settings = Settings.from_env(
            {
                "SESSION_STORE_REDIS_URLS": f"a={TLS_URL},b=unix:///run/redis.sock",
                "SESSION_STORE_REDIS_TLS_CA_FILE": "/etc/ca.pem",
            }
        )

        assert Path("/etc/ca.pem") == settings.redis.tls_ca_file

    @pytest.mark.parametrize("given", ["CERT", "KEY"])
    def test_certificate_and_key_go_together(self, given: str) -> None:
        """A client certificate without its key (or the reverse) is refused."""
        with pytest.raises(SettingsError, match="TLS_CERT_FILE and SESSION_STORE_REDIS_TLS_KEY_FILE"):
            Settings.from_env(
                {"SESSION_STORE_REDIS_URLS": TLS_URL, f"SESSION_STORE_REDIS_TLS_{given}_FILE": "/x.pem"}
            )

    def test_username_without_a_password_is_refused(self) -> None:
        """A user without a password would silently connect as `default`: refused."""
        with pytest.raises(SettingsError, match="SESSION_STORE_REDIS_PASSWORD_FILE"):
            Settings.from_env(
                {"SESSION_STORE_REDIS_URLS": TLS_URL, "SESSION_STORE_REDIS_USERNAME": "session-store"}
            )

    def test_username_is_accepted_when_every_url_has_a_password(self) -> None:
        """Every shard's URL carries its own password: the username alone is accepted."""
        settings = Settings.from_env(
            {
                "SESSION_STORE_REDIS_URLS": "rediss://:pw@127.0.0.1:6380/0",
                "SESSION_STORE_REDIS_USERNAME": "session-store",
            }
        )

        assert "session-store" == settings.redis.username

    @pytest.mark.parametrize(
        ("variable", "text"),
        [
            ("SESSION_STORE_REDIS_MEMORY_GUARD_PERCENT", "100"),
            ("SESSION_STORE_REDIS_MEMORY_GUARD_PERCENT", "-1"),
            ("SESSION_STORE_REDIS_MEMORY_POLL_SECONDS", "0"),
            ("SESSION_STORE_REDIS_MEMORY_POLL_SECONDS", "61"),
            ("SESSION_STORE_REDIS_ALLOW_EVICTION", "maybe"),
            ("SESSION_STORE_REDIS_TLS_CHECK_HOSTNAME", "no"),
        ],
    )
    def test_out_of_range_value_is_rejected_naming_the_variable(self, variable: str, text: str) -> None:
        """A bad guard share, poll interval or flag fails naming its variable."""
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: text})

    def test_guard_percent_zero_turns_the_guard_off(self) -> None:
        """0 is accepted: the guard is off."""
        assert (
            0.0
            == Settings.from_env({"SESSION_STORE_REDIS_MEMORY_GUARD_PERCENT": "0"}).redis.memory_guard_percent
        )


class TestSecretsStayOutOfRepr:
    def test_settings_repr_shows_neither_the_url_password_nor_the_file_password(self, tmp_path: Path) -> None:
        """Settings hold the password file's path only, and redact a URL's password."""
        secret_file = _secret_file(tmp_path, SECRET + "\n")
        settings = Settings.from_env(
            {
                "SESSION_STORE_REDIS_URLS": f"a=rediss://u:{SECRET}@127.0.0.1:6380/0,b={TLS_URL}",
                "SESSION_STORE_REDIS_PASSWORD_FILE": str(secret_file),
                "SESSION_STORE_REDIS_USERNAME": "session-store",
            }
        )

        assert SECRET not in repr(settings)
        assert str(secret_file) in repr(settings)

    def test_access_repr_hides_the_password(self, tmp_path: Path) -> None:
        """The loaded access object carries the password but never shows it."""
        redis = RedisSettings(password_file=_secret_file(tmp_path, SECRET))
        access = load_redis_access(redis)

        assert SECRET == access.password
        assert SECRET not in repr(access)


class TestPasswordFile:
    @pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\nsecond line\n"])
    def test_the_first_line_without_its_ending_is_the_password(self, tmp_path: Path, ending: str) -> None:
        """A trailing newline (as `echo` and Kubernetes secrets often have) is not part of the password."""
        access = load_redis_access(RedisSettings(password_file=_secret_file(tmp_path, SECRET + ending)))

        assert SECRET == access.password

    def test_missing_file_fails_naming_the_variable(self, tmp_path: Path) -> None:
        """A missing file fails at start with the variable's name."""
        with pytest.raises(SettingsError, match="SESSION_STORE_REDIS_PASSWORD_FILE"):
            load_redis_access(RedisSettings(password_file=tmp_path / "absent"))

    def test_empty_file_fails_without_quoting_content(self, tmp_path: Path) -> None:
        """An empty first line is refused; the message names the file, not what is in it."""
        path = _secret_file(tmp_path, f"\n{SECRET}\n")
        with pytest.raises(SettingsError, match="holds no password") as caught:
            load_redis_access(RedisSettings(password_file=path))

        assert SECRET not in str(caught.value)

    def test_no_password_file_means_no_password(self) -> None:
        """Without a file the access carries no password (a URL's own may still apply)."""
        access = load_redis_access(RedisSettings(username=""))

        assert ("", "") == (access.username, access.password)


class TestTlsContext:
    def test_context_trusts_the_ca_presents_the_client_certificate_and_checks_names(self, pki: Pki) -> None:
        """The CA file is the only trust anchor, verification is required, host names are checked."""
        shard = ShardSettings(name="a", url=TLS_URL)
        context = tls_context(
            RedisSettings(
                shards=(shard,),
                tls_ca_file=pki.ca,
                tls_cert_file=pki.client_cert,
                tls_key_file=pki.client_key,
            )
        )

        assert (ssl.CERT_REQUIRED, True, 1) == (
            context.verify_mode,
            context.check_hostname,
            len(context.get_ca_certs()),
        )
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2

    def test_host_name_check_can_be_turned_off_but_not_verification(self, pki: Pki) -> None:
        """Turning the name check off keeps the chain verification."""
        context = tls_context(
            RedisSettings(
                shards=(ShardSettings(name="a", url=TLS_URL),),
                tls_ca_file=pki.ca,
                tls_check_hostname=False,
            )
        )

        assert (ssl.CERT_REQUIRED, False) == (context.verify_mode, context.check_hostname)

    def test_unreadable_ca_fails_naming_the_variable(self, tmp_path: Path) -> None:
        """A CA file that is not PEM fails at start, naming SESSION_STORE_REDIS_TLS_CA_FILE."""
        bad = tmp_path / "ca.pem"
        bad.write_text("not a certificate", encoding="utf-8")
        with pytest.raises(SettingsError, match="SESSION_STORE_REDIS_TLS_CA_FILE"):
            tls_context(RedisSettings(shards=(ShardSettings(name="a", url=TLS_URL),), tls_ca_file=bad))

    def test_encrypted_key_fails_instead_of_prompting(self, pki: Pki, tmp_path: Path) -> None:
        """An encrypted client key is refused with a message; nothing waits for a passphrase."""
        key = serialization.load_pem_private_key(pki.client_key.read_bytes(), password=None)
        encrypted = tmp_path / "encrypted-key.pem"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"passphrase"),
            )
        )
        with pytest.raises(SettingsError, match="encrypted key is not supported"):
            tls_context(
                RedisSettings(
                    shards=(ShardSettings(name="a", url=TLS_URL),),
                    tls_ca_file=pki.ca,
                    tls_cert_file=pki.client_cert,
                    tls_key_file=encrypted,
                )
            )


INFO_MEMORY = (
    "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:4194304\r\n"
    "maxmemory_human:4.00M\r\nmaxmemory_policy:volatile-lru\r\nallocator_frag_ratio:1.10\r\n"
)


class TestMemoryInfo:
    def test_info_memory_is_parsed(self) -> None:
        """used_memory, maxmemory and maxmemory_policy are read from INFO memory."""
        assert MemoryReading(1048576, 4194304, "volatile-lru") == parse_memory_info(INFO_MEMORY)

    def test_share_is_used_over_max(self) -> None:
        """The share is a percentage of maxmemory; no limit reads as 0."""
        assert (25.0, 0.0) == (
            MemoryReading(1048576, 4194304, "noeviction").share(),
            MemoryReading(1048576, 0, "noeviction").share(),
        )

    def test_info_without_the_numbers_is_refused(self) -> None:
        """INFO without used_memory is an error, not a zero reading."""
        with pytest.raises(ValueError, match="used_memory"):
            parse_memory_info("# Memory\r\nmaxmemory:0\r\n")


class TestEvictionPolicy:
    def test_noeviction_is_silent(self) -> None:
        """noeviction starts without a word."""
        with capture_logs() as logs:
            check_eviction_policy("s", "noeviction", allow_eviction=False)

        assert [] == logs

    @pytest.mark.parametrize("policy", ["volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"])
    def test_volatile_policies_start_with_a_warning(self, policy: str) -> None:
        """volatile-* may evict sessions (they have TTLs): a warning naming the shard and policy."""
        with capture_logs() as logs:
            check_eviction_policy("s", policy, allow_eviction=False)

        assert [("eviction_policy_risky", "warning", "s", policy)] == [
            (e["event"], e["log_level"], e["shard"], e["policy"]) for e in logs
        ]

    @pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
    def test_allkeys_policies_are_refused(self, policy: str) -> None:
        """allkeys-* refuses to start, naming the shard, the policy and the way out."""
        with pytest.raises(PreconditionFailedError, match=f"shard s has maxmemory-policy {policy}") as caught:
            check_eviction_policy("s", policy, allow_eviction=False)

        assert "SESSION_STORE_REDIS_ALLOW_EVICTION=true" in caught.value.message

    def test_allkeys_starts_when_allowed_with_a_warning(self) -> None:
        """With eviction allowed, allkeys-* starts, logging a warning."""
        with capture_logs() as logs:
            check_eviction_policy("s", "allkeys-lru", allow_eviction=True)

        assert ["eviction_policy_allowed"] == [e["event"] for e in logs]


MIB = 1 << 20


class TestMemoryGuard:
    def test_creates_are_refused_at_the_threshold_and_allowed_again_clearly_below_it(self) -> None:
        """From the share of maxmemory on `check` refuses, until the share falls two points below it
        (no flapping around the threshold); tripping and clearing are logged once each."""
        guard = MemoryGuard(percent=90)
        with capture_logs() as logs:
            guard.update(MemoryReading(89 * MIB, 100 * MIB, "noeviction"))
            guard.check()
            guard.update(MemoryReading(90 * MIB, 100 * MIB, "noeviction"))
            with pytest.raises(StoreMemoryLowError, match="uses 90 % of its maxmemory") as caught:
                guard.check()
            guard.update(MemoryReading(int(88.5 * MIB), 100 * MIB, "noeviction"))
            with pytest.raises(StoreMemoryLowError):
                guard.check()
            guard.update(MemoryReading(87 * MIB, 100 * MIB, "noeviction"))
            guard.check()

        assert ("RESOURCE_EXHAUSTED", "STORE_MEMORY_LOW") == (caught.value.code, caught.value.reason)
        assert ["memory_guard_tripped", "memory_guard_cleared"] == [e["event"] for e in logs]

    def test_no_maxmemory_means_no_guard(self) -> None:
        """maxmemory 0 (no limit): never refused, whatever is used."""
        guard = MemoryGuard(percent=50)
        guard.update(MemoryReading(10_000 * MIB, 0, "noeviction"))

        guard.check()
        assert not guard.low

    def test_percent_zero_turns_the_guard_off(self) -> None:
        """percent 0: never refused, even at maxmemory."""
        guard = MemoryGuard(percent=0)
        guard.update(MemoryReading(100 * MIB, 100 * MIB, "noeviction"))

        guard.check()
        assert not guard.low

    def test_a_policy_changed_at_runtime_is_logged(self) -> None:
        """An eviction policy changed after start (CONFIG SET by someone) is reported."""
        guard = MemoryGuard()
        guard.update(MemoryReading(MIB, 0, "noeviction"))
        with capture_logs() as logs:
            guard.update(MemoryReading(MIB, 0, "allkeys-lru"))

        assert [("eviction_policy_changed", "allkeys-lru")] == [(e["event"], e["policy"]) for e in logs]

    @pytest.mark.parametrize(("percent", "poll"), [(100, 1.0), (-5, 1.0), (90, 0.0)])
    def test_out_of_range_configuration_is_refused(self, percent: float, poll: float) -> None:
        """A share outside 0..100 or a non-positive poll interval is a ValueError."""
        with pytest.raises(ValueError, match="percent"):
            MemoryGuard(percent=percent, poll_seconds=poll)
