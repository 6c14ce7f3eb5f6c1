import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sslviz.engine.splits import (
    SHAPES,
    Split,
    SplitError,
    long_tail_counts,
    make_split,
    split_frame,
    unlabeled_counts,
)

NAMES = ("plane", "car", "bird")


def balanced_labels(per_class, num_classes=3):
    return np.repeat(np.arange(num_classes), per_class)


def split(y=None, **overrides):
    kwargs = dict(n1=40, gamma=4.0, m1=50, gamma_u=4.0, shape="consistent", seed=0)
    kwargs.update(overrides)
    return make_split(balanced_labels(100) if y is None else y, 3, **kwargs)


# --- counts -------------------------------------------------------------------


def test_long_tail_counts_cifar10_lt():
    # floor(1500 * 100 ** (-k / 9)); e.g. k=2: 1500 * 0.35938 = 539.07, k=8: 25.02
    expected = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    counts = long_tail_counts(1500, 10, 100)
    assert counts.tolist() == expected
    assert counts.dtype == np.int64


def test_long_tail_counts_small_cases():
    assert long_tail_counts(100, 3, 4).tolist() == [100, 50, 25]
    assert long_tail_counts(7, 4, 1).tolist() == [7, 7, 7, 7]
    assert long_tail_counts(5, 1, 10).tolist() == [5]


def test_long_tail_counts_floor_is_robust_to_rounding():
    # 49 * 49.0 ** -1 == 0.9999999999999999 in floating point; exactly 1 in math.
    assert long_tail_counts(49, 2, 49.0).tolist() == [49, 1]


def test_unlabeled_shapes():
    assert unlabeled_counts(100, 3, 4, "consistent").tolist() == [100, 50, 25]
    assert unlabeled_counts(100, 3, 4, "uniform").tolist() == [100, 100, 100]
    assert unlabeled_counts(100, 3, 4, "reversed").tolist() == [25, 50, 100]


def test_unknown_shape_lists_valid_ones():
    with pytest.raises(SplitError, match="shape must be one of 'consistent', 'uniform', 'reversed', got 'flat'"):
        unlabeled_counts(10, 3, 2, "flat")


# --- make_split -----------------------------------------------------------------


def test_split_counts_and_disjointness():
    y = balanced_labels(100)
    s = split(y)
    assert isinstance(s, Split)
    assert s.labeled_counts.tolist() == [40, 20, 10]
    assert s.unlabeled_counts.tolist() == [50, 25, 12]
    assert s.labeled_idx.dtype == np.int64 and s.unlabeled_idx.dtype == np.int64
    assert np.bincount(y[s.labeled_idx], minlength=3).tolist() == [40, 20, 10]
    assert np.bincount(y[s.unlabeled_idx], minlength=3).tolist() == [50, 25, 12]
    assert not set(s.labeled_idx) & set(s.unlabeled_idx)
    assert len(set(s.labeled_idx)) == len(s.labeled_idx)


def test_split_reversed_uses_tail_class_budget():
    s = split(shape="reversed", m1=60)
    assert s.unlabeled_counts.tolist() == [15, 30, 60]


def test_m1_zero_gives_supervised_only():
    s = split(m1=0)
    assert s.unlabeled_idx.size == 0
    assert s.unlabeled_counts.tolist() == [0, 0, 0]


def test_same_seed_same_split_different_seed_different_split():
    a, b, c = split(seed=1), split(seed=1), split(seed=2)
    np.testing.assert_array_equal(a.labeled_idx, b.labeled_idx)
    np.testing.assert_array_equal(a.unlabeled_idx, b.unlabeled_idx)
    assert not np.array_equal(a.labeled_idx, c.labeled_idx)


def test_split_frame_long_format():
    s = split()
    df = split_frame(s, balanced_labels(7), NAMES)
    assert list(df.columns) == ["class", "class_name", "set", "count"]
    assert len(df) == 9
    got = df.set_index(["set", "class"])["count"]
    assert got["labeled", 0] == 40 and got["unlabeled", 2] == 12 and got["test", 1] == 7
    assert df.loc[df["class"] == 2, "class_name"].unique().tolist() == ["bird"]


def test_split_frame_default_names():
    df = split_frame(split(), balanced_labels(1))
    assert df["class_name"].unique().tolist() == ["0", "1", "2"]


# --- errors ---------------------------------------------------------------------


def test_gamma_below_one():
    with pytest.raises(SplitError, match=r"gamma must be >= 1, got 0\.5"):
        split(gamma=0.5)


def test_gamma_u_below_one():
    with pytest.raises(SplitError, match=r"gamma_u must be >= 1, got 0\.9"):
        split(gamma_u=0.9)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"n1": 0}, "n1 must be an int >= 1, got 0"),
        ({"m1": -1}, "m1 must be an int >= 0, got -1"),
        ({"n1": 2.5}, "n1 must be an int >= 1, got 2.5"),
        ({"seed": -3}, "seed must be an int >= 0, got -3"),
        ({"gamma": float("nan")}, "gamma must be >= 1, got nan"),
        ({"shape": "flat"}, "shape must be one of"),
    ],
)
def test_invalid_parameters(overrides, pattern):
    with pytest.raises(SplitError, match=pattern):
        split(**overrides)


def test_labels_out_of_range():
    with pytest.raises(SplitError, match=r"labels must lie in 0\.\.2, got range 0\.\.3"):
        make_split(np.arange(4), 3, n1=1, gamma=1, m1=0, gamma_u=1, shape="uniform", seed=0)


def test_empty_tail_class_names_it_and_suggests_fixes():
    # N_1=10, gamma=20: tail gets floor(0.5) = 0; gamma <= 10 or N_1 >= 20 fixes it.
    with pytest.raises(SplitError) as info:
        split(n1=10, gamma=20, class_names=NAMES)
    msg = str(info.value)
    assert "class 2 ('bird') would get 0 labeled examples" in msg
    assert "gamma <= 10" in msg and "N_1 >= 20" in msg
    assert split(n1=10, gamma=10).labeled_counts[-1] == 1
    assert split(n1=20, gamma=20).labeled_counts[-1] == 1


def test_n1_too_large_names_class_and_largest_n1():
    # Class 1 has only 12 images; with gamma=4 it needs floor(n1 / 2) <= 12, so n1 <= 25.
    y = balanced_labels([100, 12, 100])
    with pytest.raises(SplitError) as info:
        make_split(y, 3, n1=40, gamma=4, m1=0, gamma_u=1, shape="uniform", seed=0, class_names=NAMES)
    msg = str(info.value)
    assert "class 1 ('car') has 12 training images" in msg
    assert "needs 20 labeled" in msg
    assert "largest N_1 that fits is 25" in msg
    make_split(y, 3, n1=25, gamma=4, m1=0, gamma_u=1, shape="uniform", seed=0)
    with pytest.raises(SplitError):
        make_split(y, 3, n1=26, gamma=4, m1=0, gamma_u=1, shape="uniform", seed=0)


def test_n1_fit_too_small_for_gamma_says_so():
    y = balanced_labels([100, 100, 0])
    with pytest.raises(SplitError, match=r"largest N_1 that fits is 7, but gamma=8 needs N_1 >= 8"):
        make_split(y, 3, n1=8, gamma=8, m1=0, gamma_u=1, shape="uniform", seed=0)


def test_m1_too_large_names_class_and_largest_m1():
    # 100 per class; labeled [40, 20, 10] leaves [60, 80, 90]; uniform needs m1 <= 60.
    with pytest.raises(SplitError) as info:
        split(m1=70, shape="uniform", class_names=NAMES)
    msg = str(info.value)
    assert "class 0 ('plane') has 60 images left after the labeled set" in msg
    assert "largest M_1 that fits is 60" in msg
    split(m1=60, shape="uniform")


# --- property --------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    per_class=st.lists(st.integers(0, 80), min_size=1, max_size=6),
    n1=st.integers(-2, 100),
    m1=st.integers(-2, 100),
    gamma=st.one_of(st.floats(0, 300), st.sampled_from([float("nan"), float("inf"), True, "4"])),
    gamma_u=st.floats(0, 300),
    shape=st.sampled_from(SHAPES + ("bogus",)),
    seed=st.integers(-1, 2**32),
)
def test_make_split_raises_only_split_error(per_class, n1, m1, gamma, gamma_u, shape, seed):
    y = balanced_labels(per_class, len(per_class))
    try:
        make_split(y, len(per_class), n1=n1, gamma=gamma, m1=m1, gamma_u=gamma_u, shape=shape, seed=seed)
    except SplitError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    per_class=st.lists(st.integers(20, 80), min_size=2, max_size=6),
    n1=st.integers(1, 40),
    m1=st.integers(0, 40),
    gamma=st.floats(1, 20),
    gamma_u=st.floats(1, 20),
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**32),
)
def test_make_split_counts_stay_within_what_exists(per_class, n1, m1, gamma, gamma_u, shape, seed):
    y = balanced_labels(per_class, len(per_class))
    k = len(per_class)
    try:
        s = make_split(y, k, n1=n1, gamma=gamma, m1=m1, gamma_u=gamma_u, shape=shape, seed=seed)
    except SplitError as exc:
        assert "largest" in str(exc) or "would get 0 labeled" in str(exc)
        return
    available = np.bincount(y, minlength=k)
    labeled = np.bincount(y[s.labeled_idx], minlength=k)
    unlabeled = np.bincount(y[s.unlabeled_idx], minlength=k)
    np.testing.assert_array_equal(labeled, s.labeled_counts)
    np.testing.assert_array_equal(unlabeled, s.unlabeled_counts)
    assert np.all(labeled >= 1)
    assert np.all(labeled + unlabeled <= available)
    assert not set(s.labeled_idx) & set(s.unlabeled_idx)
