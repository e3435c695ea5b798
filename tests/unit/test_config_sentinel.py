"""Shard URLs of Redis Sentinel groups in SESSION_STORE_REDIS_URLS (config.parse_sentinel_url)."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_store.config import (
    DEFAULT_SENTINEL_PORT,
    RedisSettings,
    SentinelURL,
    Settings,
    SettingsError,
    ShardSettings,
    parse_sentinel_url,
)


def shards_of(text: str) -> tuple[ShardSettings, ...]:
    """The shards parsed from a SESSION_STORE_REDIS_URLS value."""
    return Settings.from_env({"SESSION_STORE_REDIS_URLS": text}).redis.shards


class TestParseSentinelURL:
    def test_full_form(self) -> None:
        """Sentinels with and without ports (IPv6 in brackets), master name, db, credentials, option."""
        expected = SentinelURL(
            tls=True,
            sentinels=(("s1", DEFAULT_SENTINEL_PORT), ("10.0.0.2", 26380), ("::1", 26381)),
            master_name="sessions-a",
            db=3,
            username="svc",
            password="p@ss,/word",  # noqa: S106 - a test value
            sentinel_auth=True,
        )
        url = "rediss+sentinel://svc:p%40ss%2C%2Fword@s1,10.0.0.2:26380,[::1]:26381/sessions-a/3?sentinel_auth=same"
        assert expected == parse_sentinel_url(url)

    def test_minimal_form(self) -> None:
        """One sentinel and a master name: database 0, no credentials, no AUTH to the sentinels."""
        expected = SentinelURL(tls=False, sentinels=(("h", 26379),), master_name="m")
        assert expected == parse_sentinel_url("redis+sentinel://h/m")

    def test_repr_never_shows_the_password(self) -> None:
        """The parsed URL's repr leaves the password out."""
        assert "secret" not in repr(parse_sentinel_url("redis+sentinel://:secret@h:1/m"))

    @pytest.mark.parametrize(
        "url",
        [
            "redis+sentinel://h:1",  # no master name
            "redis+sentinel://h:1/",  # empty master name
            "redis+sentinel://h:1/m/x",  # db not a number
            "redis+sentinel://h:1/m/0/extra",
            "redis+sentinel://h:99999/m",  # port out of range
            "redis+sentinel://h:port/m",
            "redis+sentinel://h:1,,h2:2/m",  # an empty sentinel
            "redis+sentinel://[::1/m",
            "redis+sentinel://h:1/m?sentinel_auth=maybe",
            "redis+sentinel://h:1/m?db=2",  # unknown option
            "redis://h:1/0",  # not a Sentinel URL
        ],
    )
    def test_malformed_urls_are_refused(self, url: str) -> None:
        """A malformed Sentinel URL stops startup with a message naming the variable."""
        with pytest.raises(SettingsError, match="SESSION_STORE_REDIS_URLS"):
            parse_sentinel_url(url)

    def test_error_never_shows_the_password(self) -> None:
        """A refused URL's message redacts its password."""
        with pytest.raises(SettingsError) as caught:
            parse_sentinel_url("redis+sentinel://u:secret@h:1")
        assert "secret" not in str(caught.value)


class TestShardListWithSentinelGroups:
    def test_commas_between_sentinels_stay_in_their_url(self) -> None:
        """Sentinel groups sit among plain shards; their host lists do not split the shard list."""
        shards = shards_of(
            "a=redis://10.0.0.1:6379/0, b=redis+sentinel://s1:26379,s2:26379,s3:26379/group-b/0,"
            "redis+sentinel://t1,t2/group-c, d=rediss://10.0.0.4:6380/0"
        )
        assert [
            ShardSettings(name="a", url="redis://10.0.0.1:6379/0"),
            ShardSettings(name="b", url="redis+sentinel://s1:26379,s2:26379,s3:26379/group-b/0"),
            ShardSettings(name="group-c/0", url="redis+sentinel://t1,t2/group-c"),
            ShardSettings(name="d", url="rediss://10.0.0.4:6380/0"),
        ] == list(shards)

    def test_unnamed_group_is_named_after_its_master(self) -> None:
        """A Sentinel shard without a name is `<master-name>/<db>`: stable across failovers."""
        assert ("m/2",) == tuple(s.name for s in shards_of("redis+sentinel://h:1,h:2/m/2"))

    def test_names_must_stay_unique(self) -> None:
        """Two groups of the same master name and db need names of their own."""
        with pytest.raises(SettingsError, match="unique"):
            shards_of("redis+sentinel://h:1/m,redis+sentinel://h:2/m")

    def test_malformed_group_in_the_list_is_refused(self) -> None:
        """A bad Sentinel entry stops parsing of the whole list."""
        with pytest.raises(SettingsError):
            shards_of("a=redis://h:1/0,b=redis+sentinel://s1:1,s2:x/m")

    def test_repr_redacts_the_password(self) -> None:
        """A shard's repr shows the Sentinel URL without its password."""
        (shard,) = shards_of("g=redis+sentinel://u:secret@s1:1,s2:2/m")
        assert "secret" not in repr(shard)
        assert "s1:1,s2:2/m" in repr(shard)

    def test_tls_files_need_rediss_sentinel_urls(self, tmp_path: Path) -> None:
        """TLS files beside a plaintext Sentinel shard are refused; with rediss+sentinel:// they apply."""
        ca = tmp_path / "ca.pem"
        plain = ShardSettings(name="g", url="redis+sentinel://s1:1/m")
        with pytest.raises(SettingsError, match="plaintext: g"):
            RedisSettings(shards=(plain,), tls_ca_file=ca)
        tls = ShardSettings(name="g", url="rediss+sentinel://s1:1/m")
        assert (tls,) == RedisSettings(shards=(tls,), tls_ca_file=ca).shards

    def test_username_with_url_passwords(self) -> None:
        """A username needs a password: a Sentinel URL's own password counts, as a redis:// one does."""
        shard = ShardSettings(name="g", url="redis+sentinel://u:pw@s1:1/m")
        assert "svc" == RedisSettings(shards=(shard,), username="svc").username
