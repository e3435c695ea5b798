"""Settings built from an explicit environment (config.Settings.from_env), never from os.environ here."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.config import (
    DEFAULT_EMBEDDED_SHARDS,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_POLICY_REFRESH_SECONDS,
    DEFAULT_REDIS_CONNECTIONS,
    DEFAULT_REDIS_TIMEOUT_SECONDS,
    DEFAULT_STARTUP_ATTEMPTS,
    RedisSettings,
    Settings,
    SettingsError,
    ShardSettings,
)

NUMBER_VARIABLES = [
    "SESSION_STORE_GRACE_SECONDS",
    "SESSION_STORE_POLICY_REFRESH_SECONDS",
    "SESSION_STORE_REDIS_TIMEOUT",
    "SESSION_STORE_REDIS_CONNECTIONS",
    "SESSION_STORE_STARTUP_ATTEMPTS",
    "SESSION_STORE_EMBEDDED_SHARDS",
]
INT_VARIABLES = NUMBER_VARIABLES[3:]


def shards_of(text: str) -> tuple[ShardSettings, ...]:
    """The shards parsed from a SESSION_STORE_REDIS_URLS value."""
    return Settings.from_env({"SESSION_STORE_REDIS_URLS": text}).redis.shards


class TestDefaults:
    def test_empty_environment_gives_the_defaults(self) -> None:
        """With no variable set, every setting is its documented default and no shard is configured."""
        expected = Settings(
            listen=DEFAULT_LISTEN,
            grace_seconds=DEFAULT_GRACE_SECONDS,
            log_level="info",
            log_json=None,
            policy_refresh_seconds=DEFAULT_POLICY_REFRESH_SECONDS,
            redis=RedisSettings(
                shards=(),
                timeout_seconds=DEFAULT_REDIS_TIMEOUT_SECONDS,
                connections=DEFAULT_REDIS_CONNECTIONS,
                startup_attempts=DEFAULT_STARTUP_ATTEMPTS,
                embedded_shards=DEFAULT_EMBEDDED_SHARDS,
                data_dir=Path(".run"),
                server_binary="",
            ),
        )

        assert expected == Settings.from_env({})

    def test_blank_values_count_as_unset(self) -> None:
        """A variable set to blanks takes its default."""
        blank = dict.fromkeys([*NUMBER_VARIABLES, "SESSION_STORE_LISTEN", "SESSION_STORE_LOG_LEVEL"], "  ")

        assert Settings.from_env({}) == Settings.from_env(blank)

    def test_other_variables_are_ignored(self) -> None:
        """Only SESSION_STORE_* variables are read."""
        assert Settings.from_env({}) == Settings.from_env({"LISTEN": "0.0.0.0:1", "REDIS_URLS": "x"})

    def test_values_are_read(self) -> None:
        """Each variable sets its setting, numbers parsed and text trimmed."""
        settings = Settings.from_env(
            {
                "SESSION_STORE_LISTEN": " 0.0.0.0:6000 ",
                "SESSION_STORE_GRACE_SECONDS": "2.5",
                "SESSION_STORE_LOG_LEVEL": "DEBUG",
                "SESSION_STORE_LOG_JSON": "true",
                "SESSION_STORE_REDIS_CONNECTIONS": "8",
                "SESSION_STORE_EMBEDDED_SHARDS": "5",
            }
        )

        expected = ("0.0.0.0:6000", 2.5, "debug", True, 8, 5)
        actual = (
            settings.listen,
            settings.grace_seconds,
            settings.log_level,
            settings.log_json,
            settings.redis.connections,
            settings.redis.embedded_shards,
        )
        assert expected == actual


class TestRedisUrls:
    def test_named_and_bare_urls_are_parsed(self) -> None:
        """`name=redis://h:p/db` keeps its name; a bare URL is named host:port/db."""
        expected = (
            ShardSettings(name="a", url="redis://10.0.0.1:7000/0"),
            ShardSettings(name="10.0.0.2:7001/2", url="redis://10.0.0.2:7001/2"),
            ShardSettings(name="h:6379/0", url="rediss://h"),
        )

        assert expected == shards_of(" a=redis://10.0.0.1:7000/0 , redis://10.0.0.2:7001/2,,rediss://h")

    def test_equals_sign_inside_a_bare_url_is_not_a_name(self) -> None:
        """A bare URL whose query holds '=' is not split into a name."""
        assert (ShardSettings(name="h:1/0", url="redis://h:1/0?x=y"),) == shards_of("redis://h:1/0?x=y")

    def test_repeated_names_are_rejected(self) -> None:
        """Two shards with one name are a settings error (placement hashes the names)."""
        with pytest.raises(SettingsError, match="SESSION_STORE_REDIS_URLS: shard names must be unique"):
            shards_of("a=redis://h1:1/0,a=redis://h2:2/0")

    def test_repeated_bare_urls_are_rejected(self) -> None:
        """The same bare URL twice gives two shards of one name: a settings error."""
        with pytest.raises(SettingsError, match="unique"):
            shards_of("redis://h:1/0,redis://h:1/0")

    @pytest.mark.parametrize(
        "text",
        ["http://h:1/0", "a=http://h:1/0", "h:6379", "a=h:6379", "redis://", "mysql://:secret@h/0"],
    )
    def test_bad_scheme_or_host_is_rejected(self, text: str) -> None:
        """An entry that is not a redis://, rediss:// or unix:// URL with a host is a settings error."""
        with pytest.raises(SettingsError, match=r"SESSION_STORE_REDIS_URLS: .* is not a redis:// URL"):
            shards_of(text)

    def test_rejected_url_does_not_show_its_password(self) -> None:
        """The error about a bad URL redacts the password in it."""
        with pytest.raises(SettingsError) as caught:
            shards_of("mysql://:secret@h/0")

        assert "secret" not in str(caught.value)

    @pytest.mark.parametrize("text", ["redis://h:abc/0", "a=redis://h:99999/0", "a=redis://:pw@h:x/0"])
    def test_bad_port_is_rejected(self, text: str) -> None:
        """A port that is not a number in 0..65535 is a settings error naming the variable."""
        with pytest.raises(SettingsError, match=r"SESSION_STORE_REDIS_URLS: .* has a bad port"):
            shards_of(text)


class TestMalformedNumbers:
    @pytest.mark.parametrize("variable", NUMBER_VARIABLES)
    @pytest.mark.parametrize("text", ["abc", "1,5", "--1", "nan", "inf", "-inf"])
    def test_malformed_number_is_rejected_naming_the_variable(self, variable: str, text: str) -> None:
        """A value that is not a finite number is a settings error that names the variable."""
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: text})

    @pytest.mark.parametrize("variable", INT_VARIABLES)
    def test_fraction_for_a_count_is_rejected(self, variable: str) -> None:
        """A count given as a fraction is a settings error that names the variable."""
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: "2.5"})

    @pytest.mark.parametrize(
        ("variable", "text"),
        [
            ("SESSION_STORE_GRACE_SECONDS", "-1"),
            ("SESSION_STORE_POLICY_REFRESH_SECONDS", "0"),
            ("SESSION_STORE_REDIS_TIMEOUT", "0"),
            ("SESSION_STORE_REDIS_CONNECTIONS", "0"),
            ("SESSION_STORE_STARTUP_ATTEMPTS", "0"),
            ("SESSION_STORE_EMBEDDED_SHARDS", "17"),
            ("SESSION_STORE_LOG_LEVEL", "verbose"),
            ("SESSION_STORE_LOG_JSON", "maybe"),
            ("SESSION_STORE_LISTEN", "6000"),
        ],
    )
    def test_out_of_range_value_is_rejected_naming_the_variable(self, variable: str, text: str) -> None:
        """A well-formed value outside its range is a settings error that names the variable."""
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: text})


passwords = st.text(string.ascii_letters + string.digits + "-._~!$&'()*+;=", min_size=1, max_size=20).map(
    lambda tail: f"S3cr3t{tail}"
)


class TestRedaction:
    @given(password=passwords, username=st.sampled_from(["", "default", "app"]), named=st.booleans())
    def test_repr_never_shows_the_password(self, password: str, username: str, named: bool) -> None:
        """The repr of a shard and of the whole settings hides a URL's password."""
        url = f"redis://{username}:{password}@cache.internal:6380/1"
        settings = Settings.from_env({"SESSION_STORE_REDIS_URLS": f"a={url}" if named else url})

        shown = repr(settings.redis.shards[0]) + repr(settings)

        assert "S3cr3t" not in shown
        assert f"redis://{username}:***@cache.internal:6380/1" in shown

    def test_url_itself_keeps_the_password(self) -> None:
        """Redaction is for display only: the URL used to connect still holds the password."""
        shard = shards_of("a=redis://app:S3cr3t@h:1/0")[0]

        assert "redis://app:S3cr3t@h:1/0" == shard.url

    def test_url_without_password_is_shown_as_is(self) -> None:
        """A URL without a password is shown unchanged."""
        shard = ShardSettings(name="a", url="redis://h:1/0")

        assert "ShardSettings(name='a', url='redis://h:1/0')" == repr(shard)

    def test_ipv6_host_keeps_its_brackets(self) -> None:
        """Redaction leaves an IPv6 host and its port readable."""
        shard = ShardSettings(name="a", url="redis://:pw@[::1]:7000/0")

        assert "ShardSettings(name='a', url='redis://:***@[::1]:7000/0')" == repr(shard)


class TestHealthListen:
    def test_unset_means_no_separate_health_port(self) -> None:
        """Without SESSION_STORE_HEALTH_LISTEN, health is served on the API address only."""
        assert "" == Settings.from_env({}).health_listen

    @pytest.mark.parametrize("text", ["0.0.0.0:8081", " 127.0.0.1:0 ", "[::]:8081", "localhost:65535"])
    def test_host_port_is_read(self, text: str) -> None:
        """A host:port (IPv6 in brackets) is taken as the health-only address, trimmed."""
        assert text.strip() == Settings.from_env({"SESSION_STORE_HEALTH_LISTEN": text}).health_listen

    @pytest.mark.parametrize("text", ["8081", ":8081", "h:", "h:http", "h:65536", "unix:/tmp/health.sock"])
    def test_malformed_address_is_rejected_naming_the_variable(self, text: str) -> None:
        """Anything but host:port with a port in 0..65535 is a settings error naming the variable."""
        with pytest.raises(SettingsError, match="SESSION_STORE_HEALTH_LISTEN"):
            Settings.from_env({"SESSION_STORE_HEALTH_LISTEN": text})
