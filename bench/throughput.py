"""FixMatch training-step throughput: a conventional PIL + DataLoader pipeline vs sslviz's on-device path.

(a) conventional, as FixMatch-pytorch / USB do it: uint8 arrays -> PIL images,
    torchvision transforms per sample (RandomHorizontalFlip, RandomCrop with
    reflect padding, RandAugment(num_ops=2) + Cutout for the strong view,
    ToTensor, Normalize) in a DataLoader with ``num_workers = cpu count``,
    fp32, ``.to(device)`` every step.
(b) sslviz: ``sslviz.engine.trainer.train`` itself. Data lives on the device as uint8,
    indices are sampled and gathered there and augmented batched
    (``sslviz.augment``); bf16 autocast + channels_last on CUDA. Steps are timed
    through its ``progress`` callback (called every ``log_every`` steps), so the
    figure includes sslviz's per-interval metric sync.

Both do the same optimisation step: weak view forward without grad for the
pseudo-labels, then forward + backward of ``[labeled, strong]``, nesterov SGD
with cosine lr, EMA of weights. Steps/s are measured after a warm-up (worker
start-up, allocator, first-call overheads excluded).

    python bench/throughput.py                      # CPU: cnn_digits + cnn32; CUDA cases if a GPU is present
    python bench/throughput.py --device cuda --steps 300
    python bench/throughput.py --device cpu --models wrn28_2 --steps 3 --warmup 1   # slow: ~17 s/step on 2 cores
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sslviz.engine import techniques  # noqa: E402
from sslviz.engine.config import from_preset  # noqa: E402
from sslviz.engine.data import Dataset, load_dataset  # noqa: E402
from sslviz.engine.models import build_model  # noqa: E402
from sslviz.engine.splits import make_split  # noqa: E402
from sslviz.runs.store import home_dir  # noqa: E402
from sslviz.engine.prepare import Prepared  # noqa: E402
from sslviz.engine.trainer import _param_groups, train  # noqa: E402

# -- knobs ---------------------------------------------------------------------
DEFAULT_STEPS = {  # measured steps after warm-up, per (device type, model)
    ("cpu", "cnn_digits"): 60,
    ("cpu", "cnn32"): 20,
    ("cpu", "wrn28_2"): 3,  # ~17 s/step on 2 cores: only when asked for
    ("cuda", "cnn_digits"): 300,
    ("cuda", "cnn32"): 300,
    ("cuda", "wrn28_2"): 300,
}
DEFAULT_MODELS = {"cpu": ("cnn_digits", "cnn32"), "cuda": ("wrn28_2", "cnn_digits")}
SYNTH_PER_CLASS = 1000  # synthetic CIFAR-like training images per class (uint8 noise)
TEST_KEEP = 64  # the trainer evaluates at its last step: keep that cheap
THRESHOLD = 0.95
# ------------------------------------------------------------------------------


def synthetic_cifar(seed: int = 0) -> Dataset:
    """Random uint8 32x32 RGB images, 10 classes: data content barely changes step cost."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(10), SYNTH_PER_CLASS)
    x = rng.integers(0, 256, (len(y), 3, 32, 32), dtype=np.uint8)
    xt = rng.integers(0, 256, (TEST_KEEP, 3, 32, 32), dtype=np.uint8)
    return Dataset("synthetic-cifar", "image", x, y, xt, np.arange(TEST_KEEP) % 10,
                   tuple(f"c{k}" for k in range(10)), hflip=True,
                   x_val=xt.copy(), y_val=np.arange(TEST_KEEP) % 10)  # the trainer validates as it goes


def prepared_for(model: str, data: str | None) -> Prepared:
    """Dataset + imbalanced split for one model (digits for cnn_digits, CIFAR-like for 32x32 models)."""
    if model == "cnn_digits":
        ds, n1, m1, gamma = load_dataset("digits"), 50, 40, 10.0
    elif data:
        ds, n1, m1, gamma = load_dataset(data, cache_dir=dataset_cache_dir()), 1500, 3000, 100.0
    else:
        ds, n1, m1, gamma = synthetic_cifar(), 300, 600, 10.0
    ds = dataclasses.replace(ds, x_test=ds.x_test[:TEST_KEEP], y_test=ds.y_test[:TEST_KEEP],
                             x_val=ds.x_val[:TEST_KEEP], y_val=ds.y_val[:TEST_KEEP])
    split = make_split(ds.y_train, ds.num_classes, n1=n1, gamma=gamma, m1=m1, gamma_u=gamma,
                       shape="consistent", seed=0, class_names=ds.class_names)
    return Prepared(ds, split, n1, m1, gamma)


def dataset_cache_dir() -> Path:
    """Where decoded ImageFolder arrays are cached: ``$SSLVIZ_HOME/cache`` (as the worker does)."""
    return home_dir() / "cache"


# -- (a) conventional pipeline -----------------------------------------------------
def _cutout(img, fraction: float = 0.5):
    """FixMatch-style Cutout on a PIL image: grey square of side ``fraction * W`` at a uniform centre."""
    from PIL import ImageDraw

    w, h = img.size
    side = fraction * w
    x0, y0 = np.random.uniform(0, w), np.random.uniform(0, h)
    box = (int(max(0, x0 - side / 2)), int(max(0, y0 - side / 2)),
           int(min(w, x0 + side / 2)), int(min(h, y0 + side / 2)))
    img = img.copy()
    ImageDraw.Draw(img).rectangle(box, fill=127 if img.mode == "L" else (127, 127, 127))
    return img


class ConventionalData(torch.utils.data.Dataset):
    """uint8 ``(N, C, H, W)`` -> PIL -> torchvision transforms, one sample at a time (as USB / FixMatch-pytorch)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, hflip: bool, unlabeled: bool):
        from torchvision import transforms as T

        self.x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # HWC for PIL, as the reference loaders keep it
        self.y, self.unlabeled = y, unlabeled
        c, size = x.shape[1], x.shape[2]
        norm = T.Normalize((0.5,) * c, (0.25,) * c)
        weak = [T.RandomHorizontalFlip()] if hflip else []
        weak.append(T.RandomCrop(size, padding=int(0.125 * size), padding_mode="reflect"))
        self.weak = T.Compose([*weak, T.ToTensor(), norm])
        self.strong = T.Compose([*weak, T.RandAugment(num_ops=2), T.Lambda(_cutout), T.ToTensor(), norm])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        a = self.x[i]
        img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
        if self.unlabeled:
            return self.weak(img), self.strong(img), self.y[i]
        return self.weak(img), self.y[i]


def _loader(ds: ConventionalData, batch: int, n_batches: int, workers: int, pin: bool, seed: int):
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch * n_batches,
                                             generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                       pin_memory=pin, drop_last=True, persistent_workers=False,
                                       prefetch_factor=2 if workers else None)


def run_conventional(p: Prepared, model_name: str, device: torch.device, *, batch: int, mu: int,
                     warmup: int, steps: int, workers: int) -> float:
    """Steps/s of the conventional pipeline after ``warmup`` steps."""
    ds, split = p.dataset, p.split
    torch.manual_seed(0)
    model = build_model(model_name, input_shape=ds.input_shape, num_classes=ds.num_classes).to(device)
    ema = [t.detach().clone() for t in model.parameters()]
    opt = torch.optim.SGD(_param_groups(model, 5e-4), lr=0.03, momentum=0.9, nesterov=True)
    total = warmup + steps
    pin = device.type == "cuda"
    lab = _loader(ConventionalData(ds.x_train[split.labeled_idx], ds.y_train[split.labeled_idx], ds.hflip, False),
                  batch, total, workers, pin, 1)
    unl = _loader(ConventionalData(ds.x_train[split.unlabeled_idx], ds.y_train[split.unlabeled_idx], ds.hflip, True),
                  batch * mu, total, workers, pin, 2)
    model.train()
    t_start = None
    for step, ((xl, yl), (xw, xs, _)) in enumerate(zip(lab, unl), start=1):
        if step == warmup + 1:
            _sync(device)
            t_start = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = techniques.cosine_lr(step - 1, total, 0.03)
        xl, yl = xl.to(device, non_blocking=True), yl.to(device, non_blocking=True)
        xw, xs = xw.to(device, non_blocking=True), xs.to(device, non_blocking=True)
        with torch.no_grad():
            conf, pseudo = F.softmax(model(xw), dim=1).max(1)
            mask = (conf >= THRESHOLD).float()
        logits = model(torch.cat([xl, xs]))
        loss_u = (F.cross_entropy(logits[batch:], pseudo, reduction="none") * mask).mean()
        loss = F.cross_entropy(logits[:batch], yl) + loss_u
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 0.001)
        loss.item()  # the reference loops log loss.item() every step (AverageMeter)
    _sync(device)
    return steps / (time.perf_counter() - t_start)


# -- (b) sslviz ---------------------------------------------------------------
def run_sslviz(p: Prepared, model_name: str, device: torch.device, *, batch: int, mu: int,
               warmup: int, steps: int, log_every: int) -> float:
    """Steps/s of ``sslviz.engine.trainer.train`` between the progress call after ``warmup`` steps and the last interval."""
    warm = max(log_every, math.ceil(warmup / log_every) * log_every)
    measured = max(log_every, math.ceil(steps / log_every) * log_every)
    total = warm + measured + log_every  # the final interval also runs an eval: not timed
    cfg = from_preset("fixmatch", dataset=p.dataset.name, model=model_name, steps=total, batch_size=batch, mu=mu,
                      device=device.type, log_every=log_every, eval_every=log_every * (total // log_every + 1), seed=0)  # past the end: no eval
    stamps: dict[int, float] = {}

    def progress(step: int) -> None:
        _sync(device)  # the trainer syncs at each log anyway (metrics to host); this makes it explicit
        stamps[step] = time.perf_counter()

    train(cfg, prepared=p, progress=progress)
    return measured / (stamps[warm + measured] - stamps[warm])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- main ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu,cuda",
                    help="comma list of 'cpu' and/or 'cuda' (default cpu,cuda; cuda is skipped with a note when absent)")
    ap.add_argument("--models", default=None,
                    help="comma list of cnn_digits, cnn32, wrn28_2 (default: cnn_digits,cnn32 on CPU; "
                         "wrn28_2,cnn_digits on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per case (default per device/model)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps, not timed (default 10, 1 for CPU WRN)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate (a), (b) this many times; report median, min-max")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads of the training process (default: torch's; the sslviz worker "
                         "uses cpu_count // SSLVIZ_CPU_SLOTS, i.e. 1 on a 2-core machine)")
    ap.add_argument("--batch-size", type=int, default=64, help="labeled batch B")
    ap.add_argument("--mu", type=int, default=7, help="unlabeled batch is mu * B")
    ap.add_argument("--log-every", type=int, default=10, help="sslviz log interval (progress callback period)")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="(a) DataLoader workers (default cpu count)")
    ap.add_argument("--data", default=None, help="optional CIFAR-10 folder for the 32x32 models (default: random uint8)")
    return ap


def _spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:8.3f}" + (f"  [{min(values):.3f}-{max(values):.3f}]" if len(values) > 1 else "")


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"(a) workers {args.workers}, B={args.batch_size}, mu={args.mu}")
    results = []
    for dev_name in [d.strip() for d in args.device.split(",") if d.strip()]:
        if dev_name not in ("cpu", "cuda"):
            raise SystemExit(f"--device must list 'cpu' and/or 'cuda'. Got {dev_name!r} instead.")
        if dev_name == "cuda" and not torch.cuda.is_available():
            print("cuda: skipped, no CUDA GPU here. On a GPU machine run: "
                  "python bench/throughput.py --device cuda --repeats 2")
            continue
        device = torch.device(dev_name)
        if dev_name == "cuda":
            print(f"cuda: {torch.cuda.get_device_name(device)}")
        models = args.models.split(",") if args.models else DEFAULT_MODELS[dev_name]
        for model in models:
            steps = args.steps or DEFAULT_STEPS[(dev_name, model)]
            warmup = args.warmup if args.warmup is not None else (1 if (dev_name, model) == ("cpu", "wrn28_2") else 10)
            p = prepared_for(model, args.data)
            a, b = [], []
            for _ in range(args.repeats):
                a.append(run_conventional(p, model, device, batch=args.batch_size, mu=args.mu, warmup=warmup,
                                          steps=steps, workers=args.workers))
                b.append(run_sslviz(p, model, device, batch=args.batch_size, mu=args.mu, warmup=warmup,
                                    steps=steps, log_every=args.log_every))
            ratios = [y / x for x, y in zip(a, b)]
            row = {"device": dev_name, "model": model, "steps": steps, "a": a, "b": b, "ratio": ratios}
            results.append(row)
            print(f"{dev_name:4s} {model:10s} {steps:4d} steps  (a) conventional {_spread(a)} steps/s   "
                  f"(b) sslviz {_spread(b)} steps/s   (b)/(a) {_spread(ratios)}", flush=True)
    return results


if __name__ == "__main__":
    main()
