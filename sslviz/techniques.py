"""Imbalance-aware SSL techniques, one pure tensor function each.

Every function takes tensors (and plain numbers) and returns tensors; none of
them holds state. Stateful pieces (running means, FlexMatch counts) are passed
in and the updated value is returned, so the trainer owns all state and each
formula can be tested against numbers worked out by hand.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# -- thresholds ---------------------------------------------------------------
def fixed_thresholds(tau: float, num_classes: int, device=None) -> Tensor:
    """FixMatch: the same threshold for every class, ``tau_c = tau``.

    >>> fixed_thresholds(0.95, 3)
    tensor([0.9500, 0.9500, 0.9500])
    """
    return torch.full((num_classes,), float(tau), device=device)


def frequency_scaled_thresholds(thresholds: Tensor, class_counts: Tensor, alpha: float, floor: float) -> Tensor:
    """Lower thresholds for rare classes: ``tau_c' = max(tau_c * (n_c / n_max) ** alpha, min(tau_c, floor))``.

    The floor keeps rare classes from accepting near-random pseudo-labels, and is
    itself capped by ``tau_c`` so it never raises a threshold.

    >>> frequency_scaled_thresholds(torch.tensor([0.9, 0.9, 0.9]), torch.tensor([100., 25., 1.]), 0.5, 0.3)
    tensor([0.9000, 0.4500, 0.3000])
    """
    counts = class_counts.to(thresholds).clamp(min=1)
    scaled = thresholds * (counts / counts.max()) ** alpha
    return torch.maximum(scaled, thresholds.clamp(max=floor))


def flexmatch_thresholds(tau: float, predicted: Tensor, num_classes: int, warmup: bool) -> Tensor:
    """FlexMatch curriculum thresholds from each unlabeled sample's last confident prediction.

    ``sigma_c`` counts unlabeled samples whose latest confident (> tau) prediction is c
    (``predicted`` holds that class per sample, -1 if none yet). Learning effect
    ``beta_c = sigma_c / max(max_c sigma_c, n_unused)`` with warm-up (``n_unused`` = samples
    still at -1), else ``sigma_c / max_c sigma_c``; threshold
    ``tau_c = beta_c / (2 - beta_c) * tau`` (the convex mapping).

    >>> flexmatch_thresholds(0.9, torch.tensor([0, 0, 0, 1, -1, -1]), 2, warmup=False)
    tensor([0.9000, 0.1800])
    """
    # scatter_add instead of bincount(predicted[predicted >= 0]): no boolean indexing, so no host sync on CUDA.
    used = (predicted >= 0).float()
    sigma = torch.zeros(num_classes, device=predicted.device).scatter_add_(0, predicted.clamp(min=0), used)
    denom = sigma.max()
    if warmup:
        denom = torch.maximum(denom, (predicted < 0).sum().float())
    beta = sigma / denom.clamp(min=1)
    return beta / (2 - beta) * tau


def freematch_thresholds(global_conf: Tensor, class_conf: Tensor) -> Tensor:
    """FreeMatch self-adaptive thresholds: ``tau_c = tau_t * p_t(c) / max_c p_t(c)``.

    ``tau_t`` is the EMA of the mean max-confidence, ``p_t`` the EMA of the mean
    predicted distribution on unlabeled data (see :func:`freematch_update`).

    >>> freematch_thresholds(torch.tensor(0.8), torch.tensor([0.5, 0.25, 0.25]))
    tensor([0.8000, 0.4000, 0.4000])
    """
    return global_conf * class_conf / class_conf.max()


def freematch_update(global_conf: Tensor, class_conf: Tensor, label_hist: Tensor, probs: Tensor,
                     momentum: float) -> tuple[Tensor, Tensor, Tensor]:
    """One EMA step of FreeMatch's state from a batch of unlabeled probabilities ``(B, K)``.

    ``tau_t`` <- EMA of the mean max-confidence, ``p_t`` <- EMA of the mean prediction and
    the label histogram ``h_t`` <- EMA of the normalised histogram of argmax predictions
    (USB ``FreeMatchThresholingHook.update``).

    >>> g, c, h = freematch_update(torch.tensor(0.5), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]),
    ...                            torch.tensor([[0.9, 0.1], [0.7, 0.3]]), 0.5)
    >>> g, c, h
    (tensor(0.6500), tensor([0.6500, 0.3500]), tensor([0.7500, 0.2500]))
    """
    conf, pred = probs.max(dim=1)
    hist = torch.zeros_like(label_hist).scatter_add_(0, pred, torch.ones_like(conf))
    global_conf = ema(global_conf, conf.mean(), momentum)
    class_conf = ema(class_conf, probs.mean(dim=0), momentum)
    label_hist = ema(label_hist, hist / hist.sum(), momentum)
    return global_conf, class_conf, label_hist


def freematch_fairness_loss(logits_strong: Tensor, mask: Tensor, class_conf: Tensor, label_hist: Tensor) -> Tensor:
    """FreeMatch's self-adaptive fairness loss ``L_f = -H(SumNorm(p_t / h_t), SumNorm(p_bar / h_bar))``.

    Over the accepted samples (``mask``) of the strong view: ``p_bar`` is their mean
    prediction and ``h_bar`` the normalised histogram of their argmax; ``p_t`` and ``h_t``
    are the running estimates of :func:`freematch_update`. The value is
    ``sum_c a_c log b_c`` (a negative cross-entropy, as USB's ``entropy_loss``): minimising it
    pushes the mean prediction of accepted samples away from collapsing onto a few
    classes. Zero when no sample is accepted. Written with masks instead of boolean
    indexing so a CUDA step never waits for the host.

    >>> logits = torch.log(torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]))
    >>> round(float(freematch_fairness_loss(logits, torch.tensor([1., 1., 1.]),
    ...                                     torch.tensor([0.6, 0.4]), torch.tensor([0.5, 0.5]))), 4)
    -0.8214
    """
    probs = F.softmax(logits_strong, dim=1)
    n = mask.sum()
    hist = torch.zeros_like(class_conf).scatter_add_(0, probs.argmax(dim=1), mask)
    hist = hist / n.clamp(min=1)
    mean_prob = (probs * mask[:, None]).sum(0) / n.clamp(min=1)

    def sum_norm(p: Tensor, h: Tensor) -> Tensor:
        scaled = p * torch.where(h > 0, 1.0 / h.clamp(min=1e-12), torch.zeros_like(h)).detach()
        return scaled / scaled.sum().clamp(min=1e-12)

    loss = (sum_norm(class_conf, label_hist) * torch.log(sum_norm(mean_prob, hist) + 1e-12)).sum()
    return torch.where(n > 0, loss, torch.zeros_like(loss))


def warmup_thresholds(thresholds: Tensor, step: int, warmup_steps: int) -> Tensor:
    """Linear warm-up from 1.0 (accept nothing but certainties) down to ``thresholds``.

    >>> warmup_thresholds(torch.tensor([0.6]), 5, 10)
    tensor([0.8000])
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return thresholds
    frac = step / warmup_steps
    return 1.0 - frac * (1.0 - thresholds)


def confidence_mask(probs: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hard pseudo-labels, their confidence and the float mask ``max p >= tau_{argmax p}``."""
    conf, pseudo = probs.max(dim=1)
    return pseudo, conf, (conf >= thresholds[pseudo]).float()


# -- supervised loss ----------------------------------------------------------
def class_weights(class_counts: Tensor, scheme: str, beta: float = 0.999) -> Tensor:
    """Per-class loss weights normalised to mean 1.

    - ``none``: all ones.
    - ``inverse``: ``w_c ~ 1 / n_c``.
    - ``effective``: ``w_c ~ (1 - beta) / (1 - beta ** n_c)`` (Cui et al., effective number of samples).

    >>> class_weights(torch.tensor([3., 1.]), "inverse")
    tensor([0.5000, 1.5000])
    """
    counts = class_counts.float().clamp(min=1)
    if scheme == "none":
        w = torch.ones_like(counts)
    elif scheme == "inverse":
        w = 1.0 / counts
    elif scheme == "effective":
        w = (1.0 - beta) / (1.0 - beta**counts)
    else:
        raise ValueError(f"Unknown class weighting {scheme!r}; valid: 'none', 'inverse', 'effective'.")
    return w * len(w) / w.sum()


def log_prior(class_counts: Tensor) -> Tensor:
    """``log(n_c / sum n)``, with empty classes counted as one sample so the log stays finite."""
    counts = class_counts.float().clamp(min=1)
    return torch.log(counts / counts.sum())


def logit_adjust(logits: Tensor, log_prior_: Tensor, tau: float) -> Tensor:
    """Logit-adjusted loss input (Menon et al.): ``logits + tau * log prior``.

    Training on these and predicting with the raw logits makes the classifier
    approximately balanced; tau = 1 is balanced softmax.

    >>> logit_adjust(torch.zeros(1, 2), torch.log(torch.tensor([0.75, 0.25])), 1.0).exp()
    tensor([[0.7500, 0.2500]])
    """
    return logits + tau * log_prior_


# -- unsupervised loss --------------------------------------------------------
def unsup_class_scale(class_counts: Tensor, alpha: float) -> Tensor:
    """Per-class weight of the consistency loss, ``(n_max / n_c) ** alpha`` normalised to mean 1.

    >>> unsup_class_scale(torch.tensor([4., 1.]), 0.5)
    tensor([0.6667, 1.3333])
    """
    counts = class_counts.float().clamp(min=1)
    w = (counts.max() / counts) ** alpha
    return w * len(w) / w.sum()


# -- pseudo-label distribution ------------------------------------------------
def ema(running: Tensor, value: Tensor, momentum: float) -> Tensor:
    """``m * running + (1 - m) * value``."""
    return momentum * running + (1.0 - momentum) * value


def window_push(window: Tensor, seen: int, value: Tensor) -> Tensor:
    """Write ``value`` into row ``seen % W`` of a ``(W, K)`` ring buffer (in place; returned for chaining)."""
    window[seen % len(window)] = value
    return window


def window_mean(window: Tensor, seen: int) -> Tensor:
    """Mean of the last ``min(seen, W)`` rows pushed into a zero-initialised ``(W, K)`` ring buffer.

    ReMixMatch's running mean of the model's predictions: the last W batches only,
    so it follows the model within a few hundred steps at any run length (an EMA
    with momentum 0.999 still holds 37% of its start after 1,000 steps).

    >>> w = torch.zeros(3, 2)
    >>> _ = window_push(w, 0, torch.tensor([1., 0.])); _ = window_push(w, 1, torch.tensor([0., 1.]))
    >>> window_mean(w, 2)
    tensor([0.5000, 0.5000])
    >>> _ = window_push(w, 2, torch.tensor([0., 1.])); _ = window_push(w, 3, torch.tensor([0., 1.]))
    >>> window_mean(w, 4)  # the first batch has left the window
    tensor([0., 1.])
    """
    return window.sum(dim=0) / max(1, min(seen, len(window)))


def distribution_alignment(probs: Tensor, p_target: Tensor, p_model: Tensor) -> Tensor:
    """ReMixMatch distribution alignment: ``p~ = normalize(p * p_target / p_model)``.

    ``p_model`` is the running mean of the model's predictions on unlabeled data.

    >>> distribution_alignment(torch.tensor([[0.5, 0.5]]), torch.tensor([0.5, 0.5]), torch.tensor([0.8, 0.2]))
    tensor([[0.2000, 0.8000]])
    """
    aligned = probs * p_target / p_model.clamp(min=1e-6)
    return aligned / aligned.sum(dim=1, keepdim=True)


def debiased_probs(logits: Tensor, p_hat: Tensor, tau_d: float) -> Tensor:
    """DebiasPL: ``softmax(f - tau_d * log p_hat)`` removes the model's running class bias.

    >>> debiased_probs(torch.zeros(1, 2), torch.tensor([0.8, 0.2]), 1.0)
    tensor([[0.2000, 0.8000]])
    """
    return F.softmax(logits - tau_d * torch.log(p_hat.clamp(min=1e-6)), dim=1)


def adaptive_margin_logits(logits: Tensor, p_hat: Tensor, tau_d: float) -> Tensor:
    """DebiasPL's adaptive marginal loss input: ``f + tau_d * log p_hat`` on the strong view.

    Classes the model over-predicts (large ``p_hat``) get a larger logit here, so the
    cross-entropy must push their margin further: the loss demands a wider margin
    from majority classes, as a logit-adjusted loss does with a fixed prior.

    >>> adaptive_margin_logits(torch.zeros(1, 2), torch.tensor([0.5, 0.5]), 1.0).exp()
    tensor([[0.5000, 0.5000]])
    """
    return logits + tau_d * torch.log(p_hat.clamp(min=1e-6))


# -- schedules ----------------------------------------------------------------
def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    """FixMatch's cosine decay ``lr * cos(7 pi k / (16 K))``.

    >>> round(cosine_lr(0, 100, 0.03), 4), round(cosine_lr(100, 100, 0.03), 4)
    (0.03, 0.0059)
    """
    return base_lr * math.cos(7 * math.pi * step / (16 * total_steps))


def ema_model_decay(step: int, decay: float) -> float:
    """EMA decay with a warm-up, ``min(decay, (1 + t) / (10 + t))``, so early evaluations are not stuck near init."""
    return min(decay, (1 + step) / (10 + step))
