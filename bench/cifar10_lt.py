"""CIFAR-10-LT (gamma=100, N_1=1500, M_1=3000, consistent unlabeled): presets at a fixed step budget.

Reads a local CIFAR-10 folder (python-pickle layout, or an ImageFolder tree
``train/<class>/*``, ``test/<class>/*``); never downloads. Decoded ImageFolder
arrays are cached in ``--cache-dir`` so later runs skip decoding. Every preset
trains on the same split (same seed) for the same number of steps and is
evaluated with its EMA model on the full test set.

    python bench/cifar10_lt.py /path/to/cifar10                       # CPU: cnn32, 200 steps
    python bench/cifar10_lt.py /path/to/cifar10 --device cuda --steps 20000   # GPU: wrn28_2
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sslviz.engine.config import from_preset  # noqa: E402
from sslviz.runs.store import home_dir  # noqa: E402
from sslviz.engine.prepare import prepare  # noqa: E402
from sslviz.engine.device import resolve_device  # noqa: E402
from sslviz.engine.trainer import train  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="CIFAR-10 folder: pickle batches or ImageFolder train/ and test/")
    ap.add_argument("--presets", default="fixmatch,balanced", help="comma list of sslviz presets")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per preset (default 200 CPU, 20000 CUDA)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--model", default="auto", help="auto = cnn32 on CPU, wrn28_2 on CUDA")
    ap.add_argument("--gamma", type=float, default=100.0, help="imbalance ratio (labeled and unlabeled)")
    ap.add_argument("--n1", type=int, default=1500, help="labeled images of the head class")
    ap.add_argument("--m1", type=int, default=3000, help="unlabeled images of the head class")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=int, default=7)
    ap.add_argument("--eval-every", type=int, default=None, help="test evaluations during training (default: end only)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="decoded-image cache (default $SSLVIZ_HOME/cache)")
    return ap


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.path).expanduser()
    if not path.is_dir():
        raise SystemExit(f"CIFAR-10 folder {str(path)!r} does not exist; this script never downloads.")
    device = resolve_device(args.device)
    steps = args.steps or (20_000 if device.type == "cuda" else 200)
    cache_dir = Path(args.cache_dir) if args.cache_dir else home_dir() / "cache"
    base = dict(dataset=str(path.resolve()), n1=args.n1, gamma=args.gamma, m1=args.m1, gamma_u=args.gamma,
                unlabeled_shape="consistent", model=args.model, steps=steps, batch_size=args.batch_size,
                mu=args.mu, device=device.type, eval_every=args.eval_every or steps, log_every=math.gcd(10, steps),
                seed=args.seed)
    t = time.perf_counter()
    prepared = prepare(from_preset("fixmatch", **base), cache_dir)
    split = prepared.split
    names = prepared.dataset.class_names
    print(f"CIFAR-10-LT from {path} (loaded in {time.perf_counter() - t:.1f} s): gamma={args.gamma:g}, "
          f"N_1={args.n1}, M_1={args.m1}, consistent unlabeled; labeled {split.labeled_counts.tolist()}, "
          f"unlabeled {split.unlabeled_counts.tolist()}, test {len(prepared.dataset.y_test)}")
    print(f"device {device}, torch threads {torch.get_num_threads()}, {steps} steps, "
          f"B={args.batch_size}, mu={args.mu}", flush=True)
    results = []
    for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
        cfg = from_preset(preset, **base)
        t = time.perf_counter()
        out = train(cfg, prepared=prepared)
        wall = time.perf_counter() - t
        results.append({"preset": preset, "model": out["model"], "wall_s": wall,
                        **{k: out[k] for k in out if k.startswith(("val_", "test_"))}})
        print(f"{preset:10s} {out['model']:8s} balanced acc val {out['val_balanced_accuracy']:.4f} "
              f"test {out['test_balanced_accuracy']:.4f}  wall {wall:7.1f} s ({steps / wall:.2f} steps/s)")
        for split in ("val", "test"):
            print(f"           {split:4s} recall " + "  ".join(f"{n}={r:.3f}" for n, r in zip(names, out[f"{split}_recall"])),
                  flush=True)
    return results


if __name__ == "__main__":
    main()
