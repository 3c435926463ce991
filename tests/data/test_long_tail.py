import numpy as np
import pytest

from tailcon.data import long_tail_counts, select_long_tail_indices
from tailcon.engine import shot_groups


@pytest.mark.parametrize("factor,expected", [
    (100, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),
    (50, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]),
    (10, [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]),
])
def test_cifar10_lt_counts_match_spec(factor, expected):
    assert long_tail_counts(10, 5000, factor) == expected


@pytest.mark.parametrize("factor,total,many,medium,few", [
    (100, 10847, 35, 35, 30), (50, 12608, 41, 41, 18), (10, 19573, 69, 31, 0)])
def test_cifar100_lt_totals_and_shot_groups_match_spec(factor, total, many, medium, few):
    counts = long_tail_counts(100, 500, factor)
    assert sum(counts) == total
    g = shot_groups(counts)
    assert (g["many"].sum(), g["medium"].sum(), g["few"].sum()) == (many, medium, few)


def test_cifar100_lt_if100_head_and_tail():
    counts = long_tail_counts(100, 500, 100)
    assert counts[:5] == [500, 477, 455, 434, 415]
    assert counts[-5:] == [6, 5, 5, 5, 5]


def test_step_profile_halves_the_classes():
    assert long_tail_counts(10, 500, 10, profile="step") == [500] * 5 + [50] * 5


def test_bad_profile_and_factor_are_errors():
    with pytest.raises(ValueError, match="profile"):
        long_tail_counts(10, 500, 10, profile="linear")
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_counts(10, 500, 0.5)


def _reference_selection(targets, counts, seed):
    """The LDAM-DRW procedure, literally: global legacy RNG seeded once, per-class shuffle."""
    np.random.seed(seed)
    targets = np.asarray(targets)
    out = []
    for c, n in enumerate(counts):
        idx = np.where(targets == c)[0]
        np.random.shuffle(idx)
        out.extend(idx[:n].tolist())
    return np.array(out)


def test_subset_selection_reproduces_the_reference_rng_order():
    rng = np.random.RandomState(7)
    targets = rng.randint(0, 10, size=3000)
    counts = long_tail_counts(10, int(np.bincount(targets).min()), 20)
    ours = select_long_tail_indices(targets, counts, seed=0)
    np.testing.assert_array_equal(ours, _reference_selection(targets, counts, 0))
    assert np.bincount(targets[ours], minlength=10).tolist() == counts


def test_subset_selection_is_reproducible_and_seed_dependent():
    targets = np.repeat(np.arange(10), 100)
    counts = long_tail_counts(10, 100, 10)
    a = select_long_tail_indices(targets, counts, seed=0)
    b = select_long_tail_indices(targets, counts, seed=0)
    c = select_long_tail_indices(targets, counts, seed=10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.diff(targets[a]) >= 0), "kept set is sorted by class"


def test_subset_selection_rejects_counts_larger_than_a_class():
    with pytest.raises(ValueError, match="class 1 has 5 images"):
        select_long_tail_indices([0] * 10 + [1] * 5, [10, 6])
