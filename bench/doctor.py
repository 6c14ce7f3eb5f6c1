"""The bias doctor on real short runs: what it finds, with the unlabeled set's labels and without them.

Plain FixMatch on digits at gamma 50 with reversed unlabeled data (expected: tail starvation and distribution
mismatch, DA not among the top 3 suggestions) and on toy2d at gamma 1 (expected: no majority-bias finding), 3 seeds
each, every run in a temporary store as the dashboard records it.

    python bench/doctor.py                      # 600 steps, seeds 0-2, 2 processes
    python bench/doctor.py --steps 300 --seeds 0 --processes 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

SETTINGS = {
    "digits g50 reversed": dict(dataset="digits", gamma=50.0, unlabeled_shape="reversed"),
    "toy2d g1": dict(dataset="toy2d", gamma=1.0),
}
MAJORITY_BIAS = ("tail_starvation", "contamination", "threshold_starvation", "majority_drift")


def one(setting: str, seed: int, steps: int) -> dict:
    import torch

    from sslviz.engine.config import from_preset
    from sslviz.runs import doctor, worker
    from sslviz.runs.store import RunStore

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(Path(home) / "runs.db")
        rid = worker.record(store, from_preset("fixmatch", **SETTINGS[setting], seed=seed, steps=steps))
        worker.run_worker(store, rid)
        out = {"setting": setting, "seed": seed, "val": store.latest_evals(rid)["val"]["balanced_accuracy"]}
        for label, truth in (("truth", True), ("estimate", False)):
            rep = doctor.report(store, rid, truth=truth)
            out[label] = {"findings": [(f["kind"], f["severity"], f["classes"]) for f in rep["findings"]],
                          "top3": [s["technique"] for s in rep["suggestions"][:3]]}
        store.close()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)
    cells = [(s, int(seed), args.steps) for s in SETTINGS for seed in args.seeds.split(",")]
    t0 = time.time()
    with ProcessPoolExecutor(args.processes) as pool:
        rows = list(pool.map(one, *zip(*cells)))
    print("| setting | seed | val bal. acc | labels | findings (severity: classes) | top 3 suggestions | "
          "DA in top 3 | majority-bias finding |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for label in ("truth", "estimate"):
            d = r[label]
            found = "; ".join(f"{k} ({sev}: {', '.join(map(str, cls)) or '-'})" for k, sev, cls in d["findings"]) or "none"
            print(f"| {r['setting']} | {r['seed']} | {r['val']:.3f} | {label} | {found} | {', '.join(d['top3'])} | "
                  f"{'yes' if 'Distribution alignment' in d['top3'] else 'no'} | "
                  f"{'yes' if any(k in MAJORITY_BIAS for k, _, _ in d['findings']) else 'no'} |")
    print(f"\n{len(rows)} runs of {args.steps} steps in {time.time() - t0:.0f} s with {args.processes} processes")


if __name__ == "__main__":
    main()
