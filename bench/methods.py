"""The imbalanced-SSL methods side by side: every preset, several seeds, mean and spread.

CPU (default): digits gamma 50 with consistent and with reversed unlabeled data, 3 seeds, 1 torch thread per run,
2 processes, at a budget of 500 steps per run (chosen so the 12 presets x 2 settings x 3 seeds = 72 runs fit in
about 30 minutes on the 2-vCPU machine of bench/RESULTS.md). GPU (``--cifar PATH``): CIFAR-10-LT (gamma 100,
N_1 1500, M_1 3000, consistent unlabeled, WRN-28-2) from a local CIFAR-10 folder, runs one after another on CUDA;
steps/s is printed so the published 250k-iteration budget can be extrapolated.

Printed per preset and setting over the seeds: validation and test balanced accuracy and recall of the 3 rarest
classes (bench/presets.py's table: tune on validation, read test beside it), then the head-tail recall gap
(sslviz/bias.py: mean recall of the 3 most frequent labeled classes minus the 3 rarest) and the wall time.

    python bench/methods.py                                   # the CPU table (~30 min)
    python bench/methods.py --presets fixmatch,fixmatch-darp --seeds 0 --steps 50   # a smoke check
    python bench/methods.py --cifar /data/cifar-10-batches-py --steps 20000 --seeds 0   # GPU, CIFAR-10-LT
    python bench/methods.py --presets fixmatch,balanced --settings wordnet-g20,wordnet --steps 1000 --processes 1
                                                              # text (needs wordnet-base), RESULTS.md section 11
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

import presets as bench_presets  # noqa: E402  (one_run, summarise, SETTINGS)

CPU_SETTINGS = ("digits", "digits-reversed")
CPU_STEPS = 500
CIFAR = dict(gamma=100.0, n1=1500, m1=3000, unlabeled_shape="consistent", model="wrn28_2")


def one_cell(preset: str, setting: str, seed: int, overrides: dict, device: str, cifar: str | None) -> dict:
    """bench/presets.py's ``one_run`` for one cell (CIFAR-10-LT from ``cifar`` when given)."""
    if cifar is not None:
        bench_presets.SETTINGS["cifar10-lt"] = dict(dataset=cifar, **CIFAR)
    return bench_presets.one_run(preset, setting, seed, overrides, {}, device=device)


def gap_table(rows: list[dict]) -> str:
    """Markdown: head-tail recall gap (validation, test), steps/s and seconds per run, per (setting, preset)."""
    cell = bench_presets.cell
    lines = ["| setting | preset | seeds | steps | val head-tail gap | test head-tail gap | steps/s | s per run |",
             "|---|---|---|---|---|---|---|---|"]
    for setting, preset, rs in bench_presets.groups(rows):
        lines.append(f"| {setting} | {preset} | {len(rs)} | {rs[0]['steps']} | {cell([r['val_gap'] for r in rs])} | "
                     f"{cell([r['test_gap'] for r in rs])} | {np.mean([r['steps_per_s'] for r in rs]):.2f} | "
                     f"{np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = bench_presets.cell_parser(__doc__, ",".join(CPU_SETTINGS), f"steps per run (default {CPU_STEPS} on the "
                                   "CPU, the preset's on a GPU)")
    ap.add_argument("--cifar", metavar="PATH", help="run CIFAR-10-LT from this local CIFAR-10 folder on CUDA instead")
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else (None if args.cifar else CPU_STEPS)
    overrides = {} if steps is None else {"steps": steps}
    settings = ["cifar10-lt"] if args.cifar else args.settings.split(",")
    device = "cuda" if args.cifar else "cpu"
    cells = [(p, s, int(seed), overrides, device, args.cifar) for s in settings for p in args.presets.split(",")
             for seed in args.seeds.split(",")]
    processes = 1 if args.cifar else args.processes  # the GPU runs one at a time
    t0 = time.time()
    rows = bench_presets.run_cells(one_cell, cells, processes)
    print(bench_presets.summarise(rows))
    print()
    print(gap_table(rows))
    print(f"\n{len(rows)} runs in {time.time() - t0:.0f} s ({device}, {processes} process{'es' if processes > 1 else ''}"
          f", {steps or 'preset'} steps per run)")


if __name__ == "__main__":
    main()
