"""Keycloak's expiry rules (keycloak-semantics.md §2.2-§2.5) as properties of model.policy.

The reference below restates the rules straight from the semantics document, with Keycloak's
short names (SI, SM, RI, RM, CI, CM, OI, OE, OM, COI, COM), and is deliberately written without
looking at how ``session_store.model.policy`` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_store.errors import InvalidArgumentError
from session_store.model.limits import MAX_TIMEOUT_SECONDS
from session_store.model.policy import (
    MAX_CLIENT_POLICIES,
    ClientPolicy,
    Deadlines,
    RealmPolicy,
    auth_session_lifespan,
    auth_sessions_limit,
    client_session_deadlines,
    effective_policy,
    user_session_deadlines,
)

# --- the reference: §2.1-§2.5 in plain Python -------------------------------------------------


@dataclass(frozen=True)
class Attrs:
    """A client's attribute overrides (OIDCConfigAttributes); 0 means not set."""

    idle: int = 0  # client.session.idle.timeout
    max: int = 0  # client.session.max.lifespan
    offline_idle: int = 0  # client.offline.session.idle.timeout
    offline_max: int = 0  # client.offline.session.max.lifespan


@dataclass(frozen=True)
class Realm:
    """The realm settings of §2.1, with the document's names."""

    SI: int
    SM: int
    RI: int
    RM: int
    CI: int
    CM: int
    OI: int
    OE: bool
    OM: int
    COI: int
    COM: int


def realm_of(policy: RealmPolicy) -> Realm:
    """Read a RealmPolicy's inputs under the document's names."""
    return Realm(
        SI=policy.sso_session_idle_timeout,
        SM=policy.sso_session_max_lifespan,
        RI=policy.sso_session_idle_timeout_remember_me,
        RM=policy.sso_session_max_lifespan_remember_me,
        CI=policy.client_session_idle_timeout,
        CM=policy.client_session_max_lifespan,
        OI=policy.offline_session_idle_timeout,
        OE=policy.offline_session_max_lifespan_enabled,
        OM=policy.offline_session_max_lifespan,
        COI=policy.client_offline_session_idle_timeout,
        COM=policy.client_offline_session_max_lifespan,
    )


def attrs_of(policy: RealmPolicy, client_id: str) -> Attrs:
    """A client's overrides, or none."""
    client = policy.clients.get(client_id)
    if client is None:
        return Attrs()
    return Attrs(
        idle=client.session_idle_timeout,
        max=client.session_max_lifespan,
        offline_idle=client.offline_session_idle_timeout,
        offline_max=client.offline_session_max_lifespan,
    )


def ref_idle(r: Realm) -> int:
    """§2.2 idle."""
    return r.SI if r.SI > 0 else 1800


def ref_lifespan(r: Realm) -> int:
    """§2.2 lifespan."""
    return r.SM if r.SM > 0 else 36000


def ref_idle_rm(r: Realm) -> int:
    """§2.2 idleRM: remember-me can only lengthen."""
    return max(ref_idle(r), r.RI)


def ref_lifespan_rm(r: Realm) -> int:
    """§2.2 lifespanRM."""
    return max(ref_lifespan(r), r.RM)


def ref_off_idle(r: Realm) -> int:
    """§2.2 offIdle."""
    return r.OI if r.OI > 0 else 2592000


def ref_off_life(r: Realm) -> int:
    """§2.2 offLife: -1 means no maximum."""
    if not r.OE:
        return -1
    return r.OM if r.OM > 0 else 5184000


def ref_user(
    r: Realm, *, offline: bool, started: int, last_refresh: int, remember_me: bool
) -> tuple[int, int]:
    """§2.3: (maxExpiry, idleExpiry) of a user session in ms."""
    if offline:
        off_life = ref_off_life(r)
        max_expiry = -1 if off_life == -1 else started * 1000 + 1000 * off_life
        return max_expiry, last_refresh * 1000 + 1000 * ref_off_idle(r)
    lifespan = ref_lifespan_rm(r) if remember_me else ref_lifespan(r)
    idle = ref_idle_rm(r) if remember_me else ref_idle(r)
    return started * 1000 + 1000 * lifespan, last_refresh * 1000 + 1000 * idle


def first_set(*values: int) -> int:
    """The first value that is set (> 0), as the document's chains of `x>0 ? x : ...` read."""
    return next(v for v in values if v > 0)


def ref_client(
    r: Realm,
    a: Attrs,
    *,
    offline: bool,
    client_started: int,
    client_timestamp: int,
    remember_me: bool,
    user_max_expiry: int,
) -> tuple[int, int]:
    """§2.4: (maxExpiry_c, idleExpiry_c) of a client session in ms."""
    if offline:
        max_c = -1
        if r.OE or a.offline_max > 0:
            max_c = client_started * 1000 + 1000 * first_set(a.offline_max, r.COM, r.OM, 5184000)
            if user_max_expiry > 0:
                max_c = min(max_c, user_max_expiry)
        idle = first_set(a.offline_idle, r.COI, ref_off_idle(r))
        return max_c, client_timestamp * 1000 + 1000 * idle
    life = ref_lifespan(r)
    if remember_me:
        life = max(life, r.RM)
    life = first_set(a.max, r.CM, life)
    idle = ref_idle(r)
    if remember_me:
        idle = max(idle, r.RI)
    idle = first_set(a.idle, r.CI, idle)
    return min(client_started * 1000 + 1000 * life, user_max_expiry), client_timestamp * 1000 + 1000 * idle


def ref_valid(max_expiry: int, idle_expiry: int, now: int) -> bool:
    """§2.5 with grace window W = 0."""
    window = 0
    return idle_expiry > now - window and (max_expiry == -1 or max_expiry > now)


# --- strategies -------------------------------------------------------------------------------

# 0 ("unset") is drawn often: it is where the defaults of §2.2 apply.
timeouts = st.one_of(st.just(0), st.integers(1, 3600), st.integers(1, MAX_TIMEOUT_SECONDS))
epoch_seconds = st.integers(1_000_000_000, 4_000_000_000)
client_ids = st.sampled_from(["account", "app-a", "app-b", "f3c1e0d2-9a7b-4c1e-8f00-123456789abc"])
client_policies = st.builds(
    ClientPolicy,
    session_idle_timeout=timeouts,
    session_max_lifespan=timeouts,
    offline_session_idle_timeout=timeouts,
    offline_session_max_lifespan=timeouts,
)
realm_policies = st.builds(
    RealmPolicy,
    realm=st.just("test-realm"),
    sso_session_idle_timeout=timeouts,
    sso_session_max_lifespan=timeouts,
    sso_session_idle_timeout_remember_me=timeouts,
    sso_session_max_lifespan_remember_me=timeouts,
    remember_me=st.booleans(),
    client_session_idle_timeout=timeouts,
    client_session_max_lifespan=timeouts,
    offline_session_idle_timeout=timeouts,
    offline_session_max_lifespan_enabled=st.booleans(),
    offline_session_max_lifespan=timeouts,
    client_offline_session_idle_timeout=timeouts,
    client_offline_session_max_lifespan=timeouts,
    clients=st.dictionaries(client_ids, client_policies, max_size=3),
)


@dataclass(frozen=True)
class ClientCase:
    """A user session and one of its client sessions, times in epoch seconds."""

    started: int
    last_refresh: int
    client_started: int
    client_timestamp: int


@st.composite
def client_cases(draw: st.DrawFn) -> ClientCase:
    """Times ordered as Keycloak orders them: started <= client started <= client timestamp."""
    started = draw(epoch_seconds)
    client_started = started + draw(st.integers(0, 10 * 24 * 3600))
    return ClientCase(
        started=started,
        last_refresh=started + draw(st.integers(0, 10 * 24 * 3600)),
        client_started=client_started,
        client_timestamp=client_started + draw(st.integers(0, 10 * 24 * 3600)),
    )


# Counts rather than timeouts have limits of their own (tested separately below).
COUNT_FIELDS = ("auth_sessions_limit", "refresh_token_max_reuse")
INT_FIELDS = [f.name for f in fields(RealmPolicy) if f.type == "int" and f.name not in COUNT_FIELDS]
CLIENT_FIELDS = [f.name for f in fields(ClientPolicy)]


# --- tests ------------------------------------------------------------------------------------


class TestEffectivePolicy:
    def test_defaults_when_every_value_is_zero(self) -> None:
        """An all-zero realm gets Keycloak's defaults: 30 min idle, 10 h max, 30 d offline idle."""
        eff = effective_policy(RealmPolicy(realm="r"))

        expected = (1800, 36000, 1800, 36000, 2592000, -1, 0, 0)
        actual = (
            eff.idle,
            eff.lifespan,
            eff.idle_remember_me,
            eff.lifespan_remember_me,
            eff.offline_idle,
            eff.offline_lifespan,
            eff.client_idle,
            eff.client_max,
        )
        assert expected == actual

    def test_offline_max_default_applies_when_enabled_and_zero(self) -> None:
        """Offline max lifespan enabled with OM = 0 means the 60-day default."""
        eff = effective_policy(RealmPolicy(realm="r", offline_session_max_lifespan_enabled=True))

        assert 5184000 == eff.offline_lifespan

    def test_offline_max_is_unlimited_when_disabled(self) -> None:
        """With offline max lifespan disabled, OM is ignored and there is no maximum."""
        eff = effective_policy(RealmPolicy(realm="r", offline_session_max_lifespan=7200))

        assert -1 == eff.offline_lifespan

    def test_remember_me_never_shortens(self) -> None:
        """A remember-me idle/max shorter than the plain one leaves the plain one in force."""
        eff = effective_policy(
            RealmPolicy(
                realm="r",
                sso_session_idle_timeout=3600,
                sso_session_max_lifespan=7200,
                sso_session_idle_timeout_remember_me=60,
                sso_session_max_lifespan_remember_me=120,
            )
        )

        assert (3600, 7200) == (eff.idle_remember_me, eff.lifespan_remember_me)

    @given(policy=realm_policies)
    def test_effective_values_follow_section_2_2(self, policy: RealmPolicy) -> None:
        """Every effective realm value is the §2.2 formula of the realm settings."""
        r = realm_of(policy)
        eff = effective_policy(policy)

        expected = (ref_idle(r), ref_lifespan(r), ref_idle_rm(r), ref_lifespan_rm(r))
        expected_offline = (ref_off_idle(r), ref_off_life(r))
        assert expected == (eff.idle, eff.lifespan, eff.idle_remember_me, eff.lifespan_remember_me)
        assert expected_offline == (eff.offline_idle, eff.offline_lifespan)
        assert policy.remember_me == eff.remember_me_allowed


class TestUserSessionDeadlines:
    @given(policy=realm_policies, case=client_cases(), remember_me=st.booleans())
    def test_online_deadlines_follow_section_2_3(
        self, policy: RealmPolicy, case: ClientCase, remember_me: bool
    ) -> None:
        """An online session's max and idle deadlines are §2.3's, remember-me included."""
        expected = ref_user(
            realm_of(policy),
            offline=False,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=remember_me,
        )

        actual = user_session_deadlines(
            effective_policy(policy),
            offline=False,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=remember_me,
        )

        assert expected == (actual.max_ms, actual.idle_ms)

    @given(policy=realm_policies, case=client_cases(), remember_me=st.booleans())
    def test_offline_deadlines_follow_section_2_3(
        self, policy: RealmPolicy, case: ClientCase, remember_me: bool
    ) -> None:
        """An offline session's deadlines are §2.3's, and remember-me does not change them."""
        expected = ref_user(
            realm_of(policy),
            offline=True,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=False,
        )

        actual = user_session_deadlines(
            effective_policy(policy),
            offline=True,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=remember_me,
        )

        assert expected == (actual.max_ms, actual.idle_ms)

    def test_remember_me_lengthens_an_online_session(self) -> None:
        """A remember-me session lives by RI and RM when they are longer than SI and SM."""
        eff = effective_policy(
            RealmPolicy(
                realm="r",
                sso_session_idle_timeout=600,
                sso_session_max_lifespan=3600,
                sso_session_idle_timeout_remember_me=86400,
                sso_session_max_lifespan_remember_me=604800,
                remember_me=True,
            )
        )

        actual = user_session_deadlines(eff, offline=False, started=1000, last_refresh=2000, remember_me=True)

        assert Deadlines(max_ms=(1000 + 604800) * 1000, idle_ms=(2000 + 86400) * 1000) == actual

    def test_offline_session_without_max_lifespan_never_reaches_a_maximum(self) -> None:
        """With offline max lifespan off, an offline session dies only by idling."""
        eff = effective_policy(RealmPolicy(realm="r", offline_session_idle_timeout=100))

        actual = user_session_deadlines(eff, offline=True, started=1000, last_refresh=5000, remember_me=False)

        assert (-1, 5_100_000) == (actual.max_ms, actual.expires_at_ms)

    def test_offline_session_with_max_lifespan(self) -> None:
        """With offline max lifespan on, an offline session dies at started + OM."""
        eff = effective_policy(
            RealmPolicy(
                realm="r", offline_session_max_lifespan_enabled=True, offline_session_max_lifespan=3000
            )
        )

        actual = user_session_deadlines(eff, offline=True, started=1000, last_refresh=3900, remember_me=False)

        assert Deadlines(max_ms=4_000_000, idle_ms=(3900 + 2592000) * 1000) == actual


class TestClientSessionDeadlines:
    @given(
        policy=realm_policies,
        case=client_cases(),
        client_id=client_ids,
        remember_me=st.booleans(),
    )
    def test_online_deadlines_follow_section_2_4(
        self, policy: RealmPolicy, case: ClientCase, client_id: str, remember_me: bool
    ) -> None:
        """An online client session's deadlines are §2.4's, capped by the user session's maximum."""
        r = realm_of(policy)
        user_max, _ = ref_user(
            r, offline=False, started=case.started, last_refresh=case.last_refresh, remember_me=remember_me
        )
        expected = ref_client(
            r,
            attrs_of(policy, client_id),
            offline=False,
            client_started=case.client_started,
            client_timestamp=case.client_timestamp,
            remember_me=remember_me,
            user_max_expiry=user_max,
        )

        actual = client_session_deadlines(
            effective_policy(policy),
            offline=False,
            client_id=client_id,
            client_started=case.client_started,
            client_timestamp=case.client_timestamp,
            remember_me=remember_me,
            user_max_ms=user_max,
        )

        assert expected == (actual.max_ms, actual.idle_ms)
        assert actual.max_ms <= user_max

    @given(
        policy=realm_policies,
        case=client_cases(),
        client_id=client_ids,
        remember_me=st.booleans(),
    )
    def test_offline_deadlines_follow_section_2_4(
        self, policy: RealmPolicy, case: ClientCase, client_id: str, remember_me: bool
    ) -> None:
        """An offline client session's deadlines are §2.4's, capped by a finite offline user maximum."""
        r = realm_of(policy)
        user_max, _ = ref_user(
            r, offline=True, started=case.started, last_refresh=case.last_refresh, remember_me=remember_me
        )
        expected = ref_client(
            r,
            attrs_of(policy, client_id),
            offline=True,
            client_started=case.client_started,
            client_timestamp=case.client_timestamp,
            remember_me=remember_me,
            user_max_expiry=user_max,
        )

        actual = client_session_deadlines(
            effective_policy(policy),
            offline=True,
            client_id=client_id,
            client_started=case.client_started,
            client_timestamp=case.client_timestamp,
            remember_me=remember_me,
            user_max_ms=user_max,
        )

        assert expected == (actual.max_ms, actual.idle_ms)

    def test_client_max_is_capped_by_the_user_max(self) -> None:
        """A client max lifespan longer than the user session's ends with the user session."""
        eff = effective_policy(RealmPolicy(realm="r", client_session_max_lifespan=100_000))

        actual = client_session_deadlines(
            eff,
            offline=False,
            client_id="app",
            client_started=1000,
            client_timestamp=1000,
            remember_me=False,
            user_max_ms=(1000 + 36000) * 1000,
        )

        assert (1000 + 36000) * 1000 == actual.max_ms

    def test_client_idle_is_not_capped_by_the_user_idle(self) -> None:
        """A client idle timeout longer than the user session's idle timeout is kept as is."""
        eff = effective_policy(
            RealmPolicy(realm="r", sso_session_idle_timeout=600, client_session_idle_timeout=3600)
        )

        actual = client_session_deadlines(
            eff,
            offline=False,
            client_id="app",
            client_started=1000,
            client_timestamp=2000,
            remember_me=False,
            user_max_ms=(1000 + 36000) * 1000,
        )

        assert (2000 + 3600) * 1000 == actual.idle_ms

    def test_client_override_wins_over_realm_client_values(self) -> None:
        """A client's own idle/max attributes replace the realm's client-session values."""
        eff = effective_policy(
            RealmPolicy(
                realm="r",
                client_session_idle_timeout=900,
                client_session_max_lifespan=1800,
                clients={"app": ClientPolicy(session_idle_timeout=60, session_max_lifespan=120)},
            )
        )

        actual = client_session_deadlines(
            eff,
            offline=False,
            client_id="app",
            client_started=1000,
            client_timestamp=1010,
            remember_me=False,
            user_max_ms=(1000 + 36000) * 1000,
        )

        assert Deadlines(max_ms=1_120_000, idle_ms=1_070_000) == actual

    def test_realm_client_values_apply_to_clients_without_override(self) -> None:
        """A client without attributes gets the realm's CI and CM, not the user-session values."""
        eff = effective_policy(
            RealmPolicy(
                realm="r",
                client_session_idle_timeout=900,
                client_session_max_lifespan=1800,
                clients={"app": ClientPolicy(session_idle_timeout=60, session_max_lifespan=120)},
            )
        )

        actual = client_session_deadlines(
            eff,
            offline=False,
            client_id="other",
            client_started=1000,
            client_timestamp=1010,
            remember_me=False,
            user_max_ms=(1000 + 36000) * 1000,
        )

        assert Deadlines(max_ms=2_800_000, idle_ms=1_910_000) == actual

    def test_offline_client_override_sets_a_max_even_when_realm_has_none(self) -> None:
        """A client offline max lifespan applies although the realm's offline max is off."""
        eff = effective_policy(
            RealmPolicy(realm="r", clients={"app": ClientPolicy(offline_session_max_lifespan=500)})
        )

        actual = client_session_deadlines(
            eff,
            offline=True,
            client_id="app",
            client_started=1000,
            client_timestamp=1000,
            remember_me=False,
            user_max_ms=-1,
        )

        assert 1_500_000 == actual.max_ms

    def test_offline_client_max_falls_back_to_the_realm_offline_max(self) -> None:
        """Without COM or a client attribute, an offline client session's max is OM, not the default."""
        eff = effective_policy(
            RealmPolicy(
                realm="r", offline_session_max_lifespan_enabled=True, offline_session_max_lifespan=10_000_000
            )
        )

        actual = client_session_deadlines(
            eff,
            offline=True,
            client_id="app",
            client_started=1000,
            client_timestamp=1000,
            remember_me=False,
            user_max_ms=(1000 + 10_000_000) * 1000,
        )

        assert (1000 + 10_000_000) * 1000 == actual.max_ms

    def test_offline_client_without_max_has_none(self) -> None:
        """Without offline max lifespan in the realm or the client, an offline client session has no max."""
        eff = effective_policy(RealmPolicy(realm="r", client_offline_session_max_lifespan=500))

        actual = client_session_deadlines(
            eff,
            offline=True,
            client_id="app",
            client_started=1000,
            client_timestamp=1000,
            remember_me=False,
            user_max_ms=-1,
        )

        assert -1 == actual.max_ms


max_deadlines = st.one_of(st.just(-1), st.integers(0, 2**53))


class TestDeadlines:
    @given(max_ms=max_deadlines, idle_ms=st.integers(0, 2**53), now=st.integers(0, 2**53))
    def test_is_alive_is_keycloaks_validity_rule(self, max_ms: int, idle_ms: int, now: int) -> None:
        """A session is alive exactly when §2.5's rule with W = 0 says it is valid."""
        assert ref_valid(max_ms, idle_ms, now) == Deadlines(max_ms, idle_ms).is_alive(now)

    @given(max_ms=max_deadlines, idle_ms=st.integers(1, 2**53))
    def test_boundary_is_strict(self, max_ms: int, idle_ms: int) -> None:
        """A session is alive 1 ms before its deadline and dead exactly at it."""
        deadlines = Deadlines(max_ms, idle_ms)
        deadline = deadlines.expires_at_ms

        assert (True, False) == (deadlines.is_alive(deadline - 1), deadlines.is_alive(deadline))

    @given(max_ms=max_deadlines, idle_ms=st.integers(0, 2**53))
    def test_expires_at_is_the_earlier_deadline(self, max_ms: int, idle_ms: int) -> None:
        """The session dies at the earlier of its deadlines, or by idling when it has no maximum."""
        expected = idle_ms if max_ms == -1 else min(max_ms, idle_ms)

        assert expected == Deadlines(max_ms, idle_ms).expires_at_ms

    @given(policy=realm_policies, case=client_cases(), remember_me=st.booleans(), offline=st.booleans())
    def test_session_dies_exactly_at_its_formula_deadline(
        self, policy: RealmPolicy, case: ClientCase, remember_me: bool, offline: bool
    ) -> None:
        """A user session is alive 1 ms before min(max, idle) of §2.3 and dead at that instant."""
        max_expiry, idle_expiry = ref_user(
            realm_of(policy),
            offline=offline,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=remember_me,
        )
        deadline = idle_expiry if max_expiry == -1 else min(max_expiry, idle_expiry)
        deadlines = user_session_deadlines(
            effective_policy(policy),
            offline=offline,
            started=case.started,
            last_refresh=case.last_refresh,
            remember_me=remember_me,
        )

        assert (True, False) == (deadlines.is_alive(deadline - 1), deadlines.is_alive(deadline))


class TestRealmPolicyValidation:
    @pytest.mark.parametrize("name", INT_FIELDS)
    def test_negative_timeout_is_rejected(self, name: str) -> None:
        """A negative realm timeout is an invalid argument (0 is the way to say unset)."""
        with pytest.raises(InvalidArgumentError, match=name):
            RealmPolicy(realm="r", **{name: -1})  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", INT_FIELDS)
    def test_timeout_above_the_maximum_is_rejected(self, name: str) -> None:
        """A realm timeout above MAX_TIMEOUT_SECONDS is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match=name):
            RealmPolicy(realm="r", **{name: MAX_TIMEOUT_SECONDS + 1})  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", INT_FIELDS)
    def test_timeout_at_the_maximum_is_accepted(self, name: str) -> None:
        """A realm timeout of exactly MAX_TIMEOUT_SECONDS is kept."""
        policy = RealmPolicy(realm="r", **{name: MAX_TIMEOUT_SECONDS})  # type: ignore[arg-type]

        assert MAX_TIMEOUT_SECONDS == getattr(policy, name)

    @pytest.mark.parametrize("name", CLIENT_FIELDS)
    @pytest.mark.parametrize("value", [-1, MAX_TIMEOUT_SECONDS + 1])
    def test_bad_client_override_is_rejected(self, name: str, value: int) -> None:
        """A per-client timeout that is negative or above the maximum is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match=name):
            RealmPolicy(realm="r", clients={"app": ClientPolicy(**{name: value})})

    @pytest.mark.parametrize("client_id", ["", "my app", "app\n", "app\x00", "a" * 256])
    def test_bad_client_id_is_rejected(self, client_id: str) -> None:
        """A client override keyed by an invalid client id is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match="client id"):
            RealmPolicy(realm="r", clients={client_id: ClientPolicy()})

    @pytest.mark.parametrize("realm", ["", "my realm", "a" * 256])
    def test_bad_realm_is_rejected(self, realm: str) -> None:
        """A policy for an invalid realm id is an invalid argument."""
        with pytest.raises(InvalidArgumentError, match="realm"):
            RealmPolicy(realm=realm)

    def test_too_many_client_overrides_are_rejected(self) -> None:
        """A realm may hold at most MAX_CLIENT_POLICIES client overrides."""
        clients = {f"c{i}": ClientPolicy() for i in range(MAX_CLIENT_POLICIES + 1)}

        with pytest.raises(InvalidArgumentError, match="client overrides"):
            RealmPolicy(realm="r", clients=clients)

    @given(policy=realm_policies)
    def test_valid_policy_is_kept_unchanged(self, policy: RealmPolicy) -> None:
        """A policy with values in range constructs and keeps every value."""
        rebuilt = RealmPolicy(**{f.name: getattr(policy, f.name) for f in fields(RealmPolicy)})

        assert policy == rebuilt


class TestCountLimits:
    """Limits of the policy's count fields."""

    def test_auth_sessions_limit_is_bounded(self) -> None:
        """More than 10 000 tabs per root is refused; a non-positive limit means Keycloak's 300."""
        with pytest.raises(InvalidArgumentError):
            RealmPolicy(realm="r", auth_sessions_limit=10_001)
        assert 300 == auth_sessions_limit(RealmPolicy(realm="r"))
        assert 5 == auth_sessions_limit(RealmPolicy(realm="r", auth_sessions_limit=5))

    def test_auth_session_lifespan_is_the_longest_access_code_lifespan(self) -> None:
        """A root lives max(accessCodeLifespan, ...UserAction, ...Login): 1800 s by default."""
        assert 1800 == auth_session_lifespan(RealmPolicy(realm="r"))
        assert 4000 == auth_session_lifespan(RealmPolicy(realm="r", access_code_lifespan=4000))
