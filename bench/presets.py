"""Every preset on the built-in data, several seeds: validation and test side by side, mean +- std.

Settings: digits gamma 50 with consistent and with reversed unlabeled data, toy2d gamma 50, and WordNet text at
gamma 50 and 20 (their defaults otherwise), each at the default budget (1,000 steps). Reported per preset and setting, over the seeds:
balanced accuracy and mean recall of the 3 rarest classes, on validation and on test (read test only beside
validation: nothing here is chosen on it), and the pseudo-labels accepted for the 3 rarest classes over the
run with their precision (what DA, DebiasPL etc. do to rare-class pseudo-labels at tau 0.95).

    python bench/presets.py                                   # all presets, 3 seeds, 2 processes
    python bench/presets.py --presets fixmatch,balanced --settings wordnet,wordnet-g20 --processes 1
    python bench/presets.py --presets fixmatch,fixmatch-da --settings digits --seeds 0,1 --steps 300
    python bench/presets.py --presets balanced --grid threshold_class_alpha=0.25,0.5 --grid dist_align=none,labeled

    python bench/presets.py --presets balanced --vary threshold_min=0.7,0.9 --vary dist_align=none
    python bench/presets.py --cifar /tmp/cifar --settings cifar-lt-cpu --presets fixmatch --grid lambda_u=0,1

``--grid`` tunes a preset: every combination of the listed values is a variant, reported on its own row;
``--vary`` searches one knob at a time around it. Tune on the validation columns only. ``--cifar PATH`` (a local
CIFAR-10 folder) adds the CIFAR-10-LT settings (:func:`cifar_settings`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

CACHE_DIR = Path(tempfile.gettempdir()) / "sslviz-bench-cache"  # decoded image folders, shared by runs
SETTINGS = {
    "digits": dict(dataset="digits", gamma=50.0, unlabeled_shape="consistent"),
    "digits-reversed": dict(dataset="digits", gamma=50.0, unlabeled_shape="reversed"),
    "toy2d": dict(dataset="toy2d", gamma=50.0),
    # Text (needs wordnet-base): the 10 largest WordNet noun files, natural imbalance 3.9, long-tailed further.
    "wordnet": dict(dataset="wordnet", gamma=50.0),
    "wordnet-g20": dict(dataset="wordnet", gamma=20.0),
}
# CIFAR-10-LT as a 2-core CPU affords it (issue 18): the real images and the field's long-tailed split (gamma 100,
# N_1 1500, M_1 3000), cnn32, B 32, mu 2, 1,500 steps: about 150 s a run on one core. At this budget FixMatch does
# not beat its lambda_u 0 control at N_1 150, 500 or 1500 (bench/RESULTS.md section 14): the protocol detects harm
# (a method below FixMatch), not benefit.
CIFAR_CPU = dict(gamma=100.0, n1=1500, m1=3000, model="cnn32", batch_size=32, mu=2, steps=1500, eval_every=300,
                 log_every=50)
CIFAR_GPU = dict(gamma=100.0, n1=1500, m1=3000, model="wrn28_2")  # the papers' protocol (WRN-28-2, B 64, mu 7)


def cifar_settings(path: str) -> dict[str, dict]:
    """The CIFAR-10-LT settings on a local CIFAR-10 folder ``path`` (pickle batches or an ImageFolder tree; the
    shared folder's copy or a user's own; never downloaded): ``cifar-lt-cpu`` and ``cifar-lt-cpu-reversed``
    (:data:`CIFAR_CPU`, consistent / reversed unlabeled data) and ``cifar10-lt`` (:data:`CIFAR_GPU`)."""
    return {"cifar-lt-cpu": dict(dataset=path, unlabeled_shape="consistent", **CIFAR_CPU),
            "cifar-lt-cpu-reversed": dict(dataset=path, unlabeled_shape="reversed", **CIFAR_CPU),
            "cifar10-lt": dict(dataset=path, unlabeled_shape="consistent", **CIFAR_GPU)}


def setting(name: str, cifar: str | None = None) -> dict:
    """The config knobs of setting ``name`` (CIFAR-10-LT ones need the folder ``cifar``)."""
    known = {**SETTINGS, **(cifar_settings(cifar) if cifar else {})}
    if name not in known:
        raise SystemExit(f"Unknown setting {name!r}: one of {', '.join(known)}"
                         + ("" if cifar else " (the cifar-* settings need --cifar PATH)"))
    return known[name]


def one_run(preset: str, name: str, seed: int, overrides: dict, variant: dict, device: str = "cpu",
            cifar: str | None = None) -> dict:
    """Train one cell in this process (1 torch thread, as a worker with 2 CPU slots uses) and summarise it."""
    import torch

    from sslviz.runs.bias import head_tail_recall_gap
    from sslviz.engine.config import from_preset
    from sslviz.engine.prepare import prepare
    from sslviz.engine.trainer import train

    torch.set_num_threads(1)
    records: list[dict] = []
    t0 = time.time()
    cfg = from_preset(preset, **{**setting(name, cifar), "seed": seed, "device": device, **overrides, **variant})
    prepared = prepare(cfg, CACHE_DIR)  # a folder dataset (CIFAR-10) is decoded once, not once per run
    out = train(cfg, on_log=records.append, prepared=prepared)
    classes = [r["classes"] for r in records if "classes" in r]
    accepted = np.sum([[c["n_accepted"] for c in cs] for cs in classes], axis=0)
    correct = np.sum([[c["n_correct"] for c in cs] for cs in classes], axis=0)
    return {
        "preset": preset + "".join(f" {k}={v}" for k, v in variant.items()), "setting": name, "seed": seed,
        "seconds": time.time() - t0, "steps": out["step"], "steps_per_s": out["step"] / max(out["wall"], 1e-9),
        **{f"{s}_balanced_accuracy": out[f"{s}_balanced_accuracy"] for s in ("val", "test")},
        **{f"{s}_rare3_recall": float(np.mean(out[f"{s}_recall"][-3:])) for s in ("val", "test")},
        **{f"{s}_gap": head_tail_recall_gap(out[f"{s}_recall"], prepared.split.labeled_counts) for s in ("val", "test")},
        "rare3_accepted": int(accepted[-3:].sum()),
        "rare3_precision": float(correct[-3:].sum() / accepted[-3:].sum()) if accepted[-3:].sum() else None,
        "pl_precision": float(correct.sum() / accepted.sum()) if accepted.sum() else None,
    }


def cell(values) -> str:
    """'mean ± std' of the values that are not None, or '—'."""
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "—"


def groups(rows: list[dict]):
    """(setting, preset, rows of that cell over seeds), in the order the cells first appear."""
    for setting, preset in dict.fromkeys((r["setting"], r["preset"]) for r in rows):
        yield setting, preset, [r for r in rows if (r["setting"], r["preset"]) == (setting, preset)]


def summarise(rows: list[dict]) -> str:
    """Markdown: one row per (setting, preset), each metric mean +- std over seeds, with the seed count."""
    lines = ["| setting | preset | seeds | val bal. acc | test bal. acc | val rare-3 recall | test rare-3 recall | "
             "rare-3 PLs accepted | rare-3 PL precision | PL precision |", "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, preset, rs in groups(rows):
        accepted = [r["rare3_accepted"] for r in rs]
        lines.append(
            f"| {setting} | {preset} | {len(rs)} | {cell([r['val_balanced_accuracy'] for r in rs])} | "
            f"{cell([r['test_balanced_accuracy'] for r in rs])} | {cell([r['val_rare3_recall'] for r in rs])} | "
            f"{cell([r['test_rare3_recall'] for r in rs])} | {np.mean(accepted):.0f} [{min(accepted)}-{max(accepted)}] | "
            f"{cell([r['rare3_precision'] for r in rs])} | {cell([r.get('pl_precision') for r in rs])} |")
    return "\n".join(lines)


def cell_parser(doc: str, settings: str, steps_help: str) -> argparse.ArgumentParser:
    """The options every preset table takes (this script's and bench/methods.py's): which presets, settings and
    seeds, the budget, and how many processes run the cells."""
    from sslviz.engine.config import PRESETS

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--settings", default=settings, help="comma-separated names of bench/presets.py SETTINGS")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help=steps_help)
    ap.add_argument("--processes", type=int, default=2, help="CPU processes (1: every run in this one)")
    ap.add_argument("--cifar", metavar="PATH", help="a local CIFAR-10 folder: makes the cifar-* settings available")
    ap.add_argument("--json", type=Path, help="also write every run's numbers here")
    ap.add_argument("--journal", type=Path, help="append each run's numbers here as it finishes (JSON lines)")
    return ap


def run_cells(fn, cells: list[tuple], processes: int, journal: Path | None = None) -> list[dict]:
    """``fn(*cell)`` for every cell, in a pool of ``processes`` (1: in this process, no pickling, easy to debug).
    Each row is appended to ``journal`` (JSON lines) as it arrives, so a long table stopped half-way keeps its runs."""
    rows: list[dict] = []
    with ProcessPoolExecutor(processes) if processes > 1 else nullcontext() as pool:
        for row in (pool.map(fn, *zip(*cells)) if pool else (fn(*c) for c in cells)):
            rows.append(row)
            if journal:
                with journal.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


def main(argv=None) -> None:
    ap = cell_parser(__doc__, "digits,digits-reversed,toy2d", "override the budget (default: the preset's, 1000)")
    ap.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="variants of each preset: every combination of these values (YAML-parsed)")
    ap.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                    help="variants of each preset one knob at a time (a coordinate search around it): the preset "
                         "itself, then each listed value of each key alone")
    args = ap.parse_args(argv)
    overrides = {} if args.steps is None else {"steps": args.steps}
    axes = [(key, [yaml.safe_load(v) for v in values.split(",")])
            for key, values in (g.split("=", 1) for g in args.grid)]
    variants = [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]
    variants += [{key: yaml.safe_load(v)} for key, values in (g.split("=", 1) for g in args.vary)
                 for v in values.split(",")]
    cells = [(p, s, int(seed), overrides, v, "cpu", args.cifar) for s in args.settings.split(",")
             for p in args.presets.split(",") for v in variants for seed in args.seeds.split(",")]
    t0 = time.time()
    rows = run_cells(one_run, cells, args.processes, args.journal)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(summarise(rows))
    print(f"\n{len(rows)} runs in {time.time() - t0:.0f} s with {args.processes} processes")


if __name__ == "__main__":
    main()
