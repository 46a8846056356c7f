"""Key groups and canonical key bytes: how keyed state is partitioned, and why it survives a restart.

A key's bytes pick its key group, and key groups pick the subtask that owns the key's state. Restored state
is only found again if all of this is the same in every process, so the hash is pinned to literal values.
"""

from __future__ import annotations

import ast
import enum
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import lockgate as lg
from lockgate.state import (
    UPPER_BOUND_MAX_PARALLELISM,
    KeyGroupRange,
    canonical_key_bytes,
    check_parallelism,
    key_group_for,
    key_group_owners,
    stable_key_hash,
    subtask_for_key_group,
)
from lockgate.state._keygroups import (
    _HASH_ENTRY_BYTES,
    KEY_HASH_CACHE_BYTES,
    _fmix32,
    _fmix32_all,
    _key_hashes,
    _KeyHashCache,
    key_groups_of,
    uncached_key_hash,
)

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------------------
# Range assignment: Flink's formula, computed here with exact fractions, independently of the code.


def flink_range(max_p: int, p: int, i: int) -> tuple[int, int]:
    start = math.ceil(Fraction(i * max_p, p))
    end = math.ceil(Fraction((i + 1) * max_p, p)) - 1
    return start, end


@st.composite
def assignments(draw: st.DrawFn, max_parallelism_cap: int = UPPER_BOUND_MAX_PARALLELISM) -> tuple[int, int]:
    """(max_parallelism, parallelism) with 1 <= parallelism <= min(max_parallelism, the cap)."""
    max_p = draw(st.integers(1, UPPER_BOUND_MAX_PARALLELISM))
    p = draw(st.integers(1, min(max_p, max_parallelism_cap)))
    return max_p, p


def test_upper_bound_is_two_to_the_fifteen() -> None:
    assert UPPER_BOUND_MAX_PARALLELISM == 32768


@given(data=st.data(), mp=assignments())
@example(data=None, mp=(32768, 32768))
@example(data=None, mp=(32768, 1))
@example(data=None, mp=(32768, 3))
@example(data=None, mp=(1, 1))
def test_for_subtask_is_flinks_formula(data: st.DataObject | None, mp: tuple[int, int]) -> None:
    max_p, p = mp
    indices = [0, p - 1] if data is None else [data.draw(st.integers(0, p - 1), label="subtask")]
    for i in indices:
        expected_start, expected_end = flink_range(max_p, p, i)
        kg_range = KeyGroupRange.for_subtask(max_p, p, i)
        assert (kg_range.start, kg_range.end) == (expected_start, expected_end)
        # every subtask owns at least one key group, because p <= max_p
        assert len(kg_range) >= 1
        assert len(kg_range) == expected_end - expected_start + 1


@settings(max_examples=60)
@given(mp=assignments(max_parallelism_cap=300))
@example(mp=(32768, 300))
@example(mp=(300, 300))
@example(mp=(128, 3))
@example(mp=(7, 7))
def test_ranges_partition_the_key_groups_and_ownership_agrees(mp: tuple[int, int]) -> None:
    max_p, p = mp
    ranges = [KeyGroupRange.for_subtask(max_p, p, i) for i in range(p)]

    # contiguous, no gap, no overlap, covering exactly 0..max_p-1
    assert ranges[0].start == 0
    assert ranges[-1].end == max_p - 1
    for before, after in itertools.pairwise(ranges):
        assert after.start == before.end + 1
    assert sum(len(r) for r in ranges) == max_p
    # ranges are balanced: sizes differ by at most one
    sizes = {len(r) for r in ranges}
    assert max(sizes) - min(sizes) <= 1

    owners = key_group_owners(max_p, p)
    assert len(owners) == max_p
    expected_owners: list[int] = []
    for i, kg_range in enumerate(ranges):
        members = list(kg_range)
        assert members == list(range(kg_range.start, kg_range.end + 1))
        for kg in members:
            assert kg in kg_range
            assert subtask_for_key_group(max_p, p, kg) == i
        expected_owners += [i] * len(members)
        assert kg_range.start - 1 not in kg_range
        assert kg_range.end + 1 not in kg_range
    assert owners == expected_owners


def test_key_group_range_membership_rejects_non_ints() -> None:
    kg_range = KeyGroupRange(2, 5)
    assert 2 in kg_range and 5 in kg_range
    assert 1 not in kg_range and 6 not in kg_range
    assert "3" not in kg_range
    assert None not in kg_range
    assert list(kg_range) == [2, 3, 4, 5]
    assert len(KeyGroupRange(3, 2)) == 0
    assert list(KeyGroupRange(3, 2)) == []


@pytest.mark.parametrize("index", [-1, 4, 100])
def test_for_subtask_rejects_an_index_outside_the_parallelism(index: int) -> None:
    with pytest.raises(ValueError, match=rf"subtask_index {index} is outside 0\.\.3"):
        KeyGroupRange.for_subtask(128, 4, index)


def test_for_subtask_checks_the_parallelism() -> None:
    with pytest.raises(lg.ConfigurationError, match="above max_parallelism"):
        KeyGroupRange.for_subtask(4, 5, 0)


# --------------------------------------------------------------------------------------------------------
# check_parallelism


@pytest.mark.parametrize(
    ("parallelism", "max_parallelism"),
    [(1, 1), (1, 128), (128, 128), (7, 32768), (32768, 32768)],
)
def test_check_parallelism_accepts_valid_settings(parallelism: int, max_parallelism: int) -> None:
    check_parallelism(parallelism, max_parallelism)  # does not raise


@pytest.mark.parametrize(
    ("parallelism", "max_parallelism", "pattern"),
    [
        (0, 128, r"parallelism must be a positive int, got 0"),
        (-3, 128, r"parallelism must be a positive int, got -3"),
        (1.5, 128, r"parallelism must be a positive int, got 1\.5"),
        ("2", 128, r"parallelism must be a positive int, got '2'"),
        (None, 128, r"parallelism must be a positive int, got None"),
        (129, 128, r"parallelism 129 is above max_parallelism 128"),
        (2, 1, r"parallelism 2 is above max_parallelism 1"),
        (1, 32769, r"max_parallelism must be an int from 1 to 32768, got 32769"),
        (1, 0, r"max_parallelism must be an int from 1 to 32768, got 0"),
        (1, 128.0, r"max_parallelism must be an int from 1 to 32768, got 128\.0"),
        (1, "128", r"max_parallelism must be an int from 1 to 32768, got '128'"),
    ],
)
def test_check_parallelism_names_the_problem(parallelism: Any, max_parallelism: Any, pattern: str) -> None:
    with pytest.raises(lg.ConfigurationError, match=pattern):
        check_parallelism(parallelism, max_parallelism)


def test_check_parallelism_names_what_is_checked() -> None:
    with pytest.raises(
        lg.ConfigurationError, match=r"^the parallelism of 'sink' 9 is above max_parallelism 8"
    ):
        check_parallelism(9, 8, "the parallelism of 'sink'")
    with pytest.raises(lg.ConfigurationError, match=r"^the parallelism of 'sink' must be a positive int"):
        check_parallelism(0, 8, "the parallelism of 'sink'")


def test_configuration_error_is_a_lockgate_error() -> None:
    with pytest.raises(lg.LockgateError):
        check_parallelism(0, 8)


# --------------------------------------------------------------------------------------------------------
# Canonical key bytes.
#
# NaN is left out of the generated domain: NaN != NaN, yet a state dict finds a NaN key by identity, so
# neither "equal => same bytes" nor "unequal => different bytes" is meaningful for it. What lockgate
# promises instead, and test_nan_keys_are_deterministic checks, is that every NaN encodes to the same bytes
# (so NaN keys route deterministically) and never collides with a number.


@dataclass(frozen=True)
class Point:
    x: Any
    y: Any


@dataclass(frozen=True)
class Other:
    """Same field names as Point: a different class is a different key."""

    x: Any
    y: Any


leaves = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.sampled_from([0.0, -0.0, 0.5, -1.5, 1.0, 2.0**53, 2.0**53 + 2, math.inf, -math.inf])
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from(["", "a", "1", "N", "I"])
    | st.binary(max_size=5)
    | st.sampled_from([b"", b"a", b"1"])
)
keys = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.builds(Point, children, children)
        | st.builds(Other, children, children)
    ),
    max_leaves=8,
)


def equal_variants(key: Any) -> st.SearchStrategy[Any]:
    """Keys that Python holds equal to ``key``, with numbers swapped for equal numbers of other types."""
    if isinstance(key, bool):
        return st.sampled_from([key, int(key), float(key)])
    if isinstance(key, int):
        options: list[Any] = [key]
        try:
            if float(key) == key:
                options.append(float(key))
        except OverflowError:
            pass
        if key in (0, 1):
            options.append(bool(key))
        if key == 0:
            options.append(-0.0)
        return st.sampled_from(options)
    if isinstance(key, float):
        options = [key]
        if key.is_integer():
            options.append(int(key))
        if key == 0:
            options += [0.0, -0.0, False]
        if key == 1:
            options.append(True)
        return st.sampled_from(options)
    if isinstance(key, tuple):
        return st.tuples(*(equal_variants(item) for item in key))
    if isinstance(key, Point | Other):
        return st.builds(type(key), equal_variants(key.x), equal_variants(key.y))
    return st.just(key)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        (0, -0.0),
        (0.0, -0.0),
        (2**60, float(2**60)),
        ((1, "a"), (1.0, "a")),
        ((True, ("x", 0)), (1, ("x", -0.0))),
        (Point(1, "a"), Point(1.0, "a")),
        (Point((1, 2), None), Point((True, 2.0), None)),
    ],
)
def test_equal_keys_give_equal_bytes_examples(a: Any, b: Any) -> None:
    assert a == b
    assert canonical_key_bytes(a) == canonical_key_bytes(b)
    assert stable_key_hash(a) == stable_key_hash(b)
    assert key_group_for(a, 128) == key_group_for(b, 128)


@given(data=st.data(), key=keys)
def test_equal_keys_give_equal_bytes(data: st.DataObject, key: Any) -> None:
    twin = data.draw(equal_variants(key), label="equal key")
    assert twin == key  # the test's own premise
    assert canonical_key_bytes(twin) == canonical_key_bytes(key)


@given(st.lists(keys, min_size=2, max_size=6))
@example([2**53 + 1, float(2**53 + 1)])
@example([0.1, 0.30000000000000004 - 0.2])
@example(["a", b"a"])
@example([1, "1"])
@example([(), None])
@example([("a", "b"), ("ab",)])
@example([(("a",), "b"), ("a", ("b",))])
@example([Point(1, 2), Other(1, 2)])
@example([Point(1, 2), (1, 2)])
@example([Point(1, 2), Point(2, 1)])
@example([math.inf, -math.inf])
def test_keys_are_equal_exactly_when_their_bytes_are(keys_: list[Any]) -> None:
    encoded = [canonical_key_bytes(k) for k in keys_]
    for a, a_bytes in zip(keys_, encoded, strict=True):
        for b, b_bytes in zip(keys_, encoded, strict=True):
            assert (a == b) == (a_bytes == b_bytes), (a, b, a_bytes, b_bytes)


def test_nan_keys_are_deterministic() -> None:
    import struct

    nans = [math.nan, float("nan"), -math.nan, struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x00\x01")[0]]
    assert all(math.isnan(n) for n in nans)
    encodings = {canonical_key_bytes(n) for n in nans}
    assert len(encodings) == 1
    assert len({canonical_key_bytes((n, "x")) for n in nans}) == 1
    nan_bytes = encodings.pop()
    for number in (0, 1, -1, 0.5, math.inf, -math.inf, None):
        assert canonical_key_bytes(number) != nan_bytes


@given(keys, st.integers(1, UPPER_BOUND_MAX_PARALLELISM))
def test_key_group_is_in_range_and_follows_the_hash(key: Any, max_parallelism: int) -> None:
    h = stable_key_hash(key)
    assert 0 <= h < 2**32
    kg = key_group_for(key, max_parallelism)
    assert 0 <= kg < max_parallelism
    assert kg == h % max_parallelism


class Color(str, enum.Enum):  # noqa: UP042 - the classic str-mixin enum, whose str() is "Color.RED"
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


Pair = namedtuple("Pair", "a b")


class Ratio(float):
    pass


@pytest.mark.parametrize(
    ("subclass_key", "plain_key"),
    [
        (Level.HIGH, 3),
        (Pair("a", 1), ("a", 1)),
        (Ratio(0.25), 0.25),
        (Color.RED, "red"),
        ((Color.RED, 1), ("red", 1)),
    ],
    ids=["IntEnum", "namedtuple", "float-subclass", "str-Enum", "str-Enum-in-tuple"],
)
def test_keys_of_subclasses_encode_like_the_value_they_equal(subclass_key: Any, plain_key: Any) -> None:
    # A dict of state treats these as one key (equal and with equal hashes), so their bytes must agree.
    assert subclass_key == plain_key and hash(subclass_key) == hash(plain_key)
    assert canonical_key_bytes(subclass_key) == canonical_key_bytes(plain_key)


@dataclass(frozen=True)
class UserKey:
    user_id: int
    display_name: str = field(compare=False)


def test_dataclass_fields_excluded_from_equality_do_not_change_the_bytes() -> None:
    a, b = UserKey(7, "Ann"), UserKey(7, "ann")
    assert a == b and hash(a) == hash(b)  # one key as far as Python (and a dict of state) is concerned
    assert canonical_key_bytes(a) == canonical_key_bytes(b)


class Widget:
    pass


@dataclass(frozen=True)
class Holder:
    item: Any


UNSUPPORTED = [
    pytest.param([1, 2], "list", id="list"),
    pytest.param({"a": 1}, "dict", id="dict"),
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(frozenset({1}), "frozenset", id="frozenset"),
    pytest.param(object(), "object", id="object"),
    pytest.param(Widget(), "Widget", id="plain-class"),
    pytest.param(1 + 2j, "complex", id="complex"),
    pytest.param(("ok", [1]), "list", id="list-in-tuple"),
    pytest.param(("ok", Widget()), "Widget", id="object-in-tuple"),
    pytest.param(Holder({"a": 1}), "dict", id="dict-in-dataclass"),
]


@pytest.mark.parametrize(("key", "type_name"), UNSUPPORTED)
def test_unsupported_keys_cannot_be_encoded(key: Any, type_name: str) -> None:
    with pytest.raises(lg.KeySerializationError, match=rf"cannot use a {type_name} as a key"):
        canonical_key_bytes(key)


@pytest.mark.parametrize(("key", "type_name"), UNSUPPORTED)
def test_unsupported_keys_cannot_be_hashed_or_assigned_a_key_group(key: Any, type_name: str) -> None:
    # The partitioner calls stable_key_hash on whatever the key_by function returns: a user who returns a
    # list must get the KeySerializationError that explains which keys are allowed.
    with pytest.raises(lg.KeySerializationError, match=rf"cannot use a {type_name} as a key"):
        stable_key_hash(key)
    with pytest.raises(lg.KeySerializationError, match=rf"cannot use a {type_name} as a key"):
        key_group_for(key, 128)


def test_key_serialization_error_is_a_lockgate_error() -> None:
    with pytest.raises(lg.LockgateError):
        canonical_key_bytes([1])


# --------------------------------------------------------------------------------------------------------
# Determinism: the same values in every process, whatever PYTHONHASHSEED; and pinned, so that a change of
# the hash (which would strand every key of restored state in the wrong key group) fails loudly.

FIXED_KEYS: list[Any] = [
    "",
    "a",
    "k0",
    "user-42",
    "Zürich",
    ("a", 1),
    (1, ("b", None)),
    0,
    1,
    -1,
    2**70,
    2.5,
    b"\x00\xff",
    None,
    True,
]

# (stable_key_hash, key_group_for(key, 128), key_group_for(key, 32768)) for FIXED_KEYS, computed once.
PINNED: list[tuple[int, int, int]] = [
    (1792799840, 96, 29792),
    (220483653, 69, 20549),
    (1773867894, 118, 4982),
    (345809723, 59, 9019),
    (8746450, 82, 30162),
    (4151031790, 110, 14318),
    (2653684501, 21, 789),
    (293067448, 56, 23224),
    (524688926, 30, 7710),
    (2535684101, 5, 30725),
    (255684981, 117, 29045),
    (3460445910, 86, 14038),
    (2509791992, 120, 25336),
    (3789197524, 84, 4308),
    (524688926, 30, 7710),
]


def test_hash_and_key_groups_are_pinned() -> None:
    actual = [(stable_key_hash(k), key_group_for(k, 128), key_group_for(k, 32768)) for k in FIXED_KEYS]
    assert actual == PINNED


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("k0", b"S\x00\x00\x00\x02k0"),
        ("Zürich", b"S\x00\x00\x00\x07Z\xc3\xbcrich"),
        (-1, b"I\x00\x00\x00\x01\xff"),
        (2**70, b"I\x00\x00\x00\t@\x00\x00\x00\x00\x00\x00\x00\x00"),
        (2.5, b"F@\x04\x00\x00\x00\x00\x00\x00"),
        (b"\x00\xff", b"B\x00\x00\x00\x02\x00\xff"),
        (None, b"N"),
        ((1, ("b", None)), b"T\x00\x00\x00\x02I\x00\x00\x00\x01\x01T\x00\x00\x00\x02S\x00\x00\x00\x01bN"),
    ],
)
def test_canonical_bytes_are_pinned(key: Any, encoded: bytes) -> None:
    assert canonical_key_bytes(key) == encoded


CHILD = """
import ast, json, sys
from lockgate.state import key_group_for, stable_key_hash
keys = ast.literal_eval(sys.argv[1])
print(json.dumps({
    "builtin_hash": hash("user-42"),
    "hashes": [stable_key_hash(k) for k in keys],
    "groups": [key_group_for(k, 128) for k in keys],
}))
"""


def run_child(seed: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, repr(FIXED_KEYS)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_hashes_are_the_same_in_fresh_processes_with_other_hash_seeds() -> None:
    assert ast.literal_eval(repr(FIXED_KEYS)) == FIXED_KEYS
    children = [run_child("1"), run_child("2")]
    # the seeds really do change Python's own hash(), so agreeing below is not a coincidence
    assert children[0]["builtin_hash"] != children[1]["builtin_hash"]
    here_hashes = [stable_key_hash(k) for k in FIXED_KEYS]
    here_groups = [key_group_for(k, 128) for k in FIXED_KEYS]
    for child in children:
        assert child["hashes"] == here_hashes
        assert child["groups"] == here_groups


# --------------------------------------------------------------------------------------------------------
# Distribution


def test_similar_keys_spread_evenly_over_key_groups() -> None:
    max_parallelism = 128
    counts = Counter(key_group_for(f"k{i}", max_parallelism) for i in range(10_000))
    mean = 10_000 / max_parallelism
    assert len(counts) == max_parallelism  # every key group gets keys
    for kg in range(max_parallelism):
        assert 0.5 * mean <= counts[kg] <= 1.5 * mean, (kg, counts[kg], mean)


def test_similar_integer_keys_spread_over_subtasks() -> None:
    owners = key_group_owners(128, 4)
    counts = Counter(owners[key_group_for(i, 128)] for i in range(10_000))
    assert sorted(counts) == [0, 1, 2, 3]
    assert all(0.8 * 2500 <= n <= 1.2 * 2500 for n in counts.values()), counts


@given(st.integers(0, 40), st.integers(-1, 40), st.integers(0, 40), st.integers(-1, 40))
def test_the_intersection_of_two_ranges_holds_exactly_their_common_key_groups(
    a: int, b: int, c: int, d: int
) -> None:
    first, second = KeyGroupRange(a, b), KeyGroupRange(c, d)
    common = first.intersection(second)
    assert list(common) == [group for group in first if group in second]
    assert len(common) == len(set(first) & set(second))


# --------------------------------------------------------------------------------------------------------
# Many keys at once: a snapshot's pass over a whole state


@given(
    st.lists(keys, max_size=30)
    | st.lists(st.text(), max_size=30),  # mixed types, and str only (its own path)
    st.integers(1, UPPER_BOUND_MAX_PARALLELISM)
    | st.integers(0, 15).map(lambda n: 1 << n),  # a power of two: the modulo is a mask (its own path)
)
@example(["\ud800", "x\udfff", ""], 7)  # lone surrogates: str keys encode with surrogatepass
def test_the_key_groups_of_many_keys_are_each_key_s_own(many: list[Any], max_parallelism: int) -> None:
    assert key_groups_of(many, max_parallelism) == [key_group_for(key, max_parallelism) for key in many]


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50))
def test_every_32_bit_hash_is_finalised_as_one_at_a_time(hashes: list[int]) -> None:
    """The finaliser run on all hashes at once (64-bit lanes of one int) gives each hash's own."""
    assert list(_fmix32_all(hashes)) == [_fmix32(h) for h in hashes]
    for bits in (0, 1, 7, 15, 31):
        assert list(_fmix32_all(hashes, (1 << bits) - 1)) == [_fmix32(h) % (1 << bits) for h in hashes]


def test_many_keys_of_an_unsupported_type_are_refused() -> None:
    with pytest.raises(lg.KeySerializationError):
        key_groups_of(["a", object()], 128)


# --------------------------------------------------------------------------------------------------------
# The key-hash cache: partitioning hashes every record's key, so recent keys' hashes are cached, within a
# bound in bytes whatever the keys.

big_keys = st.text(min_size=200, max_size=3000) | st.binary(min_size=200, max_size=3000)


@settings(max_examples=200)
@given(
    st.lists(keys | big_keys | st.text(max_size=40), max_size=120),
    st.integers(0, 4000),
)
@example(["x" * 5000], 4000)  # a key whose entry alone is over the limit
def test_the_key_hash_cache_stays_within_its_bytes_for_any_keys(sequence: list[Any], limit: int) -> None:
    """Whatever keys come, in whatever order, the cache answers each key's own hash and what it holds
    (each entry's slot and the key object it keeps alive) never exceeds its limit."""
    cache = _KeyHashCache(limit)
    for key in sequence * 2:  # the second pass hits what the first left
        cached = cache.entries.get(key)
        value = cache.miss(key) if cached is None else cached
        assert value == uncached_key_hash(key)
        held = sum(_HASH_ENTRY_BYTES + sys.getsizeof(k) for k in cache.entries)
        assert held <= cache.charged <= limit
    assert all(value == uncached_key_hash(key) for key, value in cache.entries.items())


def test_the_key_hash_cache_answers_hits_from_its_dict_and_refills_after_emptying() -> None:
    cache = _KeyHashCache(10 * (_HASH_ENTRY_BYTES + sys.getsizeof("k0")))
    for i in range(10):
        cache.miss(f"k{i}")
    assert len(cache.entries) == 10
    cache.miss("k10")  # over the limit: it empties, then holds the new key
    assert list(cache.entries) == ["k10"]
    assert cache.charged == _HASH_ENTRY_BYTES + sys.getsizeof("k10")
    assert "10 keys" not in repr(cache) and "1 keys" in repr(cache)


@dataclass
class Mutable:
    x: Any
    y: Any


def test_stable_key_hash_caches_recent_keys_and_not_unhashable_ones() -> None:
    key = ("a cached key", 17)
    first = stable_key_hash(key)
    assert _key_hashes.entries.get(key) == first == uncached_key_hash(key)
    assert stable_key_hash(("a cached key", 17.0)) == first  # equal keys, one entry
    unhashable = Mutable(1, "a")  # a dataclass that is not frozen: hashed each time, never cached
    assert stable_key_hash(unhashable) == uncached_key_hash(Mutable(1, "a"))
    assert _key_hashes.charged <= KEY_HASH_CACHE_BYTES
