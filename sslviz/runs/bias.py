"""Majority-bias summaries of a run: how far predictions and pseudo-labels lean to the head.

Pure functions over per-class arrays, plus `run_bias_summary`, a thin reader
over a `RunStore`. The head is the most frequent *labeled* class; ties keep
class-index order (class 0 is the head by the long-tail convention).
Recall numbers exist once per evaluation split (validation, test); the
pseudo-label numbers come from training and have no split.
"""
from __future__ import annotations

import numpy as np

from .records import SPLIT_LABELS, SPLITS

HEAD_TAIL_K = 3  # classes averaged on each side of the head-vs-tail recall gap
RECALL_KEYS = ("head_tail_gap", "tail_recall")  # per split, from evaluation recall
PSEUDO_KEYS = ("kl_pseudo_true", "head_share")  # from the latest pseudo-label counts
SUMMARY_KEYS = (*(f"{s}_{m}" for m in RECALL_KEYS for s in SPLITS), *PSEUDO_KEYS)  # `run_bias_summary`'s keys
LABELS = {"head_tail_gap": "head − tail recall", "tail_recall": f"recall of the {HEAD_TAIL_K} rarest",
          "kl_pseudo_true": "KL(pseudo ‖ true)", "head_share": "head share of pseudo-labels"}


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


def tail_recall(recall, labeled_counts, k: int = HEAD_TAIL_K) -> float:
    """Mean recall of the ``k`` rarest labeled classes: the classes majority bias hurts first.

    >>> round(tail_recall([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [60, 30, 15, 8, 4, 2]), 6)
    0.2
    """
    _, tail = head_tail_classes(labeled_counts, k)
    return float(np.nanmean(np.asarray(recall, dtype=float)[tail]))


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


def _have(values) -> bool:
    return values is not None and len(values) > 0


def recall_bias(recall, labeled_counts, k: int = HEAD_TAIL_K) -> dict:
    """``head_tail_gap`` and ``tail_recall`` of one evaluation's per-class recall (NaN when missing)."""
    if not (_have(recall) and _have(labeled_counts)):
        return dict.fromkeys(RECALL_KEYS, float("nan"))
    return {"head_tail_gap": head_tail_recall_gap(recall, labeled_counts, k),
            "tail_recall": tail_recall(recall, labeled_counts, k)}


def pseudo_label_bias(n_accepted, labeled_counts, unlabeled_counts) -> dict:
    """``kl_pseudo_true`` (KL of the accepted pseudo-label distribution from the true unlabeled one, nats)
    and ``head_share`` (fraction of accepted pseudo-labels given to the head class); NaN when missing."""
    nan = float("nan")
    have_pl = _have(n_accepted)
    return {
        "kl_pseudo_true": kl_divergence(n_accepted, unlabeled_counts) if have_pl and _have(unlabeled_counts) else nan,
        "head_share": head_share(n_accepted, labeled_counts) if have_pl and _have(labeled_counts) else nan,
    }


def bias_summary(recall, n_accepted, labeled_counts, unlabeled_counts, k: int = HEAD_TAIL_K) -> dict:
    """The majority-bias numbers of one evaluation and one pseudo-label window.

    Returns
    -------
    dict
        `recall_bias` (``head_tail_gap``, ``tail_recall``) merged with
        `pseudo_label_bias` (``kl_pseudo_true``, ``head_share``). Missing inputs give NaN.
    """
    return {**recall_bias(recall, labeled_counts, k), **pseudo_label_bias(n_accepted, labeled_counts, unlabeled_counts)}


def column_label(key: str) -> str:
    """Display name of a `SUMMARY_KEYS` entry: 'head − tail recall (validation)', 'KL(pseudo ‖ true)'."""
    split, _, metric = key.partition("_")
    if split in SPLITS and metric in LABELS:
        return f"{LABELS[metric]} ({SPLIT_LABELS[split]})"
    return LABELS[key]


def _latest(df, column: str):
    """``column`` of the last step's rows, in class order, or None when ``df`` is empty."""
    if df.empty:
        return None
    return df[df["step"] == df["step"].max()].sort_values("cls")[column].to_numpy(dtype=float)


def run_bias_summary(store, run_id: int, k: int = HEAD_TAIL_K) -> dict:
    """A stored run's `SUMMARY_KEYS`: `recall_bias` of the latest validation and the latest test evaluation
    (``val_head_tail_gap``, ``test_tail_recall`` ...; NaN for a split never evaluated) and `pseudo_label_bias`
    of the latest pseudo-label counts."""
    info = (store.run(run_id) or {}).get("info") or {}
    labeled = info.get("labeled_counts")
    out = {}
    for split in SPLITS:
        recall = _latest(store.class_eval(run_id, split, max_points=1), "recall")  # the last step only
        out |= {f"{split}_{m}": v for m, v in recall_bias(recall, labeled, k).items()}
    out |= pseudo_label_bias(_latest(store.class_train(run_id, max_points=1), "n_accepted"), labeled, info.get("unlabeled_counts"))
    return {key: out[key] for key in SUMMARY_KEYS}  # validation and test of a metric side by side
