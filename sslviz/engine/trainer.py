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
import io
import os
import pickle
import re
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, recall_score

from . import augment, files, registry, techniques
from .technique import PSEUDO_MEAN
from .config import RetiredKeyWarning, TrainConfig
from .meter import IntervalMeter
from .device import model_name, resolve_device
from .models import build_model
from .prepare import Prepared, prepare

SNAPSHOT_GRID = 60  # decision-region resolution for 2-D datasets
SNAPSHOT_POINTS = 400  # unlabeled points drawn in a 2-D snapshot


class Diverged(RuntimeError):
    """The loss became NaN or infinite."""


def _views(x: torch.Tensor, kind: str, hflip: bool, strength: torch.Tensor | None, gen: torch.Generator,
           synonyms: torch.Tensor | None = None):
    """Weak view (strength None) or strong view with per-sample strength, for images, points or text (``synonyms``:
    the dataset's synonym table on the device)."""
    if kind == "points":
        return augment.jitter_points(x, augment.point_sigma(strength), generator=gen)
    if kind == "text":
        if strength is None:
            return augment.weak_text(x, generator=gen)
        return augment.strong_text(x, strength, synonyms, generator=gen)
    x = augment.to_float(x)
    if strength is None:
        return augment.weak_images(x, hflip=hflip, generator=gen)
    return augment.strong_images(x, strength, hflip=hflip, generator=gen)


def _plain(x: torch.Tensor, kind: str) -> torch.Tensor:
    return augment.to_float(x) if kind == "image" else x


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, kind: str, tech: registry.Pipeline | None = None,
            batch: int = 1024) -> torch.Tensor:
    """Softmax probabilities for ``x`` (on the model's device) in eval mode, from the logits ``tech`` predicts
    with (a technique such as ABC predicts with a head of its own)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        feats = model.backbone(_plain(x[i:i + batch], kind))
        logits = model.fc(feats)
        if tech is not None:
            logits = tech("eval_logits", logits, feats, model)
        out.append(F.softmax(logits.float(), dim=1))
    model.train(was_training)
    return torch.cat(out)


def evaluate(model, x, y: np.ndarray, num_classes: int, kind: str, tech: registry.Pipeline | None = None) -> dict:
    """Accuracy, balanced accuracy, per-class recall and confusion matrix (rows = true class) on ``(x, y)``."""
    pred = predict(model, x, kind, tech).argmax(1).cpu().numpy()
    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
    }


def snapshot_2d(model, x_unlabeled, y_unlabeled, thresholds, kind: str, gen_seed: int,
                tech: registry.Pipeline | None = None) -> dict:
    """Decision regions on a grid and a sample of unlabeled points with their pseudo-labels (2-D data only)."""
    pts = x_unlabeled
    lo = pts.min(0).values.cpu() - 0.5
    hi = pts.max(0).values.cpu() + 0.5
    xs = torch.linspace(float(lo[0]), float(hi[0]), SNAPSHOT_GRID)
    ys = torch.linspace(float(lo[1]), float(hi[1]), SNAPSHOT_GRID)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(pts.device)
    regions = predict(model, grid, kind, tech).argmax(1).reshape(SNAPSHOT_GRID, SNAPSHOT_GRID)
    rng = np.random.default_rng(gen_seed)
    pick = torch.as_tensor(rng.choice(len(pts), size=min(SNAPSHOT_POINTS, len(pts)), replace=False), device=pts.device)
    probs = predict(model, pts[pick], kind, tech)
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
    """Write atomically: a crash or a full disk mid-write leaves the previous checkpoint intact (``files.DiskFull``
    for a full disk, no temporary file left)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)  # serialised first: a full disk is then the file's own ENOSPC, not torch's "unexpected pos"
    files.write_atomically(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's tensors and numbers (``weights_only``: code named in the file is never run); a damaged file,
    or one that names code, raises :class:`CheckpointMismatch` saying so (torch's own message would advise
    loading it with ``weights_only=False``, which runs that code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        code = re.search(r"GLOBAL (\S+)", str(exc))
        if code:
            why = (f"it names Python code ({code.group(1)}), which no sslviz checkpoint holds: it was not written by "
                   "sslviz, or was altered. Nothing in it was run")
        else:  # never torch's own first line for a pickle: it suggests weights_only=False
            detail = type(exc).__name__ if isinstance(exc, pickle.UnpicklingError) or not str(exc) else str(exc)
            why = f"it is damaged or not a checkpoint ({detail.splitlines()[0]})"
        raise CheckpointMismatch(f"Checkpoint {path} cannot be loaded: {why}.") from None


def build_run(cfg: TrainConfig, p: Prepared, device: torch.device):
    """``(model name, model with the techniques' heads, Pipeline)`` for a run of ``cfg`` on ``p``'s split."""
    ds, split = p.dataset, p.split
    name = model_name(cfg.model, ds.input_shape, device.type)
    model = build_model(name, input_shape=ds.input_shape, num_classes=ds.num_classes).to(device)
    n_u = len(split.unlabeled_idx)
    counts = torch.as_tensor(split.labeled_counts, dtype=torch.float32, device=device)
    tech = registry.Pipeline(cfg, registry.Run(ds.num_classes, device, counts, n_u, cfg.steps))
    tech.attach_heads(model)
    return name, model, tech


CHECKPOINT_FORMAT = 2  # 2: technique state by technique name, validation split; 1 (unmarked): before


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
    """Run FixMatch with the configured techniques; returns a summary dict.

    ``on_log(record)`` receives every ``log_every`` steps a dict with ``step``,
    ``wall``, ``scalars``, ``classes``, ``pseudo_confusion`` and ``technique``
    (each active technique's live state), plus ``eval`` = ``{"val": ...}``
    every ``eval_every`` steps and ``{"val": ..., "test": ...}`` at the end
    (``snapshot`` too for 2-D data). The test set is evaluated only when the
    run ends (finished or stopped): choices are made on validation.
    ``should_stop()`` is polled at each log interval; when it returns True the
    loop checkpoints and returns with status "stopped". With ``resume`` the
    loop restarts from ``checkpoint_path``.
    """
    # -- data, model, optimiser -------------------------------------------------
    p = prepared or prepare(cfg, cache_dir)
    ds, split = p.dataset, p.split
    K, kind = ds.num_classes, ds.kind
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    n_l, n_u = len(split.labeled_idx), len(split.unlabeled_idx)
    B, uB = cfg.batch_size, (cfg.mu * cfg.batch_size if n_u else 0)  # no unlabeled data: supervised only
    # The techniques of this run, called phase by phase below (registry.PHASES); their heads join the model
    # before the optimiser and the EMA copy are made.
    model_name, model, tech = build_run(cfg, p, device)
    channels_last = kind == "image"  # faster convolutions on both CPU and CUDA (bench/RESULTS.md)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema_model = copy.deepcopy(model) if cfg.ema_decay > 0 else None
    eval_model = ema_model if ema_model is not None else model
    optimizer = torch.optim.SGD(_param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    backbone = torch.compile(model.backbone) if cfg.compile else model.backbone
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    # Everything the loop touches lives on the device: images stay uint8 until augmented.
    def on_device(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, device=device)

    x_l, y_l = on_device(ds.x_train[split.labeled_idx]), on_device(ds.y_train[split.labeled_idx])
    x_u, y_u = on_device(ds.x_train[split.unlabeled_idx]), on_device(ds.y_train[split.unlabeled_idx])
    eval_sets = {"val": (on_device(ds.x_val), ds.y_val), "test": (on_device(ds.x_test), ds.y_test)}
    synonyms = on_device(ds.synonyms) if kind == "text" else None
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    start, wall0 = 0, 0.0
    if resume:
        ckpt = load_checkpoint(checkpoint_path)
        check_checkpoint(ckpt, cfg)
        model.load_state_dict(ckpt["model"])
        if ema_model is not None:
            ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        tech.load_state_dict(ckpt["techniques"])
        if ckpt.get("device", device.type) == device.type:
            gen.set_state(ckpt["generator"])
        else:  # a CUDA generator state does not fit a CPU generator (and back): a fresh, still seeded stream
            gen.manual_seed(cfg.seed + int(ckpt["step"]))
        start, wall0 = int(ckpt["step"]), float(ckpt["wall"])

    def checkpoint(step: int) -> None:
        if checkpoint_path is None:
            return
        save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "wall": time.time() - t0,
            "model": model.state_dict(),
            "ema": ema_model.state_dict() if ema_model is not None else {},
            "optimizer": optimizer.state_dict(),
            "techniques": tech.state_dict(),
            "generator": gen.get_state(),
            "device": device.type,
            "config": cfg.to_yaml(),
        })

    def evaluate_on(*names: str) -> dict:
        return {n: evaluate(eval_model, eval_sets[n][0], eval_sets[n][1], K, kind, tech) for n in names}

    meter = IntervalMeter(K, device)  # device-side sums, flushed every log interval
    t0 = time.time() - wall0  # wall time continues across resumes
    model.train()
    thresholds = torch.full((K,), cfg.threshold, device=device)
    status, final = "finished", {}
    step = start
    for step in range(start + 1, cfg.steps + 1):
        # -- learning rate ---------------------------------------------------
        lr = techniques.cosine_lr(step - 1, cfg.steps, cfg.lr)  # steps count from 1; the schedule from 0
        for group in optimizer.param_groups:
            group["lr"] = lr

        # -- sample a labeled batch and an unlabeled batch (with replacement) --
        il = torch.randint(n_l, (B,), generator=gen, device=device)
        xl, yl = x_l[il], y_l[il]
        xl = _views(xl, kind, ds.hflip, None, gen, synonyms)  # one weak view for every class: no label in the view

        if uB:
            # -- after a technique's epoch: the model's predictions on the whole unlabeled set (SAW, Adsh) ----
            tech.on_pass(step, lambda: predict(model, x_u, kind))
            iu = torch.randint(n_u, (uB,), generator=gen, device=device)
            xu, yu = x_u[iu], y_u[iu]
            # -- pseudo-labels from the weak view --------------------------------
            xu_w = _views(xu, kind, ds.hflip, None, gen, synonyms)
            with torch.no_grad(), amp:
                feats_w = backbone(xu_w.contiguous(memory_format=torch.channels_last) if channels_last else xu_w)
                logits_w = model.fc(feats_w).float()
            u = registry.Unlabeled(iu, logits_w, F.softmax(logits_w, dim=1), feats_w)
            u.probs = tech("transform_probs", u.probs, u)
            thresholds = tech("thresholds", torch.full((K,), cfg.threshold, device=device), u, step - 1)
            u.pseudo, u.conf, u.mask = techniques.confidence_mask(u.probs, thresholds)
            tech("observe", None, u)
            # -- strong view -----------------------------------------------------
            strength = tech("strong_strength", torch.full((uB,), cfg.aug_strength, device=device), u.pseudo)
            xu_s = _views(xu, kind, ds.hflip, strength, gen, synonyms)
            inputs = torch.cat([xl, xu_s])
        else:
            inputs = xl
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        # -- losses ----------------------------------------------------------
        with amp:
            feats = backbone(inputs)
            logits = model.fc(feats).float()
        ce_l = F.cross_entropy(tech("sup_logits", logits[:B], yl), yl, reduction="none")
        loss_sup = (ce_l * tech("sup_weights", torch.ones_like(ce_l), yl)).mean()
        batch = registry.Batch(yl, logits[:B], feats[:B], model=model, step=step)
        if uB:
            batch.u, batch.logits_s, batch.feats_s = u, logits[B:], feats[B:]
            ce_u = F.cross_entropy(tech("unsup_logits", batch.logits_s, u), u.pseudo, reduction="none")
            loss_unsup = (ce_u * u.mask * tech("unsup_weights", torch.ones_like(ce_u), u)).mean()
        else:
            loss_unsup = torch.zeros((), device=device)
        loss = tech("extra_loss", loss_sup + cfg.lambda_u * loss_unsup, batch)

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
        losses = torch.stack([loss.detach(), loss_sup.detach(), loss_unsup.detach(), u.mask.mean() if uB else zero])
        if uB:
            meter.update(losses, u.pseudo, u.conf, u.mask, yu, u.probs)
        else:
            meter.update(losses)

        # -- log: one host sync per interval ---------------------------------
        last = step == cfg.steps
        if step % cfg.log_every and not last:
            continue
        record = {"step": step, "wall": time.time() - t0, **meter.flush(thresholds)}
        # The mean distribution pseudo-labels were read from, after every transform: what DA and DebiasPL
        # actually produced, and for plain FixMatch the drift toward the head classes.
        pseudo_mean = record.pop("pseudo_mean")
        record["technique"] = _host(tech("metrics", {} if pseudo_mean is None else {PSEUDO_MEAN: pseudo_mean}))
        record["scalars"]["lr"] = lr
        if not np.isfinite(record["scalars"]["loss"]):
            raise Diverged(f"Training diverged at step {step}: the loss became {record['scalars']['loss']}. "
                           "Lower lr or lambda_u, or raise the threshold.")
        # Validate every eval_every steps and at a new run's first log step (its charts appear at once); the test
        # set only when the run ends, finished or stopped.
        stopping = should_stop is not None and not last and should_stop()
        if step % cfg.eval_every == 0 or last or stopping or step == cfg.log_every:
            record["eval"] = final = evaluate_on(*(("val", "test") if last or stopping else ("val",)))
            if kind == "points" and n_u:
                record["snapshot"] = snapshot_2d(eval_model, x_u, y_u, thresholds, kind, cfg.seed, tech)
        if on_log is not None:
            on_log(record)
        if progress is not None:
            progress(step)
        if step % cfg.checkpoint_every == 0 or last or stopping:
            checkpoint(step)
        if stopping:
            status = "stopped"
            break

    if step == start:  # nothing left to train (resumed a finished run)
        final = evaluate_on("val", "test")
    return {"status": status, "step": step, "wall": time.time() - t0, "model": model_name, "device": str(device),
            **{f"{split_}_{k}": v for split_, m in final.items() for k, v in m.items()}}


def evaluate_checkpoint(cfg: TrainConfig, checkpoint_path: str | os.PathLike, splits=("test",),
                        cache_dir: str | os.PathLike | None = None) -> dict:
    """Evaluate a run's latest checkpoint (its EMA model when it has one) on ``splits``, on demand.

    Returns a record ``{"step", "wall", "eval": {split: metrics}}`` at the checkpoint's step, for
    ``RunStore.log_metrics``; the run itself, running or not, is not touched.
    """
    ckpt = load_checkpoint(checkpoint_path)
    check_checkpoint(ckpt, cfg)
    p = prepare(cfg, cache_dir)
    ds = p.dataset
    device = resolve_device(cfg.device)
    _, model, tech = build_run(cfg, p, device)  # a technique's head (ABC's) may be what predictions are read from
    model.load_state_dict(ckpt["ema"] if ckpt["ema"] else ckpt["model"])
    tech.load_state_dict(ckpt["techniques"])
    sets = {"val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}
    return {"step": int(ckpt["step"]), "wall": float(ckpt["wall"]),
            "eval": {s: evaluate(model, torch.as_tensor(sets[s][0], device=device), sets[s][1], ds.num_classes,
                                 ds.kind, tech) for s in splits}}


def _host(metrics: dict) -> dict:
    """Technique metrics as plain floats (vectors as lists) for the record; one copy per interval."""
    return {name: (v.float().cpu().tolist() if torch.is_tensor(v) else v) for name, v in metrics.items()}


class CheckpointMismatch(ValueError):
    """A checkpoint that this run cannot continue from; the message says why and what to do."""


def check_checkpoint(ckpt: dict, cfg: TrainConfig) -> None:
    """Raise CheckpointMismatch unless ``ckpt`` was written by this checkpoint format for ``cfg``."""
    fmt = ckpt.get("format", 1)
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(
            f"The checkpoint at step {ckpt.get('step')} was written by an older sslviz (checkpoint format {fmt}, "
            f"this version reads {CHECKPOINT_FORMAT}): it predates the validation split, so its labeled/unlabeled "
            "split cannot be reproduced and it cannot resume. Start a new run with its config instead.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RetiredKeyWarning)
        saved = TrainConfig.from_dict(yaml.safe_load(ckpt["config"]))
    if saved != cfg:
        diff = [f"{k}={v!r} (checkpoint: {saved.to_dict()[k]!r})" for k, v in cfg.to_dict().items()
                if saved.to_dict()[k] != v]
        raise CheckpointMismatch(f"The checkpoint belongs to another config ({', '.join(diff[:3])}); it cannot "
                                 "resume this run.")
