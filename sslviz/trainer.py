"""The FixMatch training loop with imbalance mitigations, runnable without Streamlit.

One function, ``train``, reads top to bottom like the algorithm: sample, weak
view, pseudo-labels, strong view, losses, update, then (every ``log_every``
steps) hand a metrics record to ``on_log``. Storage, checkpoint placement and
stop requests belong to the caller (worker, CLI, tests).

Metrics accumulate on the training device with ``index_add_`` (no host sync)
and are copied to the host once per log interval.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from . import augment, techniques
from .config import TrainConfig
from .data import Dataset, default_counts, load_dataset
from .meter import IntervalMeter
from .models import build_model, default_model_name
from .splits import Split, make_split, split_frame

SNAPSHOT_GRID = 60  # decision-region resolution for 2-D datasets
SNAPSHOT_POINTS = 400  # unlabeled points drawn in a 2-D snapshot


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Prepared:
    """A dataset with its imbalanced split, as a run sees it."""

    dataset: Dataset
    split: Split
    n1: int
    m1: int
    gamma_u: float


def prepare(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None, *, dataset: Dataset | None = None) -> Prepared:
    """Load the dataset (unless given, e.g. from a UI cache) and build the split.

    Raises DatasetError / SplitError with user-facing text.
    """
    dataset = dataset if dataset is not None else load_dataset(cfg.dataset, cache_dir)
    n1_default, m1_default = default_counts(dataset)
    n1 = cfg.n1 if cfg.n1 is not None else n1_default
    m1 = cfg.m1 if cfg.m1 is not None else m1_default
    gamma_u = cfg.gamma_u if cfg.gamma_u is not None else cfg.gamma
    split = make_split(
        dataset.y_train, dataset.num_classes, n1=n1, gamma=cfg.gamma, m1=m1, gamma_u=gamma_u,
        shape=cfg.unlabeled_shape, seed=cfg.seed, class_names=dataset.class_names,
    )
    return Prepared(dataset, split, n1, m1, gamma_u)


def preview_split(cfg: TrainConfig, cache_dir: str | os.PathLike | None = None, *,
                  dataset: Dataset | None = None) -> pd.DataFrame:
    """Per-class labeled / unlabeled / test counts of ``cfg``'s split (long format), before any training."""
    p = prepare(cfg, cache_dir, dataset=dataset)
    return split_frame(p.split, p.dataset.y_test, p.dataset.class_names)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("The 'device' parameter is 'cuda' but no CUDA GPU is available here; use 'auto' or 'cpu'.")
    return torch.device(name)


def run_info(p: Prepared, model_name: str, device: torch.device) -> dict:
    """What the dashboard needs to label a run's charts."""
    ds = p.dataset
    return {
        "class_names": list(ds.class_names),
        "labeled_counts": p.split.labeled_counts.tolist(),
        "unlabeled_counts": p.split.unlabeled_counts.tolist(),
        "test_counts": np.bincount(ds.y_test, minlength=ds.num_classes).tolist(),
        "kind": ds.kind,
        "model": model_name,
        "device": str(device),
        "n1": p.n1,
        "m1": p.m1,
        "gamma_u": p.gamma_u,
    }


def _views(x: torch.Tensor, kind: str, hflip: bool, strength: torch.Tensor | None, gen: torch.Generator):
    """Weak view (strength None) or strong view with per-sample strength, for images or points."""
    if kind == "points":
        sigma = augment.WEAK_POINT_SIGMA if strength is None else augment.STRONG_POINT_SIGMA * strength
        return augment.jitter_points(x, sigma, generator=gen)
    x = augment.to_float(x)
    if strength is None:
        return augment.weak_images(x, hflip=hflip, generator=gen)
    return augment.strong_images(x, strength, hflip=hflip, generator=gen)


def _plain(x: torch.Tensor, kind: str) -> torch.Tensor:
    return x if kind == "points" else augment.to_float(x)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, kind: str, batch: int = 1024) -> torch.Tensor:
    """Softmax probabilities for ``x`` (on the model's device) in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([F.softmax(model(_plain(x[i:i + batch], kind)).float(), dim=1) for i in range(0, len(x), batch)])
    model.train(was_training)
    return out


def evaluate(model, x_test, y_test: np.ndarray, num_classes: int, kind: str) -> dict:
    """Test accuracy, balanced accuracy, per-class recall and confusion matrix (rows = true class)."""
    pred = predict(model, x_test, kind).argmax(1).cpu().numpy()
    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
        "recall": recall_score(y_test, pred, labels=labels, average=None, zero_division=0).tolist(),
        "confusion": confusion_matrix(y_test, pred, labels=labels).tolist(),
    }


def snapshot_2d(model, x_unlabeled, y_unlabeled, thresholds, kind: str, gen_seed: int) -> dict:
    """Decision regions on a grid and a sample of unlabeled points with their pseudo-labels (2-D data only)."""
    pts = x_unlabeled
    lo = pts.min(0).values.cpu() - 0.5
    hi = pts.max(0).values.cpu() + 0.5
    xs = torch.linspace(float(lo[0]), float(hi[0]), SNAPSHOT_GRID)
    ys = torch.linspace(float(lo[1]), float(hi[1]), SNAPSHOT_GRID)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(pts.device)
    regions = predict(model, grid, kind).argmax(1).reshape(SNAPSHOT_GRID, SNAPSHOT_GRID)
    rng = np.random.default_rng(gen_seed)
    pick = torch.as_tensor(rng.choice(len(pts), size=min(SNAPSHOT_POINTS, len(pts)), replace=False), device=pts.device)
    probs = predict(model, pts[pick], kind)
    conf, pl = probs.max(1)
    accepted = conf >= thresholds[pl]
    rows = torch.stack([pts[pick, 0], pts[pick, 1], pl.float(), conf, accepted.float(), y_unlabeled[pick].float()], 1)
    return {
        "extent": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])],
        "grid": SNAPSHOT_GRID,
        "regions": regions.cpu().tolist(),
        "points": [[round(v, 4) for v in r] for r in rows.cpu().tolist()],
    }


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    # As in FixMatch: no weight decay on biases and BatchNorm parameters.
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train(
    cfg: TrainConfig,
    *,
    on_log: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    cache_dir: str | os.PathLike | None = None,
    prepared: Prepared | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Run FixMatch with the configured mitigations; returns a summary dict.

    ``on_log(record)`` receives every ``log_every`` steps a dict with ``step``,
    ``wall``, ``scalars``, ``classes`` and ``pseudo_confusion``, plus ``eval``
    (and ``snapshot`` for 2-D data) every ``eval_every`` steps. ``should_stop()``
    is polled at each log interval; when it returns True the loop checkpoints
    and returns with status "stopped". With ``resume`` the loop restarts from
    ``checkpoint_path``.
    """
    # -- data, model, optimiser -------------------------------------------------
    p = prepared or prepare(cfg, cache_dir)
    ds, split = p.dataset, p.split
    K, kind = ds.num_classes, ds.kind
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model_name = default_model_name(ds.input_shape, device.type) if cfg.model == "auto" else cfg.model
    model = build_model(model_name, input_shape=ds.input_shape, num_classes=K).to(device)
    channels_last = kind == "image"  # faster convolutions on both CPU and CUDA (bench/RESULTS.md)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema_model = copy.deepcopy(model) if cfg.ema_decay > 0 else None
    eval_model = ema_model if ema_model is not None else model
    optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    forward = torch.compile(model) if cfg.compile else model
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    # Everything the loop touches lives on the device: images stay uint8 until augmented.
    def on_device(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device)

    x_l, y_l = on_device(ds.x_train[split.labeled_idx]), on_device(ds.y_train[split.labeled_idx])
    x_u, y_u = on_device(ds.x_train[split.unlabeled_idx]), on_device(ds.y_train[split.unlabeled_idx])
    x_test = on_device(ds.x_test)
    n_l, n_u = len(x_l), len(x_u)
    B, uB = cfg.batch_size, (cfg.mu * cfg.batch_size if n_u else 0)  # no unlabeled data: supervised only

    # Per-class constants of the mitigations.
    counts_l = torch.as_tensor(split.labeled_counts, dtype=torch.float32, device=device)
    sup_weights = techniques.class_weights(counts_l, cfg.class_weighting, cfg.effective_beta)
    log_prior = techniques.log_prior(counts_l)
    unsup_scale = techniques.unsup_class_scale(counts_l, cfg.unsup_class_alpha)
    aug_mult = augment.class_strength_multiplier(counts_l, cfg.aug_class_alpha, cfg.aug_max_multiplier).to(device)
    p_target = counts_l / counts_l.sum() if cfg.dist_align == "labeled" else torch.full((K,), 1.0 / K, device=device)

    # Mutable technique state (checkpointed).
    state = {
        # DA running mean of unlabeled predictions; starting at the target makes early DA the identity.
        "p_model": p_target.clone(),
        "p_hat": torch.full((K,), 1.0 / K, device=device),  # DebiasPL running mean
        "fm_global": torch.tensor(1.0 / K, device=device),  # FreeMatch tau_t
        "fm_class": torch.full((K,), 1.0 / K, device=device),  # FreeMatch p_t
        "flex_pred": torch.full((n_u,), -1, dtype=torch.long, device=device),  # FlexMatch per-sample class
    }
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    start, wall0 = 0, 0.0
    if resume:
        ckpt = load_checkpoint(checkpoint_path)
        model.load_state_dict(ckpt["model"])
        if ema_model is not None:
            ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = {k: v.to(device) for k, v in ckpt["state"].items()}
        if ckpt.get("device", device.type) == device.type:
            gen.set_state(ckpt["generator"])
        else:  # a CUDA generator state does not fit a CPU generator (and back): a fresh, still seeded stream
            gen.manual_seed(cfg.seed + int(ckpt["step"]))
        start, wall0 = int(ckpt["step"]), float(ckpt["wall"])

    def checkpoint(step: int) -> None:
        if checkpoint_path is None:
            return
        save_checkpoint(checkpoint_path, {
            "step": step,
            "wall": time.time() - t0,
            "model": model.state_dict(),
            "ema": ema_model.state_dict() if ema_model is not None else {},
            "optimizer": optimizer.state_dict(),
            "state": {k: v.cpu() for k, v in state.items()},
            "generator": gen.get_state(),
            "device": device.type,
            "config": cfg.to_yaml(),
        })

    def thresholds_at(step: int) -> torch.Tensor:
        if cfg.threshold_schedule == "flexmatch":
            tau = techniques.flexmatch_thresholds(cfg.threshold, state["flex_pred"], K, cfg.flexmatch_warmup)
        elif cfg.threshold_schedule == "freematch":
            tau = techniques.freematch_thresholds(state["fm_global"], state["fm_class"])
        else:
            tau = techniques.fixed_thresholds(cfg.threshold, K, device)
        if cfg.threshold_class_alpha > 0:
            tau = techniques.frequency_scaled_thresholds(tau, counts_l, cfg.threshold_class_alpha, cfg.threshold_min)
        return techniques.warmup_thresholds(tau, step, cfg.threshold_warmup_steps)

    meter = IntervalMeter(K, device)  # device-side sums, flushed every log interval
    t0 = time.time() - wall0  # wall time continues across resumes
    model.train()
    thresholds = thresholds_at(start)
    status = "finished"
    step = start
    for step in range(start + 1, cfg.steps + 1):
        # -- learning rate ---------------------------------------------------
        lr = techniques.cosine_lr(step - 1, cfg.steps, cfg.lr)  # steps count from 1; the schedule from 0
        for group in optimizer.param_groups:
            group["lr"] = lr

        # -- sample a labeled batch and an unlabeled batch (with replacement) --
        il = torch.randint(n_l, (B,), generator=gen, device=device)
        xl, yl = x_l[il], y_l[il]
        # Labeled samples of rare classes get extra augmentation when aug_class_alpha > 0: strength
        # aug_strength * (multiplier - 1), so the head class (multiplier 1) keeps the plain weak view.
        l_strength = None
        if cfg.aug_class_alpha > 0:
            l_strength = (cfg.aug_strength * (aug_mult[yl] - 1)).clamp(max=cfg.aug_strength)
        xl = _views(xl, kind, ds.hflip, l_strength, gen)

        if uB:
            iu = torch.randint(n_u, (uB,), generator=gen, device=device)
            xu, yu = x_u[iu], y_u[iu]
            # -- pseudo-labels from the weak view --------------------------------
            xu_w = _views(xu, kind, ds.hflip, None, gen)
            with torch.no_grad(), amp:
                logits_w = forward(xu_w.contiguous(memory_format=torch.channels_last) if channels_last else xu_w).float()
            probs = F.softmax(logits_w, dim=1)
            if cfg.debias_tau > 0:
                state["p_hat"] = techniques.ema(state["p_hat"], probs.mean(0), cfg.dist_align_momentum)
                probs = techniques.debiased_probs(logits_w, state["p_hat"], cfg.debias_tau)
            if cfg.dist_align != "none":
                state["p_model"] = techniques.ema(state["p_model"], probs.mean(0), cfg.dist_align_momentum)
                probs = techniques.distribution_alignment(probs, p_target, state["p_model"])
            if cfg.threshold_schedule == "freematch":
                state["fm_global"], state["fm_class"] = techniques.freematch_update(
                    state["fm_global"], state["fm_class"], probs, cfg.freematch_momentum)
            thresholds = thresholds_at(step - 1)
            pseudo, conf, mask = techniques.confidence_mask(probs, thresholds)
            if cfg.threshold_schedule == "flexmatch":
                # Remember each sample's latest prediction that clears the base threshold.
                state["flex_pred"][iu] = torch.where(conf > cfg.threshold, pseudo, state["flex_pred"][iu])
            # -- strong view, harder for (pseudo-)rare classes ---------------------
            strength = augment.sample_strength(pseudo, cfg.aug_strength, aug_mult)
            xu_s = _views(xu, kind, ds.hflip, strength, gen)
            inputs = torch.cat([xl, xu_s])
        else:
            inputs = xl
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        # -- losses ----------------------------------------------------------
        with amp:
            logits = forward(inputs).float()
        logits_l = logits[:B]
        ce_l = F.cross_entropy(techniques.logit_adjust(logits_l, log_prior, cfg.logit_adjust_tau), yl, reduction="none")
        loss_sup = (ce_l * sup_weights[yl]).mean()
        if uB:
            ce_u = F.cross_entropy(logits[B:], pseudo, reduction="none")
            loss_unsup = (ce_u * mask * unsup_scale[pseudo]).mean()
        else:
            loss_unsup = torch.zeros((), device=device)
        loss = loss_sup + cfg.lambda_u * loss_unsup

        # -- update ----------------------------------------------------------
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema_model is not None:
            decay = techniques.ema_model_decay(step, cfg.ema_decay)
            with torch.no_grad():
                ema_p, p_ = list(ema_model.parameters()), list(model.parameters())
                torch._foreach_lerp_(ema_p, p_, 1.0 - decay)
                for eb, b in zip(ema_model.buffers(), model.buffers()):
                    eb.copy_(b)  # BatchNorm statistics are already running averages: copy, do not average

        # -- accumulate metrics on the device ----------------------------------
        zero = torch.zeros((), device=device)
        losses = torch.stack([loss.detach(), loss_sup.detach(), loss_unsup.detach(), mask.mean() if uB else zero])
        if uB:
            meter.update(losses, pseudo, conf, mask, yu)
        else:
            meter.update(losses)

        # -- log: one host sync per interval ---------------------------------
        last = step == cfg.steps
        if step % cfg.log_every and not last:
            continue
        record = {"step": step, "wall": time.time() - t0, **meter.flush(thresholds)}
        record["scalars"]["lr"] = lr
        if not np.isfinite(record["scalars"]["loss"]):
            raise Diverged(f"Training diverged at step {step}: the loss became {record['scalars']['loss']}. "
                           "Lower lr or lambda_u, or raise the threshold.")
        # Also evaluate at a new run's first log step, so its test charts appear at once.
        if step % cfg.eval_every == 0 or last or step == cfg.log_every:
            record["eval"] = final = evaluate(eval_model, x_test, ds.y_test, K, kind)
            if kind == "points" and n_u:
                record["snapshot"] = snapshot_2d(eval_model, x_u, y_u, thresholds, kind, cfg.seed)
        if on_log is not None:
            on_log(record)
        if progress is not None:
            progress(step)
        saved = step % cfg.checkpoint_every == 0 or last
        if saved:
            checkpoint(step)
        if should_stop is not None and not last and should_stop():
            if "eval" not in record:  # a stopped run's final test metrics are recorded too
                final = evaluate(eval_model, x_test, ds.y_test, K, kind)
                if on_log is not None:
                    on_log({"step": step, "wall": time.time() - t0, "eval": final})
            if not saved:
                checkpoint(step)
            status = "stopped"
            break

    if step == start:  # nothing left to train (resumed a finished run)
        final = evaluate(eval_model, x_test, ds.y_test, K, kind)
    return {"status": status, "step": step, "wall": time.time() - t0, "model": model_name, "device": str(device),
            **final}
