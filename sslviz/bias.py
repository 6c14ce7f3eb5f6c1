"""Majority-bias summaries of a run: how far predictions and pseudo-labels lean to the head.

Pure functions over per-class arrays, plus `run_bias_summary`, a thin reader
over a `RunStore`. The head is the most frequent *labeled* class; ties keep
class-index order (class 0 is the head by the long-tail convention).
"""
from __future__ import annotations

import numpy as np

HEAD_TAIL_K = 3  # classes averaged on each side of the head-vs-tail recall gap


def head_tail_classes(labeled_counts, k: int = HEAD_TAIL_K) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` most and ``k`` least frequent labeled classes.

    ``k`` shrinks to ``K // 2`` when there are fewer than ``2k`` classes so the
    two groups never overlap. Ties keep class-index order on the head side and
    reverse it on the tail side, so a balanced split compares the first and
    last classes.

    >>> head_tail_classes([50, 20, 9, 5, 2, 1], k=2)
    (array([0, 1]), array([4, 5]))
    """
    counts = np.asarray(labeled_counts, dtype=float)
    k = max(1, min(k, len(counts) // 2))
    order = np.argsort(-counts, kind="stable")  # most frequent first
    return np.sort(order[:k]), np.sort(order[-k:])


def head_tail_recall_gap(recall, labeled_counts, k: int = HEAD_TAIL_K) -> float:
    """Mean recall of the ``k`` most frequent labeled classes minus that of the ``k`` rarest.

    Positive means the model favours the head classes.

    >>> round(head_tail_recall_gap([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [60, 30, 15, 8, 4, 2]), 6)
    0.6
    """
    recall = np.asarray(recall, dtype=float)
    head, tail = head_tail_classes(labeled_counts, k)
    return float(np.nanmean(recall[head]) - np.nanmean(recall[tail]))


def kl_divergence(p, q, eps: float = 1e-12) -> float:
    """KL(p || q) in nats of two count (or probability) vectors, each normalised to sum 1.

    Terms with ``p_c = 0`` contribute 0; ``q_c`` is floored at ``eps`` so a
    pseudo-label for a class absent from ``q`` gives a large finite value.
    NaN when either vector sums to 0.

    >>> round(kl_divergence([1, 1], [1, 3]), 6)
    0.143841
    """
    p = np.nan_to_num(np.asarray(p, dtype=float))
    q = np.nan_to_num(np.asarray(q, dtype=float))
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / np.maximum(q[nz], eps))))


def head_share(n_accepted, labeled_counts) -> float:
    """Fraction of accepted pseudo-labels that went to the head (most frequent labeled) class.

    >>> head_share([6, 3, 1], [40, 10, 4])
    0.6
    """
    n = np.nan_to_num(np.asarray(n_accepted, dtype=float))
    if n.sum() <= 0:
        return float("nan")
    head = int(np.argmax(np.asarray(labeled_counts, dtype=float)))
    return float(n[head] / n.sum())


def bias_summary(recall, n_accepted, labeled_counts, unlabeled_counts, k: int = HEAD_TAIL_K) -> dict:
    """The three majority-bias numbers of one run.

    Returns
    -------
    dict
        ``head_tail_gap`` (test recall, head minus tail), ``kl_pseudo_true``
        (KL of the accepted pseudo-label distribution from the true unlabeled
        distribution, nats) and ``head_share`` (fraction of accepted
        pseudo-labels given to the head class). Missing inputs give NaN.
    """
    nan = float("nan")
    have_recall = recall is not None and len(recall) and labeled_counts is not None and len(labeled_counts)
    have_pl = n_accepted is not None and len(n_accepted)
    return {
        "head_tail_gap": head_tail_recall_gap(recall, labeled_counts, k) if have_recall else nan,
        "kl_pseudo_true": (kl_divergence(n_accepted, unlabeled_counts)
                           if have_pl and unlabeled_counts is not None and len(unlabeled_counts) else nan),
        "head_share": head_share(n_accepted, labeled_counts) if have_pl and labeled_counts is not None else nan,
    }


def run_bias_summary(store, run_id: int, k: int = HEAD_TAIL_K) -> dict:
    """`bias_summary` of a stored run from its latest test recall and latest pseudo-label counts."""
    run = store.run(run_id) or {}
    info = run.get("info") or {}
    ce = store.class_eval(run_id)
    recall = None
    if not ce.empty:
        last = ce[ce["step"] == ce["step"].max()].sort_values("cls")
        recall = last["recall"].to_numpy(dtype=float)
    ct = store.class_train(run_id)
    n_accepted = None
    if not ct.empty:
        last = ct[ct["step"] == ct["step"].max()].sort_values("cls")
        n_accepted = last["n_accepted"].to_numpy(dtype=float)
    return bias_summary(recall, n_accepted, info.get("labeled_counts"), info.get("unlabeled_counts"), k)
