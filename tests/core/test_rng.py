"""StableRandom: a random stream that must never change (task ids name tasks forever)."""

from __future__ import annotations

import hashlib
import struct
from collections import Counter

import pytest

from cmat_gym.core.rng import StableRandom


# ---------------------------------------------------------------------- the stream is pinned
def test_stream_definition_is_counter_mode_blake2b():
    # The definition, written out: key = blake2b("\x1f".join(parts), 32 bytes);
    # block i = blake2b(u64le(i), key=key, 8 bytes), read as a little-endian u64.
    key = hashlib.blake2b(b"db\x1ftrain\x1f7", digest_size=32).digest()
    expected = [
        struct.unpack("<Q", hashlib.blake2b(struct.pack("<Q", i), key=key, digest_size=8).digest())[0]
        for i in range(3)
    ]
    rng = StableRandom("db", "train", 7)
    assert [rng._next_u64() for _ in range(3)] == expected


def test_pinned_raw_values():
    rng = StableRandom("db", "train", 7)
    assert [rng._next_u64() for _ in range(3)] == [
        7959649182732091640,
        4436976775075655203,
        15019911664675337509,
    ]


def test_pinned_randint_values():
    rng = StableRandom("db", "train", 7)
    assert [rng.randint(1, 6) for _ in range(10)] == [3, 2, 2, 4, 6, 5, 4, 5, 6, 3]


def test_pinned_random_floats():
    rng = StableRandom("db", "train", 7)
    assert rng.random() == 0.43149344680703017
    assert rng.random() == 0.24052899294023755


def test_pinned_shuffle_sample_choice():
    rng = StableRandom("x")
    items = list(range(10))
    rng.shuffle(items)
    assert items == [0, 3, 5, 9, 4, 1, 2, 8, 7, 6]
    rng = StableRandom("x")
    assert rng.sample("abcdefghij", 4) == ["a", "d", "f", "j"]
    assert rng.choice(["a", "b", "c"]) == "b"
    assert StableRandom().randbelow(1000) == 432


def test_same_key_same_stream_and_different_keys_differ():
    a, b = StableRandom("db", "train", 1), StableRandom("db", "train", 1)
    assert [a.random() for _ in range(20)] == [b.random() for _ in range(20)]
    firsts = {
        StableRandom("db", split, seed).randbelow(2**40) for split in ("train", "test") for seed in range(50)
    }
    assert len(firsts) == 100


def test_key_parts_are_separated_not_concatenated():
    assert StableRandom("ab", "c").random() != StableRandom("a", "bc").random()


def test_fork_depends_on_the_key_not_the_position():
    parent = StableRandom("x")
    before = parent.fork("y").randbelow(10**9)
    parent.random()
    parent.random()
    assert parent.fork("y").randbelow(10**9) == before == 52655641
    assert parent.fork("z").randbelow(10**9) != before


# ---------------------------------------------------------------------- ranges
def test_random_is_in_the_unit_interval():
    rng = StableRandom("unit")
    values = [rng.random() for _ in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55


@pytest.mark.parametrize(("low", "high"), [(1, 6), (-5, 5), (0, 0), (10**12, 10**12 + 3)])
def test_randint_includes_both_ends_and_nothing_else(low, high):
    rng = StableRandom("randint", low, high)
    seen = {rng.randint(low, high) for _ in range(400)}
    assert seen == set(range(low, high + 1))


def test_uniform_range():
    rng = StableRandom("uniform")
    values = [rng.uniform(-2.5, 7.5) for _ in range(1000)]
    assert all(-2.5 <= v < 7.5 for v in values)
    assert min(values) < -2.0 and max(values) > 7.0


@pytest.mark.parametrize("n", [0, -1])
def test_randbelow_rejects_non_positive_n(n):
    with pytest.raises(ValueError, match="Expects n > 0"):
        StableRandom("x").randbelow(n)


def test_randbelow_one_is_always_zero():
    rng = StableRandom("one")
    assert {rng.randbelow(1) for _ in range(50)} == {0}


# ---------------------------------------------------------------------- sample / shuffle / choice
def test_sample_returns_distinct_positions():
    rng = StableRandom("sample")
    for k in range(0, 11):
        picked = rng.sample(range(10), k)
        assert len(picked) == k == len(set(picked))
        assert set(picked) <= set(range(10))


def test_sample_of_duplicates_is_by_position():
    assert sorted(StableRandom("dup").sample(["a", "a", "b"], 3)) == ["a", "a", "b"]


def test_sample_too_many_raises():
    with pytest.raises(ValueError, match="Expects k <= 3"):
        StableRandom("x").sample([1, 2, 3], 4)


def test_shuffle_is_a_permutation_and_does_not_copy():
    items = list(range(50))
    StableRandom("perm").shuffle(items)
    assert sorted(items) == list(range(50))
    assert items != list(range(50))


def test_shuffle_reaches_every_permutation_uniformly():
    rng = StableRandom("perms")
    counts: Counter[tuple[int, ...]] = Counter()
    for _ in range(6000):
        items = [0, 1, 2]
        rng.shuffle(items)
        counts[tuple(items)] += 1
    assert len(counts) == 6
    assert all(850 < c < 1150 for c in counts.values()), counts


def test_choice_covers_all_items():
    rng = StableRandom("choice")
    assert {rng.choice("abcde") for _ in range(200)} == set("abcde")


# ---------------------------------------------------------------------- no modulo bias
def test_no_modulo_bias_for_a_huge_n():
    # n = 3 * 2**62: plain `u64 % n` would put half of the draws below 2**62 instead of a third.
    n = 3 * 2**62
    rng = StableRandom("bias")
    draws = [rng.randbelow(n) for _ in range(3000)]
    assert all(0 <= d < n for d in draws)
    below = sum(d < 2**62 for d in draws) / len(draws)
    assert abs(below - 1 / 3) < 0.04, below


def test_small_n_is_uniform_chi_square():
    rng = StableRandom("dice")
    counts = Counter(rng.randbelow(6) for _ in range(6000))
    chi2 = sum((counts[i] - 1000) ** 2 / 1000 for i in range(6))
    assert chi2 < 20.5  # p ~ 0.001 for 5 degrees of freedom
