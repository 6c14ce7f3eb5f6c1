"""Training metrics of one log interval, summed on the training device.

``update`` only issues in-place device ops (``index_add_``), so the training
step never waits for the host; ``flush`` copies the sums once per interval
and turns them into the per-class record the store and charts read.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LOSS_NAMES = ("loss", "loss_sup", "loss_unsup", "mask_rate")


def _ratio(num, den):
    return float(num / den) if den else None


class IntervalMeter:
    """Running sums of losses and pseudo-label statistics per class for one log interval."""

    def __init__(self, num_classes: int, device: torch.device | str):
        self.K, self.device = num_classes, torch.device(device)
        self.reset()

    def reset(self) -> None:
        K, z = self.K, lambda n: torch.zeros(n, device=self.device)
        self.losses = z(len(LOSS_NAMES))
        self.n_pl, self.conf_pl, self.n_true, self.conf_true = z(K), z(K), z(K), z(K)
        self.n_accepted, self.n_correct, self.confusion = z(K), z(K), z(K * K)
        self.p_sum = z(K)  # sum of the distributions pseudo-labels are read from (after DA / DebiasPL)
        self.steps = 0

    @torch.no_grad()
    def update(self, losses: Tensor, pseudo: Tensor | None = None, conf: Tensor | None = None,
               mask: Tensor | None = None, true: Tensor | None = None, probs: Tensor | None = None) -> None:
        """Add one step: ``losses`` = stacked (loss, sup, unsup, mask rate); then the unlabeled batch, if any.

        ``pseudo`` are hard pseudo-labels, ``conf`` their confidence, ``mask`` 1.0 where
        accepted, ``true`` the hidden true labels (for precision and recall only), ``probs``
        the ``(uB, K)`` distributions the pseudo-labels were read from; all or none.
        """
        self.losses += losses
        self.steps += 1
        if pseudo is None:
            return
        ones = torch.ones_like(conf)
        self.p_sum += probs.sum(0)
        self.n_pl.index_add_(0, pseudo, ones)
        self.conf_pl.index_add_(0, pseudo, conf)
        self.n_true.index_add_(0, true, ones)
        self.conf_true.index_add_(0, true, conf)
        self.n_accepted.index_add_(0, pseudo, mask)
        self.n_correct.index_add_(0, pseudo, (pseudo == true).float() * mask)
        self.confusion.index_add_(0, true * self.K + pseudo, mask)  # rows = truth, columns = pseudo-label

    def flush(self, thresholds: Tensor) -> dict:
        """Copy the sums to the host (the interval's one sync), reset, and return
        ``{"scalars", "classes", "pseudo_confusion", "pseudo_mean"}`` with means over the interval;
        ``pseudo_mean`` is the mean pseudo-label distribution (None without unlabeled data)."""
        sums = {k: v for k, v in vars(self).items() if torch.is_tensor(v)}
        flat = torch.cat(list(sums.values())).cpu().numpy()  # one device-to-host copy
        h = dict(zip(sums, np.split(flat, np.cumsum([v.numel() for v in sums.values()])[:-1])))
        steps, thr = max(self.steps, 1), thresholds.float().cpu().numpy()
        self.reset()
        losses = h["losses"] / steps
        n_acc, n_cor, n_true, n_pl = h["n_accepted"], h["n_correct"], h["n_true"], h["n_pl"]
        return {
            "scalars": {**{name: float(v) for name, v in zip(LOSS_NAMES, losses)},
                        "pl_accuracy": _ratio(n_cor.sum(), n_acc.sum())},
            "classes": [
                {
                    "threshold": float(thr[c]),
                    "conf_pl": _ratio(h["conf_pl"][c], n_pl[c]),
                    "conf_true": _ratio(h["conf_true"][c], n_true[c]),
                    "n_pl": int(n_pl[c]), "n_accepted": int(n_acc[c]), "n_true": int(n_true[c]),
                    "n_correct": int(n_cor[c]),
                    "precision": _ratio(n_cor[c], n_acc[c]),
                    "recall": _ratio(n_cor[c], n_true[c]),
                }
                for c in range(self.K)
            ],
            "pseudo_confusion": h["confusion"].reshape(self.K, self.K).astype(int).tolist(),
            "pseudo_mean": (h["p_sum"] / n_true.sum()).tolist() if n_true.sum() else None,
        }
