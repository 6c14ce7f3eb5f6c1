"""Long-tailed labeled/unlabeled splits (CIFAR-10-LT protocol).

Class ``k`` keeps ``N_k = floor(N_1 * gamma ** (-k / (K - 1)))`` labeled
examples, so class 0 is the head and class ``K - 1`` the tail with
``N_1 / gamma``. Unlabeled counts follow the same formula with ``M_1`` and
``gamma_u``, or a uniform or reversed profile. Everything here is pure and
seeded; no disk I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .lazy import pd  # imported on first use: see sslviz/engine/lazy.py

SHAPES = ("consistent", "uniform", "reversed")

# Guards floor() against values like 0.9999999999 that are 1 in exact arithmetic.
_FLOOR_EPS = 1e-9


class SplitError(ValueError):
    """Raised when a split cannot be drawn; the message says what to change."""


@dataclass(frozen=True, eq=False)
class Split:
    """Indices into ``y_train`` for the labeled and unlabeled sets.

    Attributes
    ----------
    labeled_idx, unlabeled_idx : ndarray of int64
        Disjoint indices into ``y_train``, grouped by class.
    labeled_counts, unlabeled_counts : ndarray of int64, shape (K,)
        Examples per class in each set.
    """

    labeled_idx: np.ndarray
    unlabeled_idx: np.ndarray
    labeled_counts: np.ndarray
    unlabeled_counts: np.ndarray


def long_tail_counts(n_max: int, num_classes: int, gamma: float) -> np.ndarray:
    """Per-class counts of an exponential long tail.

    Parameters
    ----------
    n_max : int
        Count of the head class (class 0), ``>= 0``.
    num_classes : int
        Number of classes ``K``, ``>= 1``.
    gamma : float
        Imbalance ratio ``N_0 / N_{K-1}`` before flooring, ``>= 1``.

    Returns
    -------
    counts : ndarray of int64, shape (num_classes,)
        ``floor(n_max * gamma ** (-k / (K - 1)))`` for ``k = 0 .. K-1``.

    Examples
    --------
    >>> long_tail_counts(1500, 10, 100).tolist()
    [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
    """
    _check_int("n_max", n_max, 0)
    _check_int("num_classes", num_classes, 1)
    _check_gamma("gamma", gamma)
    if num_classes == 1:
        return np.array([n_max], dtype=np.int64)
    k = np.arange(num_classes)
    counts = np.floor(n_max * float(gamma) ** (-k / (num_classes - 1)) + _FLOOR_EPS)
    return counts.astype(np.int64)


def unlabeled_counts(m_max: int, num_classes: int, gamma_u: float, shape: str) -> np.ndarray:
    """Per-class unlabeled counts for one of the ``SHAPES`` profiles.

    Parameters
    ----------
    m_max : int
        Largest per-class count, ``>= 0``.
    num_classes : int
        Number of classes ``K``.
    gamma_u : float
        Unlabeled imbalance ratio, ``>= 1`` (ignored by ``"uniform"``).
    shape : {"consistent", "uniform", "reversed"}
        ``"consistent"`` follows the labeled long tail (head = class 0),
        ``"uniform"`` gives every class ``m_max``, ``"reversed"`` flips the
        consistent profile so class ``K - 1`` gets ``m_max``.

    Returns
    -------
    counts : ndarray of int64, shape (num_classes,)

    Examples
    --------
    >>> unlabeled_counts(100, 3, 4, "reversed").tolist()
    [25, 50, 100]
    """
    if shape not in SHAPES:
        raise SplitError(f"shape must be one of {', '.join(map(repr, SHAPES))}, got {shape!r}")
    _check_gamma("gamma_u", gamma_u)
    consistent = long_tail_counts(m_max, num_classes, gamma_u)
    if shape == "uniform":
        return np.full(num_classes, m_max, dtype=np.int64)
    if shape == "reversed":
        return consistent[::-1].copy()
    return consistent


def split_indices(
    labels: np.ndarray,
    labeled_counts: np.ndarray,
    unlabeled_counts: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw disjoint labeled and unlabeled indices per class.

    Each class is permuted once; the labeled set takes the first
    ``labeled_counts[k]`` indices and the unlabeled set the next
    ``unlabeled_counts[k]``, so the two never overlap. Counts must fit (see
    `make_split`, which checks them and explains failures).

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    labeled_counts, unlabeled_counts : ndarray of int, shape (K,)
    rng : numpy.random.Generator

    Returns
    -------
    labeled_idx, unlabeled_idx : ndarray of int64
    """
    labeled, unlabeled = [], []
    for k, (n_k, m_k) in enumerate(zip(labeled_counts, unlabeled_counts)):
        perm = rng.permutation(np.flatnonzero(labels == k))
        labeled.append(perm[:n_k])
        unlabeled.append(perm[n_k : n_k + m_k])
    return (
        np.concatenate(labeled).astype(np.int64),
        np.concatenate(unlabeled).astype(np.int64),
    )


def make_split(
    y_train: np.ndarray,
    num_classes: int,
    *,
    n1: int,
    gamma: float,
    m1: int,
    gamma_u: float,
    shape: str,
    seed: int,
    class_names=None,
) -> Split:
    """Draw a long-tailed labeled/unlabeled split of the training set.

    Parameters
    ----------
    y_train : ndarray of int, shape (N,)
        Training labels in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes ``K``.
    n1 : int
        Labeled examples of the head class (``N_1``), ``>= 1``.
    gamma : float
        Labeled imbalance ratio, ``>= 1``.
    m1 : int
        Largest unlabeled per-class count (``M_1``), ``>= 0``; 0 gives an
        empty unlabeled set (supervised only).
    gamma_u : float
        Unlabeled imbalance ratio, ``>= 1``.
    shape : {"consistent", "uniform", "reversed"}
        Unlabeled profile, see `unlabeled_counts`.
    seed : int
        Seed for ``numpy.random.default_rng``; same seed, same split.
    class_names : sequence of str, optional
        Used only to name classes in error messages.

    Returns
    -------
    Split

    Raises
    ------
    SplitError
        If a parameter is invalid, a class would get no labeled example, or a
        class has too few images; the message names the class and the
        largest ``N_1`` / ``M_1`` (or ``gamma``) that would work.
    """
    _check_int("n1", n1, 1)
    _check_int("m1", m1, 0)
    _check_int("seed", seed, 0)
    _check_int("num_classes", num_classes, 1)
    y = _check_labels(y_train, num_classes)
    labeled = long_tail_counts(n1, num_classes, gamma)
    unlabeled = unlabeled_counts(m1, num_classes, gamma_u, shape)
    available = np.bincount(y, minlength=num_classes)

    # Only the tail can be empty: it gets floor(n1 / gamma), so gamma <= n1 fixes it.
    empty = np.flatnonzero(labeled == 0)
    if empty.size:
        raise SplitError(
            f"{_name_classes(empty, class_names)} would get 0 labeled examples with "
            f"N_1={n1} and gamma={gamma:g}; use gamma <= {n1} "
            f"or N_1 >= {_min_n1(num_classes, gamma)}"
        )

    short = np.flatnonzero(labeled > available)
    if short.size:
        k = short[0]
        best = _largest_fit(lambda n: long_tail_counts(n, num_classes, gamma), n1, available)
        raise SplitError(
            f"{_name_classes([k], class_names)} has {available[k]} training images but "
            f"N_1={n1} with gamma={gamma:g} needs {labeled[k]} labeled; the largest N_1 "
            f"that fits is {best}"
            + _too_small_hint(best, num_classes, gamma)
        )

    left = available - labeled
    short = np.flatnonzero(unlabeled > left)
    if short.size:
        k = short[0]
        best = _largest_fit(lambda m: unlabeled_counts(m, num_classes, gamma_u, shape), m1, left)
        raise SplitError(
            f"{_name_classes([k], class_names)} has {left[k]} images left after the labeled "
            f"set but M_1={m1} with gamma_u={gamma_u:g} and shape={shape!r} needs "
            f"{unlabeled[k]} unlabeled; the largest M_1 that fits is {best}"
        )

    labeled_idx, unlabeled_idx = split_indices(y, labeled, unlabeled, np.random.default_rng(seed))
    return Split(labeled_idx, unlabeled_idx, labeled, unlabeled)


def split_counts(split: Split, y_test: np.ndarray, y_val: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Examples per class in each set: ``labeled``, ``unlabeled``, ``validation`` (when ``y_val`` is given) and
    ``test``, in that order (numpy only: the Setup page's first paint draws these without pandas).

    >>> s = Split(np.arange(3), np.arange(2), np.array([2, 1]), np.array([1, 1]))
    >>> {k: v.tolist() for k, v in split_counts(s, np.array([0, 1, 1])).items()}
    {'labeled': [2, 1], 'unlabeled': [1, 1], 'test': [1, 2]}
    """
    num_classes = len(split.labeled_counts)

    def count(y):
        return np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)[:num_classes]

    sets = {"labeled": np.asarray(split.labeled_counts), "unlabeled": np.asarray(split.unlabeled_counts)}
    if y_val is not None:
        sets["validation"] = count(y_val)
    sets["test"] = count(y_test)
    return sets


def counts_frame(counts: dict[str, np.ndarray], class_names=None) -> pd.DataFrame:
    """``split_counts`` in long format: columns ``class`` (int), ``class_name``, ``set`` and ``count``; one row per
    class and set. ``class_names`` defaults to the class indices as strings."""
    num_classes = len(next(iter(counts.values())))
    names = [str(k) for k in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise SplitError(f"class_names has {len(names)} entries but the split has {num_classes} classes")
    return pd.DataFrame(
        [
            {"class": k, "class_name": names[k], "set": s, "count": int(c[k])}
            for s, c in counts.items()
            for k in range(num_classes)
        ]
    )


def split_frame(split: Split, y_test: np.ndarray, class_names=None, y_val: np.ndarray | None = None) -> pd.DataFrame:
    """Per-class counts of a split, the validation set (when given) and the test set, in long format.

    Parameters
    ----------
    split : Split
    y_test : ndarray of int, shape (N_test,)
    class_names : sequence of str, optional
        Defaults to the class indices as strings.
    y_val : ndarray of int, optional
        Validation labels; adds a ``"validation"`` set.

    Returns
    -------
    DataFrame
        Columns ``class`` (int), ``class_name``, ``set`` (``"labeled"``,
        ``"unlabeled"``, ``"validation"`` or ``"test"``) and ``count``; one row per class and set.
    """
    return counts_frame(split_counts(split, y_test, y_val), class_names)


def _check_int(name: str, value, low: int) -> None:
    """Raise SplitError unless ``value`` is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise SplitError(f"{name} must be an int >= {low}, got {value!r}")


def _check_gamma(name: str, value) -> None:
    """Raise SplitError unless ``value`` is a finite real >= 1."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SplitError(f"{name} must be a number >= 1, got {value!r}")
    if not math.isfinite(value) or value < 1:
        raise SplitError(f"{name} must be >= 1, got {value:g}")


def _check_labels(y_train, num_classes: int) -> np.ndarray:
    """Return ``y_train`` as int64, raising SplitError if it is not 1-D in range."""
    y = np.asarray(y_train)
    if y.ndim != 1 or not (y.size == 0 or np.issubdtype(y.dtype, np.integer)):
        raise SplitError(f"y_train must be a 1-D integer array, got dtype {y.dtype} and shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise SplitError(
            f"y_train labels must lie in 0..{num_classes - 1}, got range {y.min()}..{y.max()}"
        )
    return y.astype(np.int64)


def _name_classes(indices, class_names) -> str:
    """'class 9 ('truck')' or 'classes 8 ('ship'), 9 ('truck')'."""
    parts = [
        f"{k}" if class_names is None else f"{k} ({class_names[k]!r})" for k in map(int, indices)
    ]
    return ("class " if len(parts) == 1 else "classes ") + ", ".join(parts)


def _min_n1(num_classes: int, gamma: float) -> int:
    """Smallest N_1 whose tail class gets >= 1 labeled example for this gamma."""
    if num_classes == 1:
        return 1
    # The tail gets floor(n / gamma); start just below ceil(gamma) in case of rounding.
    n = max(1, math.ceil(gamma) - 1)
    while long_tail_counts(n, 2, gamma)[-1] < 1:  # K=2 has the same tail exponent, -1
        n += 1
    return n


def _largest_fit(counts_for, n_max: int, available: np.ndarray) -> int:
    """Largest n in [0, n_max] with counts_for(n) <= available everywhere.

    Counts never decrease as n grows, so a binary search on n is exact.
    """
    lo, hi = 0, n_max  # counts_for(0) is all zeros, so lo always fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.all(counts_for(mid) <= available):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _too_small_hint(best: int, num_classes: int, gamma: float) -> str:
    """Note when the largest fitting N_1 leaves the tail class empty."""
    need = _min_n1(num_classes, gamma)
    if best >= need:
        return ""
    return f", but gamma={gamma:g} needs N_1 >= {need}; lower gamma or add images"
