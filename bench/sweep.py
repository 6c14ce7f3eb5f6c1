"""The same digits sweep serially, on the local executor and on Ray, side by side in one run.

2 presets x 3 gammas x 2 seeds, 300 steps, one torch thread per run. Prints the wall time of each way, Ray's
start-up reported apart. Targets on a 2-core machine: local <= 0.6 x serial; Ray <= 1.15 x local.

    .venv/bin/python bench/sweep.py [--steps 300] [--presets fixmatch,balanced] [--gammas 10,20,50] [--seeds 0,1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from sslviz.runs import sweep, sweep_spec  # noqa: E402
from sslviz.runs.store import RunStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--presets", default="fixmatch,balanced")
    ap.add_argument("--gammas", default="10,20,50")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--skip", default="", help="comma list of serial,local,ray to skip")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    spec = sweep_spec.SweepSpec(grid=sweep_spec.parse_grid([f"preset={args.presets}", f"gamma={args.gammas}"]),
                           seeds=tuple(int(s) for s in args.seeds.split(",")),
                           base={"dataset": "digits", "steps": args.steps, "device": "cpu"})
    home = Path(tempfile.mkdtemp(prefix="sslviz-bench-sweep-"))
    os.environ["SSLVIZ_HOME"] = str(home)
    os.environ.setdefault("SSLVIZ_CPU_SLOTS", "2")  # the local worker queue: 2 runs at once, cpu_count // 2 threads
    print(f"{spec.size} runs of {args.steps} steps on digits; {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}")
    out = {}

    if "serial" not in skip:
        from sslviz.engine.trainer import train

        store = RunStore(home / "serial.db")
        plan = sweep.validate(spec, store=store)
        torch.set_num_threads(1)
        t = time.perf_counter()
        for cfg in plan.configs:
            train(cfg)
        out["serial"] = time.perf_counter() - t
        print(f"serial (one process, 1 thread): {out['serial']:.1f} s", flush=True)

    if "local" not in skip:
        store = RunStore(home / "local.db")
        plan = sweep.validate(spec, store=store)
        t = time.perf_counter()
        sweep_id, _ = sweep.submit_local(store, plan)
        while sweep.sweep_runs(store, sweep_id).status.isin(["queued", "running"]).any():
            time.sleep(0.5)
        out["local"] = time.perf_counter() - t
        statuses = sweep.sweep_runs(store, sweep_id).status.value_counts().to_dict()
        print(f"local executor ({os.environ['SSLVIZ_CPU_SLOTS']} slots): {out['local']:.1f} s {statuses}", flush=True)

    if "ray" not in skip:
        from sslviz.runs import ray_executor

        t = time.perf_counter()
        ray_executor.connect(num_cpus=os.cpu_count())
        startup = time.perf_counter() - t
        store = RunStore(home / "ray.db")
        plan = sweep.validate(spec, store=store)
        t = time.perf_counter()
        _, _, results = sweep.submit_ray(store, plan, threads=1)
        out["ray"] = time.perf_counter() - t
        print(f"ray ({os.cpu_count()} CPUs, 1 thread per trial): {out['ray']:.1f} s + start-up {startup:.1f} s "
              f"{ {s: list(results.values()).count(s) for s in set(results.values())} }", flush=True)

    if "serial" in out and "local" in out:
        print(f"local / serial = {out['local'] / out['serial']:.2f} (target <= 0.6)")
    if "local" in out and "ray" in out:
        print(f"ray / local = {out['ray'] / out['local']:.2f} (target <= 1.15)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
