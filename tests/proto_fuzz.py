"""Fuzzing any gRPC method from its descriptors: which RPCs exist, hostile requests, raw calls.

Nothing here knows session-store's rules. A `Vocabulary` supplies realistic values by field name (a
realm with data, ids that exist), which the strategies mix with hostile ones (huge, unicode, control
characters, NUL, extreme and negative numbers, unknown enum values, long lists and maps), so that a
fuzzed call gets past validation as often as it fails it. `sweep` is the deterministic part: every
field, at any depth, meets every kind of bad value once in an otherwise realistic request.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib
import math
import pkgutil
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import strategies as st

import session_store.v1

EXCLUDED_SERVICES = frozenset({"session_store.v1.TestClock"})
"""Services that are not fuzzed: the test clock exists only on test servers, to move time."""
MAX_DEPTH = 3
"""Nesting beyond which a message field is left empty."""
HUGE_LENGTHS = (256, 1024, 1025, 4096, 4097, 16384, 16385, 65536)
"""Lengths of huge strings: around every documented limit, up to 64 Ki characters."""
CALM_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
"""Free text of calm requests: plain, so that only the realistic values decide the outcome."""
MANY_LENGTHS = (63, 64, 65, 127, 128, 129, 256, 257)
"""Lengths of long lists and maps: around every documented count limit."""
SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "\t",
    "\n",
    "\r\n",
    "\x7f",
    "\x85",
    "\u00a0",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\u202e",
    "\ufffd",
    "\U0001f600",
    ".",
    ".route",
    "..",
    "%s%n",
    "{}",
    "{000}",
    "\\",
    "'",
    '"',
    "*",
    "?",
    "[a-z]*",
    ":",
    "ss:{000}:s:x",
    "ss:events",
    "-1",
    "0",
    "NaN",
    "null",
    '{"r":"x"}',
    "\u017f",
    "ß",
    "İ",
    "ﬁ",
    "e\u0301",
)
"""Strings that broke parsers, key layouts, Lua patterns and case mappings before."""


@dataclass(frozen=True)
class Rpc:
    """One method of a served service, callable without its generated stub."""

    method: MethodDescriptor

    @property
    def name(self) -> str:
        """`Service.Method`, for test ids and messages."""
        return f"{self.method.containing_service.name}.{self.method.name}"

    @property
    def path(self) -> str:
        """The HTTP/2 path gRPC calls it by."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        """The request message class."""
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        """The response message class."""
        return message_factory.GetMessageClass(self.method.output_type)


def discover_rpcs(package: ModuleType = session_store.v1) -> list[Rpc]:
    """Every method of every service in the package's generated `*_pb2` modules, bar EXCLUDED_SERVICES.

    Services added to the protos are found here without any change to the fuzzer.
    """
    found: list[Rpc] = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name not in EXCLUDED_SERVICES:
                found.extend(Rpc(method) for method in service.methods)
    return sorted(found, key=lambda rpc: rpc.path)


@dataclass(frozen=True)
class Vocabulary:
    """Realistic values for the strategies to mix in.

    Attributes:
        realistic: field name -> values that mean something to the server (ids that exist, the realm
            under test). Map keys are asked for as "<field>.key".
        suspicious: field name -> values that look realistic but are not (look-alikes of a realm),
            for hostile and wild requests.
        known: every realistic value, for string fields the rules do not name (and as look-alikes).
        numbers: field name -> integers that mean something there (now for a time, a plausible
            timeout), for calm requests.
        epochs: times (epoch seconds and milliseconds) around which wild integers are drawn.
    """

    realistic: Callable[[str], Sequence[str]]
    suspicious: Callable[[str], Sequence[str]]
    known: Sequence[str]
    numbers: Callable[[str], Sequence[int]]
    epochs: Sequence[int]


class UnsupportedFieldError(TypeError):
    """A field type the strategies cannot generate (so its RPC would not be fuzzed)."""


def _repeat(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def _affixed(value: str, affix: str) -> str:
    return value + affix


_LOOK_ALIKES: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "title": str.title,
    "casefold": str.casefold,
    "fullwidth": lambda v: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in v),
    "NFC": functools.partial(unicodedata.normalize, "NFC"),
    "NFD": functools.partial(unicodedata.normalize, "NFD"),
    "NFKC": functools.partial(unicodedata.normalize, "NFKC"),
    "NFKD": functools.partial(unicodedata.normalize, "NFKD"),
}
"""Ways to make a string that looks like another (or is equal to it after normalisation)."""


def _look_alike(value: str, how: str) -> str:
    return _LOOK_ALIKES[how](value)


def hostile_text() -> st.SearchStrategy[str]:
    """Strings a careful server refuses or stores verbatim: special, random, control and huge ones."""
    huge_unit = st.sampled_from(("a", "é", "\U0001f600", "\x00", "\u202e", "a b", "%")) | st.text(
        min_size=1, max_size=3
    )
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(max_size=24),
        st.text(st.characters(max_codepoint=0xA0), max_size=12),
        st.text(st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp", "Mn")), min_size=1, max_size=8),
        st.builds(_repeat, huge_unit, st.sampled_from(HUGE_LENGTHS) | st.integers(0, 65536)),
    )


def _known_twisted(known: Sequence[str]) -> st.SearchStrategy[str]:
    """Known values with a suffix (".route", NUL, whitespace, a huge tail) or as a look-alike."""
    values = st.sampled_from(tuple(known))
    suffixes = st.sampled_from((".route", ".", ".a.b", " ", "\x00", "\n", "\u200b", "x", "*", "x" * 300))
    forms = st.sampled_from(sorted(_LOOK_ALIKES))
    return st.builds(_affixed, values, suffixes) | st.builds(_look_alike, values, forms)


def _integers(bits: int, *, signed: bool, epochs: Sequence[int]) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    edges = (0, 1, -1, 2, 3, 5, 60, 500, 5000, 5001, 2**31 - 1, 2**31, 2**53, 2**53 + 1, -(2**53) - 1)
    decade = 10 * 365 * 24 * 3600
    in_range = tuple(
        v for v in (*edges, decade, decade + 1, low, high, low + 1, high - 1) if low <= v <= high
    )
    near = st.builds(
        lambda at, delta: min(max(at + delta, low), high),
        st.sampled_from(tuple(epochs)),
        st.integers(-(10**7), 10**7),
    )
    return st.one_of(st.sampled_from(in_range), near, st.integers(low, high))


class Mood(enum.Enum):
    """How hostile a builder's values are."""

    CALM = "calm"
    """Realistic values only: the call should get past validation."""
    WILD = "wild"
    """Realistic and hostile values mixed, field by field."""
    HOSTILE = "hostile"
    """Hostile values only: what one poisoned field of a calm request gets."""


class RequestStrategies:
    """Hypothesis strategies for the requests of any RPC, built from the descriptors.

    A request is drawn in one of three ways: calm (every value realistic, so the call reaches the
    scripts), calm with one field at any depth poisoned (a hostile value where everything else is
    right), or wild (every field mixed). Strategies are built once per message type and depth.
    """

    def __init__(self, vocabulary: Vocabulary) -> None:
        """Draw realistic values from `vocabulary`."""
        self.builders = {mood: _Builder(vocabulary, mood) for mood in Mood}

    def for_rpc(self, rpc: Rpc) -> st.SearchStrategy[Fuzzed]:
        """Requests of `rpc`.

        Raises:
            UnsupportedFieldError: a field (at any depth) has a type the strategies cannot draw.
        """
        descriptor = rpc.method.input_type
        calm = self.builders[Mood.CALM].message(descriptor)
        wild = self.builders[Mood.WILD].message(descriptor)
        paths = field_paths(descriptor)
        if not paths:
            return _fuzzed(calm)
        poisoned = _poisoned(calm, self.builders[Mood.HOSTILE], paths)
        return _fuzzed(st.one_of(calm, poisoned, poisoned, wild))


def field_paths(descriptor: Descriptor, depth: int = 0) -> tuple[tuple[FieldDescriptor, ...], ...]:
    """Every field of a message and, down to MAX_DEPTH, of its singular message fields: the places a
    poisoned request may put its one hostile value."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for f in descriptor.fields:
        paths.append((f,))
        nested = f.message_type
        if nested is not None and not f.is_repeated and depth < MAX_DEPTH:
            paths.extend((f, *rest) for rest in field_paths(nested, depth + 1))
    return tuple(paths)


class _Builder:
    """Strategies of one mood."""

    def __init__(self, vocabulary: Vocabulary, mood: Mood) -> None:
        self._vocabulary = vocabulary
        self._mood = mood
        self._calm = mood is Mood.CALM
        self._hostile = hostile_text()
        self._known = st.sampled_from(tuple(vocabulary.known))
        self._twisted = _known_twisted(vocabulary.known)
        self._messages: dict[tuple[str, int], st.SearchStrategy[Message]] = {}

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Messages of this type: each field unset or drawn, at most one field of each oneof."""
        cache_key = (descriptor.full_name, depth)
        if cache_key not in self._messages:
            plain = {
                f.name: self._maybe(f, self.field(f, depth))
                for f in descriptor.fields
                if f.containing_oneof is None
            }
            # proto3 `optional` fields are one-field (synthetic) oneofs: unset or set, as they should be.
            oneofs = [
                st.one_of(
                    st.none(), *(st.tuples(st.just(f.name), self.field(f, depth)) for f in oneof.fields)
                )
                for oneof in descriptor.oneofs
            ]
            cls = message_factory.GetMessageClass(descriptor)
            self._messages[cache_key] = _assembled(
                cls, descriptor, st.fixed_dictionaries(plain), st.tuples(*oneofs)
            )
        return self._messages[cache_key]

    def _maybe(self, f: FieldDescriptor, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        if not self._calm:
            return st.none() | values
        if f.is_repeated or f.message_type is not None:
            return st.one_of(values, values, st.none())
        # Calm requests set every scalar: an unset id is refused before anything interesting runs.
        return values

    def field(self, f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        """Values of one field of a message at `depth`: a dict for a map, a list for a repeated field.

        Raises:
            UnsupportedFieldError: the field's type (or a nested one) cannot be drawn.
        """
        entry = f.message_type
        if f.is_repeated and entry is not None and entry.GetOptions().map_entry:
            key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
            keys = self._single(key_field, depth, f"{f.name}.key")
            values = self._single(value_field, depth, f"{f.name}.value")
            maps = st.dictionaries(keys, values, max_size=3 if self._calm else 6)
            if key_field.type == FieldDescriptor.TYPE_STRING and not self._calm:
                maps |= st.builds(
                    _many_keys, st.sampled_from(MANY_LENGTHS), self._short(f"{f.name}.key"), values
                )
            return maps
        if f.is_repeated:
            element = self._single(f, depth, f.name)
            lists = st.lists(element, max_size=3 if self._calm else 6)
            if self._calm:
                return lists
            if f.type == FieldDescriptor.TYPE_STRING:
                return lists | st.builds(_many_strings, st.sampled_from(MANY_LENGTHS), self._short(f.name))
            return lists | st.builds(_many_copies, st.sampled_from(MANY_LENGTHS), element)
        return self._single(f, depth, f.name)

    def _short(self, name: str) -> st.SearchStrategy[str]:
        """Short strings for long lists and map keys (huge ones times hundreds exceed any request cap)."""
        realistic = tuple(self._vocabulary.realistic(name))
        return st.sampled_from(realistic or tuple(self._vocabulary.known)) | st.text(max_size=8)

    def _single(self, f: FieldDescriptor, depth: int, name: str) -> st.SearchStrategy[Any]:
        kind = f.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self._string(name)
        if f.message_type is not None:
            if depth >= MAX_DEPTH:
                return st.just(message_factory.GetMessageClass(f.message_type)())
            return self.message(f.message_type, depth + 1)
        if f.enum_type is not None:
            return _enum_values(f.enum_type, self._mood)
        if kind in _INTEGER_TYPES:
            return self._integers(kind, name)
        scalar = _SCALARS.get(kind)
        if scalar is None:
            raise UnsupportedFieldError(f"{f.full_name}: field type {kind} has no strategy")
        return scalar

    def _integers(self, kind: int, name: str) -> st.SearchStrategy[int]:
        bits, signed = _INTEGER_TYPES[kind]
        if self._calm:
            numbers = tuple(self._vocabulary.numbers(name))
            small = st.integers(0, 5) | st.integers(0, 3600)
            return st.one_of(st.sampled_from(numbers), st.sampled_from(numbers), small) if numbers else small
        return _integers(bits, signed=signed, epochs=self._vocabulary.epochs)

    def _string(self, name: str) -> st.SearchStrategy[str]:
        realistic = tuple(self._vocabulary.realistic(name))
        if self._calm:
            return (
                st.sampled_from(realistic) if realistic else st.text(CALM_ALPHABET, min_size=1, max_size=12)
            )
        # Another field's realistic value (an id where a realm goes), a look-alike, or plain hostile.
        branches = [self._known, self._twisted, self._hostile, self._hostile]
        suspicious = tuple(self._vocabulary.suspicious(name))
        if suspicious:
            branches.append(st.sampled_from(suspicious))
        if self._mood is Mood.HOSTILE:
            return st.one_of(branches)
        if realistic:
            # Weighted towards values that mean something here, so calls reach past validation.
            exact = st.sampled_from(realistic)
            branches = [exact, exact, exact, *branches]
        return st.one_of(branches)


@st.composite
def _poisoned(
    draw: st.DrawFn,
    calm: st.SearchStrategy[Message],
    hostile: _Builder,
    paths: tuple[tuple[FieldDescriptor, ...], ...],
) -> Message:
    """A calm message with the field at one path replaced by a hostile value."""
    message = draw(calm)
    path = draw(st.sampled_from(paths))
    target = message
    for f in path[:-1]:
        target = getattr(target, f.name)
    last = path[-1]
    target.ClearField(last.name)
    _set_field(target, last, draw(hostile.field(last, len(path) - 1)))
    return message


def baseline(descriptor: Descriptor, vocabulary: Vocabulary, depth: int = 0) -> Message:
    """A realistic message: every scalar outside a oneof set to its first realistic value, every
    singular message filled the same way (to MAX_DEPTH); lists, maps and oneofs left empty."""
    message = message_factory.GetMessageClass(descriptor)()
    for f in descriptor.fields:
        if f.is_repeated or f.containing_oneof is not None:
            continue
        if f.message_type is not None:
            if depth < MAX_DEPTH:
                getattr(message, f.name).CopyFrom(baseline(f.message_type, vocabulary, depth + 1))
            continue
        setattr(message, f.name, _plain(f, vocabulary, f.name))
    return message


def _plain(f: FieldDescriptor, vocabulary: Vocabulary, name: str) -> Any:
    """One unremarkable value of a scalar field (its first realistic value, else a default)."""
    if f.type == FieldDescriptor.TYPE_STRING:
        realistic = vocabulary.realistic(name)
        return realistic[0] if realistic else "x"
    if f.type in _INTEGER_TYPES:
        numbers = vocabulary.numbers(name)
        return numbers[0] if numbers else 0
    if f.enum_type is not None:
        return f.enum_type.values[0].number
    if f.message_type is not None:
        return message_factory.GetMessageClass(f.message_type)()
    return {FieldDescriptor.TYPE_BOOL: False, FieldDescriptor.TYPE_BYTES: b""}.get(f.type, 0.0)


def _scalar_archetypes(f: FieldDescriptor, vocabulary: Vocabulary, name: str) -> list[Any]:
    """The hostile values a sweep tries in a scalar field."""
    if f.type == FieldDescriptor.TYPE_STRING:
        return ["", "\x00", "x y", "\u200b", "a" * HUGE_LENGTHS[-1], *vocabulary.suspicious(name)[:2]]
    if f.type in _INTEGER_TYPES:
        bits, signed = _INTEGER_TYPES[f.type]
        return [-1, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [2**bits - 1]
    if f.enum_type is not None:
        numbers = [v.number for v in f.enum_type.values]
        return [] if f.enum_type.is_closed else [-1, max(numbers) + 1]
    if f.message_type is not None:
        return [message_factory.GetMessageClass(f.message_type)()]
    others: dict[int, list[Any]] = {
        FieldDescriptor.TYPE_BOOL: [True],
        FieldDescriptor.TYPE_BYTES: [b"\x00" * HUGE_LENGTHS[-1]],
        FieldDescriptor.TYPE_DOUBLE: [math.nan, math.inf, -1.0],
        FieldDescriptor.TYPE_FLOAT: [math.nan, math.inf, -1.0],
    }
    return others.get(f.type, [])


def _archetypes(f: FieldDescriptor, vocabulary: Vocabulary) -> list[Any]:
    """The hostile values a sweep tries in a field: scalars, a long or odd list, a long or odd map."""
    entry = f.message_type
    if f.is_repeated and entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        value = _plain(value_field, vocabulary, f"{f.name}.value")
        maps: list[Any] = [
            {_plain(key_field, vocabulary, f"{f.name}.key"): v}
            for v in _scalar_archetypes(value_field, vocabulary, f"{f.name}.value")
        ]
        if key_field.type == FieldDescriptor.TYPE_STRING:
            maps += [_many_keys(MANY_LENGTHS[-1], "k", value), {"\x00": value}, {"": value}]
        return maps
    if f.is_repeated:
        plain = _plain(f, vocabulary, f.name)
        many = (
            _many_strings(MANY_LENGTHS[-1], plain)
            if isinstance(plain, str)
            else _many_copies(MANY_LENGTHS[-1], plain)
        )
        return [many, *([v] for v in _scalar_archetypes(f, vocabulary, f.name)[:3])]
    return _scalar_archetypes(f, vocabulary, f.name)


def sweep(rpc: Rpc, vocabulary: Vocabulary) -> list[Fuzzed]:
    """Deterministic requests of `rpc`: the baseline, then the baseline with one field (at any depth)
    set to each of its hostile archetypes, so that every field meets every kind of bad value once."""
    descriptor = rpc.method.input_type
    base = baseline(descriptor, vocabulary)
    cases = [Fuzzed(base)]
    for path in field_paths(descriptor):
        for value in _archetypes(path[-1], vocabulary):
            message = rpc.request_class()
            message.CopyFrom(base)
            target = message
            for f in path[:-1]:
                target = getattr(target, f.name)
            target.ClearField(path[-1].name)
            _set_field(target, path[-1], value)
            cases.append(Fuzzed(message))
    return cases


_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32: (32, True),
    FieldDescriptor.TYPE_SINT32: (32, True),
    FieldDescriptor.TYPE_SFIXED32: (32, True),
    FieldDescriptor.TYPE_INT64: (64, True),
    FieldDescriptor.TYPE_SINT64: (64, True),
    FieldDescriptor.TYPE_SFIXED64: (64, True),
    FieldDescriptor.TYPE_UINT32: (32, False),
    FieldDescriptor.TYPE_FIXED32: (32, False),
    FieldDescriptor.TYPE_UINT64: (64, False),
    FieldDescriptor.TYPE_FIXED64: (64, False),
}


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(width=64),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=32)
    | st.builds(
        lambda unit, n: (unit * (n // len(unit) + 1))[:n],
        st.binary(min_size=1, max_size=3),
        st.sampled_from(HUGE_LENGTHS),
    ),
}


def _enum_values(enum_type: EnumDescriptor, mood: Mood) -> st.SearchStrategy[int]:
    """Named values when calm; for an open enum, unknown ones too (only those when hostile)."""
    numbers = tuple(v.number for v in enum_type.values)
    named = st.sampled_from(numbers)
    if mood is Mood.CALM or enum_type.is_closed:
        return named
    unknown = st.sampled_from((-1, max(numbers) + 1, 2**31 - 1, -(2**31))) | st.integers(-(2**31), 2**31 - 1)
    return unknown if mood is Mood.HOSTILE else named | named | unknown


def _many_keys(count: int, base: str, value: Any) -> dict[str, Any]:
    return {f"{base}{i}": value for i in range(count)}


def _many_strings(count: int, base: str) -> list[str]:
    return [f"{base}{i}" for i in range(count)]


def _many_copies(count: int, element: Any) -> list[Any]:
    return [element] * count


class Fuzzed:
    """A drawn request; its repr (in hypothesis' reports) is one line with long strings cut."""

    def __init__(self, message: Message) -> None:
        """Wrap a request."""
        self.message = message

    def __repr__(self) -> str:
        """The request in one line, long strings cut."""
        return short_repr(self.message, limit=300)


@st.composite
def _fuzzed(draw: st.DrawFn, messages: st.SearchStrategy[Message]) -> Fuzzed:
    # A composite, not a map: hypothesis would print the construction call rather than the repr.
    return Fuzzed(draw(messages))


@st.composite
def _assembled(
    draw: st.DrawFn,
    cls: type[Message],
    descriptor: Descriptor,
    plain: st.SearchStrategy[dict[str, Any]],
    oneofs: st.SearchStrategy[tuple[tuple[str, Any] | None, ...]],
) -> Message:
    return _assemble(cls, descriptor, draw(plain), draw(oneofs))


def _assemble(
    cls: type[Message],
    descriptor: Descriptor,
    fields: dict[str, Any],
    chosen: tuple[tuple[str, Any] | None, ...],
) -> Message:
    message = cls()
    values = [*fields.items(), *(c for c in chosen if c is not None)]
    for name, value in values:
        if value is not None:
            _set_field(message, descriptor.fields_by_name[name], value)
    return message


def _set_field(message: Message, f: FieldDescriptor, value: Any) -> None:
    target = getattr(message, f.name)
    entry = f.message_type
    if f.is_repeated and entry is not None and entry.GetOptions().map_entry:
        message_values = entry.fields_by_name["value"].message_type is not None
        for key, item in value.items():
            if message_values:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif f.is_repeated:
        target.extend(value)
    elif entry is not None:
        target.CopyFrom(value)
    else:
        setattr(message, f.name, value)


def covered_fields(descriptor: Descriptor, strategies: RequestStrategies) -> set[str]:
    """The full names of every field (at any depth) that `strategies` can draw for this message.

    Raises:
        UnsupportedFieldError: a field has a type the strategies cannot draw.
    """
    seen: set[str] = set()

    def walk(d: Descriptor) -> None:
        for f in d.fields:
            if f.full_name in seen:
                continue
            for builder in strategies.builders.values():
                builder.field(f, 0)
            seen.add(f.full_name)
            if f.message_type is not None:
                walk(f.message_type)

    walk(descriptor)
    return seen


def all_fields(descriptor: Descriptor) -> set[str]:
    """The full names of every field of a message, at any depth."""
    seen: set[str] = set()

    def walk(d: Descriptor) -> None:
        for f in d.fields:
            if f.full_name not in seen:
                seen.add(f.full_name)
                if f.message_type is not None:
                    walk(f.message_type)

    walk(descriptor)
    return seen


def strings_of(message: Message) -> list[tuple[str, str]]:
    """Every (field name, string) in a message, map keys and values included, at any depth."""
    found: list[tuple[str, str]] = []
    for f, value in message.ListFields():
        entry = f.message_type
        if f.is_repeated and entry is not None and entry.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(key, str):
                    found.append((f"{f.name}.key", key))
                if isinstance(item, Message):
                    found.extend(strings_of(item))
                elif isinstance(item, str):
                    found.append((f"{f.name}.value", item))
            continue
        for item in value if f.is_repeated else [value]:
            if isinstance(item, Message):
                found.extend(strings_of(item))
            elif isinstance(item, str):
                found.append((f.name, item))
    return found


def short_repr(message: Message, limit: int = 120) -> str:
    """A one-line rendering of a message with long strings and long lists or maps cut, for reports."""
    fields = ", ".join(f"{f.name}={_short_value(value, limit)}" for f, value in message.ListFields())
    return f"{message.DESCRIPTOR.name}({fields})"


def _short_value(value: Any, limit: int) -> str:
    if isinstance(value, Message):
        return short_repr(value, limit)
    if isinstance(value, str | bytes):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}…(len {len(value)})"
    shown = 5
    if hasattr(value, "items"):
        items = list(value.items())
        inner = [f"{_short_value(k, limit)}: {_short_value(v, limit)}" for k, v in items[:shown]]
        more = f", …{len(items) - shown} more" if len(items) > shown else ""
        return "{" + ", ".join(inner) + more + "}"
    if hasattr(value, "__len__"):
        elements = list(value)
        more = f", …{len(elements) - shown} more" if len(elements) > shown else ""
        return "[" + ", ".join(_short_value(e, limit) for e in elements[:shown]) + more + "]"
    return repr(value)


@dataclass(frozen=True)
class Outcome:
    """What a raw call came back with.

    Attributes:
        code: the final status (OK for a stream this side cancelled after enough messages).
        details: the status message.
        responses: the messages received.
        reason: the google.rpc.ErrorInfo reason of an error ("" when none came).
        domain: the ErrorInfo domain.
        cancelled_here: a stream was cancelled by the caller after its messages were read.
    """

    code: grpc.StatusCode
    details: str
    responses: tuple[Message, ...]
    reason: str = ""
    domain: str = ""
    cancelled_here: bool = False


def _error_info(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason), str(info.domain)
    return "", ""


def _failed(error: grpc.aio.AioRpcError, responses: Sequence[Message]) -> Outcome:
    reason, domain = _error_info(error)
    return Outcome(error.code(), error.details() or "", tuple(responses), reason, domain)


async def invoke(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    request: Message,
    *,
    deadline_seconds: float,
    max_messages: int,
    idle_seconds: float | None,
) -> Outcome:
    """Call `rpc` with `request` through the raw channel (no client-side validation).

    A server stream is read until it ends, `max_messages` arrived, or (after the first message) none
    came for `idle_seconds`; then it is cancelled. Client-streaming methods send the one request.
    """
    serialize, deserialize = rpc.request_class.SerializeToString, rpc.response_class.FromString
    method = rpc.method
    if method.client_streaming and method.server_streaming:
        stream_call: Any = channel.stream_stream(rpc.path, serialize, deserialize)(
            iter([request]), timeout=deadline_seconds
        )
    elif method.server_streaming:
        stream_call = channel.unary_stream(rpc.path, serialize, deserialize)(
            request, timeout=deadline_seconds
        )
    else:
        if method.client_streaming:
            unary: Any = channel.stream_unary(rpc.path, serialize, deserialize)(
                iter([request]), timeout=deadline_seconds
            )
        else:
            unary = channel.unary_unary(rpc.path, serialize, deserialize)(request, timeout=deadline_seconds)
        try:
            return Outcome(grpc.StatusCode.OK, "", (await unary,))
        except grpc.aio.AioRpcError as exc:
            return _failed(exc, ())
    responses: list[Message] = []
    try:
        while len(responses) < max_messages:
            wait = idle_seconds if responses else None
            try:
                message = await asyncio.wait_for(stream_call.read(), wait)
            except TimeoutError:
                break
            if message is grpc.aio.EOF:
                return Outcome(await stream_call.code(), await stream_call.details() or "", tuple(responses))
            responses.append(message)
    except grpc.aio.AioRpcError as exc:
        return _failed(exc, responses)
    stream_call.cancel()
    return Outcome(grpc.StatusCode.OK, "", tuple(responses), cancelled_here=True)
