"""The imbalanced-SSL methods side by side: every preset, several seeds, mean and spread.

Settings (bench/presets.py): digits gamma 50 with consistent and with reversed unlabeled data (the default, 500
steps a run, 1 torch thread a run, 2 processes: 72 runs in about 30 minutes on the 2-vCPU machine of
bench/RESULTS.md); with ``--cifar PATH`` (a local CIFAR-10 folder) the CPU CIFAR-10-LT protocol
``cifar-lt-cpu`` / ``cifar-lt-cpu-reversed`` (gamma 100, cnn32, B 32, mu 2, its own budget: RESULTS section 14),
and on a GPU (``--device cuda``) the papers' ``cifar10-lt`` (WRN-28-2, N_1 1500, M_1 3000), runs one at a time.
``--control`` adds FixMatch with ``lambda_u`` 0 to each setting: the labeled data alone.

Printed per preset and setting over the seeds: validation and test balanced accuracy and recall of the 3 rarest
classes (bench/presets.py's table: tune on validation, read test beside it), pseudo-label precision, then the
head-tail recall gap (sslviz/runs/bias.py: mean recall of the 3 most frequent labeled classes minus the 3 rarest)
and the wall time.

    python bench/methods.py                                   # the digits table (~30 min)
    python bench/methods.py --presets fixmatch,fixmatch-darp --seeds 0 --steps 50   # a smoke check
    python bench/methods.py --cifar /tmp/cifar --settings cifar-lt-cpu,cifar-lt-cpu-reversed --control  # CPU CIFAR
    python bench/methods.py --cifar /data/cifar-10 --settings cifar10-lt --device cuda --steps 20000 --seeds 0
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
CPU_STEPS = 500  # digits; the cifar-lt-cpu settings carry their own budget (bench/presets.py CIFAR_CPU)
CONTROL = {"lambda_u": 0.0}  # FixMatch without its unlabeled loss: what the labeled data alone reach


def one_cell(preset: str, setting: str, seed: int, overrides: dict, variant: dict, device: str,
             cifar: str | None) -> dict:
    """bench/presets.py's ``one_run`` for one cell."""
    return bench_presets.one_run(preset, setting, seed, overrides, variant, device=device, cifar=cifar)


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
    ap = bench_presets.cell_parser(__doc__, ",".join(CPU_SETTINGS), f"steps per run (default: {CPU_STEPS} on digits, "
                                   "the setting's own budget on CIFAR-10-LT)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: runs one at a time")
    ap.add_argument("--control", action="store_true", help="add FixMatch with lambda_u 0 (no unlabeled loss) to "
                    "each setting: a method that cannot beat it is not using the unlabeled data")
    args = ap.parse_args(argv)
    settings = args.settings.split(",")
    cells = []
    for name in settings:
        steps = args.steps if args.steps is not None else (None if name.startswith("cifar") else CPU_STEPS)
        overrides = {} if steps is None else {"steps": steps}
        for seed in args.seeds.split(","):
            cells += [(p, name, int(seed), overrides, {}, args.device, args.cifar) for p in args.presets.split(",")]
            if args.control:
                cells.append(("fixmatch", name, int(seed), overrides, CONTROL, args.device, args.cifar))
    cells.sort(key=lambda c: (settings.index(c[1]), c[0], sorted(c[4].items()), c[2]))  # a table row's seeds together
    processes = 1 if args.device == "cuda" else args.processes
    t0 = time.time()
    rows = bench_presets.run_cells(one_cell, cells, processes, args.journal)
    if args.json:
        args.json.write_text(__import__("json").dumps(rows, indent=1))
    print(bench_presets.summarise(rows))
    print()
    print(gap_table(rows))
    print(f"\n{len(rows)} runs in {time.time() - t0:.0f} s ({args.device}, {processes} "
          f"process{'es' if processes > 1 else ''})")


if __name__ == "__main__":
    main()
