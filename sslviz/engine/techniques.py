"""Imbalance-aware SSL techniques, one pure tensor function each.

Every function takes tensors (and plain numbers) and returns tensors; none of
them holds state. Stateful pieces (running means, FlexMatch counts) are passed
in and the updated value is returned, so the trainer owns all state and each
formula can be tested against numbers worked out by hand.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .lazy import F, torch  # torch on first use: see sslviz/engine/lazy.py

if TYPE_CHECKING:
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
def last_positions(idx: Tensor, size: int) -> Tensor:
    """For each entry of ``idx`` (indices into a table of ``size`` rows), the position of the last entry with the same
    index. A batch drawn with replacement repeats samples, and PyTorch leaves which duplicate wins
    ``table[idx] = values`` undefined (CPU runs differed from one run to the next); ``table[idx] =
    values[last_positions(idx, size)]`` writes the same value for every copy, the last one's, with no host sync.

    >>> last_positions(torch.tensor([3, 1, 3, 2, 1]), 4).tolist()
    [2, 4, 2, 3, 4]
    """
    pos = torch.arange(len(idx), device=idx.device)
    last = torch.zeros(size, dtype=torch.long, device=idx.device).scatter_reduce_(0, idx, pos, reduce="amax")
    return last[idx]


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


# -- imbalanced-SSL methods that re-estimate over the unlabeled set: SAW, Adsh, DARP ------------------
def saw_effective_weights(class_counts: Tensor) -> Tensor:
    """SAW's class weights: effective-number weights ``(1 - beta) / (1 - beta^n_c)`` with ``beta = (N - 1) / N``,
    ``N`` the mean count (USB's choice; the paper leaves N a hyperparameter), normalised to sum to K.

    Uniform counts give weight 1 each; a class with fewer samples gets more weight.

    >>> saw_effective_weights(torch.tensor([10., 10.]))
    tensor([1., 1.])
    >>> saw_effective_weights(torch.tensor([30., 10.]))  # N = 20, beta = 0.95
    tensor([0.6763, 1.3237])
    """
    counts = class_counts.double()
    n = counts.sum() / len(counts)
    beta = (n - 1) / n
    w = (1 - beta) / (1 - beta ** counts)
    return (w / w.sum() * len(counts)).to(class_counts.dtype if class_counts.is_floating_point() else torch.float32)


def predicted_class_counts(probs: Tensor, num_classes: int) -> Tensor:
    """How many rows of ``probs`` predict each class (argmax), at least 1 each (SAW's guard against empty classes).

    >>> predicted_class_counts(torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0]]), 3)
    tensor([2., 1., 1.])
    """
    counts = torch.zeros(num_classes, device=probs.device).scatter_add_(
        0, probs.argmax(1), torch.ones(len(probs), device=probs.device))
    return counts.clamp(min=1)


def adsh_thresholds(conf: Tensor, pred: Tensor, num_classes: int, tau: float, head: int,
                    previous: Tensor) -> tuple[Tensor, Tensor]:
    """Adsh's per-class thresholds from the confidences over the unlabeled set, and the admitted fraction rho.

    Each class's confidences are sorted in descending order. ``rho`` is the fraction of the head class's samples
    above ``tau`` as USB computes it, ``(m - 1) / n_head`` for ``m`` samples above tau; class k's threshold is
    its confidence at position ``floor(n_k * rho) - 1`` (USB's ``exp(-s_k)``), so every class admits about the
    same fraction as the head class. Where USB's indexing would wrap to -1 (fewer than one sample admitted) the
    position is 0, the class's most confident sample; a class nobody predicts, or a head class with no sample
    above tau (USB: rho = 1, every sample admitted), keeps its ``previous`` threshold.

    >>> conf = torch.tensor([0.99, 0.97, 0.96, 0.90, 0.80, 0.70, 0.60])
    >>> pred = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    >>> th, rho = adsh_thresholds(conf, pred, 3, 0.95, 0, torch.full((3,), 0.95))
    >>> th, rho  # 3 of 4 head samples above 0.95: rho = 2/4; class 1: position floor(3 * 0.5) - 1 = 0
    (tensor([0.9700, 0.8000, 0.9500]), tensor(0.5000))
    """
    n = torch.zeros(num_classes, dtype=torch.long, device=conf.device).scatter_add_(0, pred, torch.ones_like(pred))
    # Class by class, each in descending confidence: a stable sort by class of the descending order.
    by_conf = conf.argsort(descending=True)
    order = by_conf[pred[by_conf].argsort(stable=True)]
    start = torch.cumsum(n, 0) - n
    n_head = n[head]
    m = ((pred == head) & (conf >= tau)).sum()
    rho = (m - 1).clamp(min=0).double() / n_head.clamp(min=1).double()
    pos = (torch.floor(n.double() * rho).long() - 1).clamp(min=0)
    idx = (start + torch.minimum(pos, (n - 1).clamp(min=0))).clamp(max=max(len(conf) - 1, 0))
    th = conf[order[idx]] if len(conf) else previous
    keep = (n == 0) | (m == 0)
    return torch.where(keep, previous, th.to(previous.dtype)), torch.where(m > 0, rho, torch.ones_like(rho)).float()


def darp_estimate(target: Tensor, probs: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """DARP's first step (``estimate_pseudo``): for each class k (last to first), mark the ``int(alpha * q_k)`` rows
    most confident in k and compute the weight ``(q_k + 1e-6) / (sum of their p_k + 1e-6)``.

    ``target`` holds the target counts q (summing to the number of rows). Returns the 0/1 marks (N, K) and the
    weights (K,).

    >>> marks, w = darp_estimate(torch.tensor([1., 1.]), torch.tensor([[0.9, 0.1], [0.6, 0.4]]), 1.0)
    >>> marks, w
    (tensor([[1., 0.],
            [0., 1.]]), tensor([1.1111, 2.5000]))
    """
    n, k = probs.shape
    marks = torch.zeros_like(probs)
    mass = torch.zeros(k, dtype=probs.dtype, device=probs.device)
    for c in reversed(range(k)):
        top = min(n, int(alpha * float(target[c])))
        if top:
            vals, idx = probs[:, c].topk(top)
            marks[idx, c] = 1
            mass[c] = vals.sum()
    return marks, (target.to(probs.dtype) + 1e-6) / (mass + 1e-6)


def darp_rescale(probs: Tensor, marks: Tensor, weights: Tensor) -> Tensor:
    """DARP's "iterative normalization" before the solver: ``normalize(p * marks * w + 1e-6)`` row by row (a row
    marked for no class becomes uniform).

    >>> darp_rescale(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([[1., 0.], [0., 0.]]), torch.ones(2))
    tensor([[1.0000e+00, 1.1111e-06],
            [5.0000e-01, 5.0000e-01]])
    """
    scaled = probs * marks * weights.reshape(1, -1) + 1e-6
    return scaled / scaled.sum(dim=1, keepdim=True)


def darp_solve(probs: Tensor, target: Tensor, iterations: int = 10, newton_steps: int = 30,
               tol: float = 1e-6) -> tuple[Tensor, int]:
    """DARP's solver (``opt_solver``): the distributions closest to ``probs`` (entropy-weighted KL) whose rows sum
    to 1 and whose columns sum to the target counts, by ``iterations`` rounds of row normalisation and a Newton
    solve per class of its dual variable ``nu_k``.

    Computed in float64 on ``probs``' device; the Newton solve for all classes at once, with the derivative (the
    reference runs scipy's secant method per class to tolerance 0.1). Returns the refined distributions (N, K)
    and the Newton steps taken over all rounds.

    >>> m, _ = darp_solve(torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]), torch.tensor([2., 1.]))
    >>> m.sum(0).round(decimals=3), m.sum(1)
    (tensor([2., 1.]), tensor([1., 1., 1.]))
    """
    a = probs.double() / math.e
    entropy = -(probs.double() * torch.log(probs.double() + 1e-6)).sum(1)
    w = 1.0 / entropy.clamp(min=1e-6)
    c = target.double().to(probs.device)
    nu = torch.zeros(probs.shape[1], dtype=torch.float64, device=probs.device)
    y = torch.exp(-torch.ones_like(a) / w[:, None])  # the reference starts from nu = 1 for the first normalisation
    steps = 0
    for _ in range(iterations):
        x = 1.0 / (a * y).sum(1)
        ax = a * x[:, None]
        for _ in range(newton_steps):
            e = torch.exp(-nu[None, :] / w[:, None])
            g = (ax * e).sum(0) - c
            dg = -(ax * e / w[:, None]).sum(0)
            step = g / dg
            nu = nu - step
            steps += 1
            if float(step.abs().max()) < tol:
                break
        y = torch.exp(-nu[None, :] / w[:, None])
    x = 1.0 / (a * y).sum(1)
    return (a * x[:, None] * y).to(probs.dtype), steps


# -- imbalanced-SSL methods with heads of their own (ABC, ACR; sslviz/methods/) --------------------------------
def abc_keep_probability(class_counts: Tensor, progress: float) -> Tensor:
    """ABC's per-class Bernoulli keep probability ``1 - progress * (1 - n_min / n_c)``.

    ``progress`` 1 gives the balanced rate ``n_min / n_c`` (the labeled mask); on unlabeled data ABC anneals from
    keeping everything (progress 0) toward it over training (progress = t / T).

    >>> abc_keep_probability(torch.tensor([100., 25., 4.]), 1.0)
    tensor([0.0400, 0.1600, 1.0000])
    >>> abc_keep_probability(torch.tensor([100., 25., 4.]), 0.5)
    tensor([0.5200, 0.5800, 1.0000])
    """
    counts = class_counts.float().clamp(min=1)
    return 1.0 - progress * (1.0 - counts.min() / counts)


def abc_loss(logits_l: Tensor, y: Tensor, logits_w: Tensor, logits_s: Tensor, keep_l: Tensor, keep_u: Tensor,
             threshold: float, draws_l: Tensor, draws_u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ABC's auxiliary-head losses from its logits on the labeled, weak and strong views.

    Labeled: ``mean(CE(logits_l, y) * [draw < keep_l[y]])``. Unlabeled: pseudo-labels ``argmax softmax(logits_w)``
    accepted where the confidence reaches ``threshold`` and the draw falls below ``keep_u[pseudo]``; loss
    ``mean(CE(logits_s, pseudo) * mask)`` over the whole unlabeled batch. ``draws_*`` are U[0, 1) samples (a
    Bernoulli(p) draw is ``u < p``). Returns ``(loss_l, loss_u, mask_u)``.

    >>> l, u, m = abc_loss(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([[4., 0.], [0., 0.]]),
    ...                    torch.zeros(2, 2), torch.tensor([0.5, 1.]), torch.ones(2), 0.9,
    ...                    torch.tensor([0.7, 0.7]), torch.zeros(2))
    >>> round(float(l), 4), round(float(u), 4), m.tolist()  # log 2 / 2 each: one labeled and one unlabeled kept
    (0.3466, 0.3466, [1.0, 0.0])
    """
    mask_l = (draws_l < keep_l[y]).float()
    loss_l = (F.cross_entropy(logits_l, y, reduction="none") * mask_l).mean()
    conf, pseudo = F.softmax(logits_w.detach(), dim=1).max(dim=1)
    mask_u = ((conf >= threshold) & (draws_u < keep_u[pseudo])).float()
    loss_u = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask_u).mean()
    return loss_l, loss_u, mask_u


def acr_adjustment(prior: Tensor, tau: float | Tensor) -> Tensor:
    """ACR's logit adjustment ``log(prior ** tau + 1e-12)`` (``tau log prior``, finite at tau = 0).

    >>> acr_adjustment(torch.tensor([0.5, 0.25]), 2.0).exp()
    tensor([0.2500, 0.0625])
    """
    return torch.log(prior**tau + 1e-12)


def symmetric_kl(p: Tensor, q: Tensor) -> Tensor:
    """``0.5 KL(p || q) + 0.5 KL(q || p)`` of two distributions.

    >>> round(float(symmetric_kl(torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1]))), 4)
    0.4394
    """
    return 0.5 * (p * (p.log() - q.log())).sum() + 0.5 * (q * (q.log() - p.log())).sum()


def acr_anchor_distances(estimate: Tensor, prior: Tensor) -> Tensor:
    """Symmetric KL of the unlabeled estimate to ACR's three anchors: consistent (the labeled prior), uniform,
    reversed (the prior flipped).

    >>> acr_anchor_distances(torch.tensor([0.8, 0.2]), torch.tensor([0.8, 0.2]))[0]
    tensor(0.)
    """
    uniform = torch.full_like(prior, 1.0 / len(prior))
    return torch.stack([symmetric_kl(estimate, a) for a in (prior, uniform, prior.flip(0))])


def acr_tau(mean_distances: Tensor, tau_max: float, tau_min: float = 0.0) -> Tensor:
    """ACR's pseudo-label adjustment strength ``tau_min + (tau_max - tau_min) * softmax(d)[consistent]``.

    The further the unlabeled estimate is from the labeled (consistent) profile, the larger tau: a reversed
    unlabeled set gets nearly ``tau_max``, a consistent one little adjustment.

    >>> acr_tau(torch.tensor([0., 0., 0.]), 2.0)
    tensor(0.6667)
    >>> round(float(acr_tau(torch.tensor([3., 1., 0.]), 2.0)), 4)
    1.6876
    """
    return tau_min + (tau_max - tau_min) * torch.softmax(mean_distances, dim=0)[0]


def accepted_histogram(pseudo: Tensor, mask: Tensor, num_classes: int) -> Tensor:
    """Counts of accepted pseudo-labels per class (scatter_add: no host sync).

    >>> accepted_histogram(torch.tensor([0, 0, 2, 1]), torch.tensor([1., 1., 1., 0.]), 3)
    tensor([2., 0., 1.])
    """
    return torch.zeros(num_classes, device=pseudo.device).scatter_add_(0, pseudo, mask.float())
