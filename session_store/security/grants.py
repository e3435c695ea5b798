"""Who may do what: roles, per-realm grants, authenticated callers, and the callers file.

A caller is an identity string prefixed by how it was proven — ``tls:<certificate name>``,
``jwt:<token subject>``, ``unix:<configured name>`` — and a grant: a role (read < write < admin) on
a set of realms (``*``: every realm). The callers file (``SESSION_STORE_AUTH_CALLERS_FILE``, YAML or
JSON) grants identities their realms and role::

    callers:
      "tls:spiffe://cluster.local/ns/idp/sa/keycloak": {realms: ["*"], role: write}
      "tls:ops-console":                              {realms: [master, customers], role: admin}
      "jwt:reporting-job":                            {realms: [customers], role: read}
      "unix:local":                                   {realms: ["*"], role: admin}
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from session_store.config import SettingsError

ALL_REALMS = "*"
"""In a grant's realms: every realm, including the cluster-wide RPCs."""


class Role(enum.IntEnum):
    """What a caller may do in its realms; each role includes the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: object) -> Role:
        """The role named `text` (``read``, ``write`` or ``admin``, any case).

        Raises:
            ValueError: `text` names no role.
        """
        if isinstance(text, str) and text.upper() in cls.__members__:
            return cls[text.upper()]
        raise ValueError(f"role must be read, write or admin, not {text!r}")


@dataclass(frozen=True)
class Grant:
    """A role on a set of realms (``*`` among them: every realm)."""

    role: Role
    realms: frozenset[str]

    @classmethod
    def of(cls, role: Role, realms: Iterable[str]) -> Grant:
        """A grant of `role` on `realms`."""
        return cls(role, frozenset(realms))

    @property
    def every_realm(self) -> bool:
        """Whether the grant covers every realm (and so the cluster-wide RPCs)."""
        return ALL_REALMS in self.realms

    def allows(self, role: Role, realm: str | None) -> bool:
        """Whether the grant permits `role` in `realm` (None: cluster-wide, needs every realm)."""
        if self.role < role:
            return False
        if self.every_realm:
            return True
        return realm is not None and realm in self.realms


ADMIN_EVERYWHERE = Grant.of(Role.ADMIN, [ALL_REALMS])
"""The grant of every caller when authentication is off, and of the unix-socket peer by default."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its identity (never a secret) and what it may do (None: nothing)."""

    identity: str
    grant: Grant | None


def parse_grant(entry: object, where: str) -> Grant:
    """A grant from a ``{realms: [...], role: ...}`` mapping.

    Raises:
        ValueError: the entry is not such a mapping, or a realm or the role is malformed.
    """
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a mapping with `realms` and `role`")
    unknown = set(entry) - {"realms", "role"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    realms = entry.get("realms")
    if isinstance(realms, str):
        realms = [realms]
    if not isinstance(realms, list) or not realms:
        raise ValueError(f'{where}: `realms` must be a non-empty list of realm names (or "*")')
    for realm in realms:
        if not isinstance(realm, str) or not realm or any(c.isspace() for c in realm):
            raise ValueError(f"{where}: realm {realm!r} is not a realm name")
    return Grant.of(Role.parse(entry.get("role")), realms)


def parse_callers(document: object, where: str) -> dict[str, Grant]:
    """Identity -> grant from a parsed callers file (``{callers: {identity: grant, ...}}``).

    Raises:
        ValueError: the document does not have that shape, or an identity lacks its prefix.
    """
    if not isinstance(document, Mapping) or set(document) != {"callers"}:
        raise ValueError(f"{where}: expected one top-level key `callers`")
    callers = document["callers"]
    if not isinstance(callers, Mapping):
        raise ValueError(f"{where}: `callers` must map identities to grants")
    grants: dict[str, Grant] = {}
    for identity, entry in callers.items():
        kind, sep, name = str(identity).partition(":")
        if not sep or kind not in ("tls", "jwt", "unix") or not name:
            raise ValueError(
                f"{where}: identity {identity!r} must be tls:<name>, jwt:<subject> or unix:<name>"
            )
        grants[str(identity)] = parse_grant(entry, f"{where}: {identity}")
    return grants


def load_callers(path: Path | None) -> dict[str, Grant]:
    """The callers file at `path` (empty when None); YAML, or JSON (a ``.json`` file).

    Raises:
        SettingsError: the file cannot be read or is malformed (the message names the file).
    """
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return parse_callers(document, str(path))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SettingsError(f"SESSION_STORE_AUTH_CALLERS_FILE: {exc}") from None
