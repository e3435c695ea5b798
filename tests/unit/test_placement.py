"""Placement of partitions on shards (model.placement): balance, minimal movement, determinism."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from session_store.model.ids import PARTITION_COUNT
from session_store.model.placement import PartitionMap, apportion, moves_between, place_partitions, rebalance

# Each placement ranks a donor's partitions per added shard (up to ~80 ms at 16): keep example counts low.
PLACEMENT = settings(max_examples=8, deadline=None)
FEW = settings(max_examples=4, deadline=None)

shard_names = st.text(min_size=1, max_size=30)


def shard_sets(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    """Unique arbitrary shard names."""
    return st.lists(shard_names, min_size=min_size, max_size=max_size, unique=True)


def counts(placement: PartitionMap) -> Counter[str]:
    """How many partitions each shard owns."""
    return Counter(placement.owners)


def moved(before: PartitionMap, after: PartitionMap) -> list[int]:
    """The partitions whose owner changed."""
    return [p for p in range(PARTITION_COUNT) if before.owner(p) != after.owner(p)]


class TestBalance:
    @PLACEMENT
    @given(names=shard_sets(3, 16))
    @example(names=[f"redis-{i}:6379/0" for i in range(16)])
    def test_every_shard_is_within_ten_percent_of_the_mean(self, names: list[str]) -> None:
        """With 3-16 equal shards, every shard owns the mean number of partitions ±10%."""
        placement = place_partitions(dict.fromkeys(names, 1))
        mean = PARTITION_COUNT / len(names)

        per_shard = counts(placement)

        assert set(names) == set(per_shard)
        assert all(0.9 * mean <= per_shard[name] <= 1.1 * mean for name in names), per_shard

    @PLACEMENT
    @given(names=shard_sets(1, 16), weights=st.lists(st.integers(1, 4), min_size=16, max_size=16))
    def test_counts_are_the_weighted_share_to_one_partition(
        self, names: list[str], weights: list[int]
    ) -> None:
        """Every shard owns its weighted share of the partitions, rounded to a whole partition."""
        shard_weights = {name: weights[i] for i, name in enumerate(names)}
        total = sum(shard_weights.values())

        per_shard = counts(place_partitions(shard_weights))

        for name, weight in shard_weights.items():
            assert abs(per_shard[name] - PARTITION_COUNT * weight / total) < 1, per_shard

    @FEW
    @given(names=shard_sets(1, 16))
    def test_every_partition_has_exactly_one_known_owner(self, names: list[str]) -> None:
        """The map has one owner per partition, each one of the given shards, listed in order."""
        placement = place_partitions(dict.fromkeys(names, 1))

        assert PARTITION_COUNT == len(placement.owners)
        assert set(placement.owners) <= set(names)
        assert tuple(names) == placement.shards

    def test_single_shard_owns_everything(self) -> None:
        """One shard owns all 4096 partitions."""
        placement = place_partitions({"only": 1})

        assert list(range(PARTITION_COUNT)) == placement.partitions_of("only")

    def test_apportion_sums_to_total(self) -> None:
        """Largest-remainder shares add up to the total, ties going to the earlier shard."""
        assert {"a": 4, "b": 3, "c": 3} == apportion({"a": 1, "b": 1, "c": 1}, total=10)


class TestMovement:
    @PLACEMENT
    @given(names=shard_sets(4, 10), weight=st.integers(1, 3))
    @example(names=[f"redis-{i}:6379/0" for i in range(17)], weight=1)
    def test_appending_a_shard_moves_partitions_only_to_it(self, names: list[str], weight: int) -> None:
        """An appended shard takes exactly its share, and only it receives partitions."""
        *old, new = names
        before = place_partitions(dict.fromkeys(old, 1))
        after = place_partitions({**dict.fromkeys(old, 1), new: weight})

        changed = moved(before, after)

        assert {new} == {after.owner(p) for p in changed}
        assert abs(len(changed) - PARTITION_COUNT * weight / (len(old) + weight)) < 1

    @PLACEMENT
    @given(names=shard_sets(4, 10))
    def test_removing_the_last_shard_moves_only_its_partitions(self, names: list[str]) -> None:
        """Dropping the last-added shard gives back exactly its partitions (the inverse of appending)."""
        before = place_partitions(dict.fromkeys(names, 1))
        after = place_partitions(dict.fromkeys(names[:-1], 1))

        changed = moved(before, after)

        assert before.partitions_of(names[-1]) == changed

    @FEW
    @given(names=shard_sets(3, 8), weight=st.integers(2, 4))
    def test_raising_the_last_weight_moves_partitions_only_to_that_shard(
        self, names: list[str], weight: int
    ) -> None:
        """Raising the last shard's weight only moves partitions onto that shard."""
        before = place_partitions(dict.fromkeys(names, 1))
        after = place_partitions({**dict.fromkeys(names, 1), names[-1]: weight})

        changed = moved(before, after)

        assert {names[-1]} == {after.owner(p) for p in changed}


class TestDeterminism:
    @FEW
    @given(names=shard_sets(2, 6), weights=st.lists(st.integers(1, 2), min_size=6, max_size=6))
    def test_same_ordered_input_gives_the_same_map(self, names: list[str], weights: list[int]) -> None:
        """The map is a pure function of the ordered, weighted shard list."""
        ordered = {name: weights[i] for i, name in enumerate(names)}

        assert place_partitions(ordered) == place_partitions(dict(ordered.items()))

    def test_map_is_stable_across_runs(self) -> None:
        """The same shards give the same owners on every node and in every release."""
        placement = place_partitions({"shard-a": 1, "shard-b": 1, "shard-c": 1})

        expected = ["shard-c", "shard-b", "shard-b", "shard-a", "shard-c", "shard-a", "shard-b", "shard-b"]
        assert expected == [placement.owner(p) for p in range(0, PARTITION_COUNT, 512)]


class TestInvalidInput:
    def test_no_shards_is_rejected(self) -> None:
        """Placing on no shard at all raises ValueError."""
        with pytest.raises(ValueError, match="at least one shard"):
            place_partitions({})

    @pytest.mark.parametrize("weight", [0, -1])
    def test_weight_below_one_is_rejected(self, weight: int) -> None:
        """A weight below 1 raises ValueError naming the shard."""
        with pytest.raises(ValueError, match="'b' has weight"):
            place_partitions({"a": 1, "b": weight})


weighted = st.dictionaries(shard_names, st.integers(1, 5), min_size=1, max_size=6)


class TestRebalance:
    """Changing the shard set of a stored map (`rebalance`): minimal movement, exact balance, determinism."""

    @PLACEMENT
    @given(weighted, shard_names, st.integers(1, 5))
    def test_adding_moves_exactly_the_new_share_and_only_to_it(
        self, weights: dict[str, int], new: str, weight: int
    ) -> None:
        """Every moved partition goes to the new shard, and exactly its apportioned share moves."""
        if new in weights:
            return
        current = place_partitions(weights)
        after = rebalance(current, {**weights, new: weight})
        moves = moves_between(current, after)
        assert {new} == {m.target for m in moves} or not moves
        assert apportion({**weights, new: weight})[new] == len(moves)

    @PLACEMENT
    @given(weighted.filter(lambda w: len(w) >= 2), st.data())
    def test_removing_moves_only_the_removed_shards_partitions(
        self, weights: dict[str, int], data: st.DataObject
    ) -> None:
        """Only the removed shard's partitions move, all of them, and the rest end balanced."""
        gone = data.draw(st.sampled_from(sorted(weights)))
        current = place_partitions(weights)
        kept = {n: w for n, w in weights.items() if n != gone}
        after = rebalance(current, kept)
        moves = moves_between(current, after)
        assert {gone} == {m.source for m in moves}
        assert counts(current)[gone] == len(moves)
        assert apportion(kept) == dict(counts(after))
        assert gone not in after.shards

    @PLACEMENT
    @given(weighted, st.data())
    def test_any_change_moves_the_sum_of_deficits_and_balances_exactly(
        self, weights: dict[str, int], data: st.DataObject
    ) -> None:
        """Weight changes move exactly what the new shares require: no partition moves twice over."""
        current = place_partitions(weights)
        changed = {n: data.draw(st.integers(0, 5)) for n in weights}
        if not any(changed.values()):
            return
        after = rebalance(current, changed)
        target = apportion({n: w for n, w in changed.items() if w > 0})
        before_counts = counts(current)
        deficit = sum(max(0, target[n] - before_counts.get(n, 0)) for n in target)
        assert deficit == len(moves_between(current, after))
        assert target == dict(counts(after))

    @FEW
    @given(weighted, shard_names)
    def test_every_node_plans_the_same_map(self, weights: dict[str, int], new: str) -> None:
        """The plan depends only on the stored map and the new weights."""
        if new in weights:
            return
        plan = {**weights, new: 1}
        assert rebalance(place_partitions(weights), plan) == rebalance(
            place_partitions(dict(weights)), dict(plan)
        )

    @FEW
    @given(weighted, shard_names)
    def test_an_added_shard_takes_what_placing_from_scratch_gives_it(
        self, weights: dict[str, int], new: str
    ) -> None:
        """Adding through the stored map and placing the longer list agree partition for partition."""
        if new in weights:
            return
        assert (
            rebalance(place_partitions(weights), {**weights, new: 2}).owners
            == place_partitions({**weights, new: 2}).owners
        )

    def test_refuses_to_remove_every_shard(self) -> None:
        """At least one shard must keep a weight."""
        with pytest.raises(ValueError, match="at least one"):
            rebalance(place_partitions({"a": 1}), {"a": 0})
