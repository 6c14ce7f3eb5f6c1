"""Cost of recording metrics, and of loading what the Live page shows.

(i)  Share of training-step time spent recording metrics on digits. The
     trainer has no switch to turn its device-side accumulation off, so the
     share is assembled from parts measured in one process:
       - ``store.log`` time per call, timed around the real ``on_log`` path
         (a ``RunStore`` in a temp dir), divided by ``log_every`` steps;
       - a micro-benchmark of the per-step accumulation (the same ``stack`` /
         ``index_add_`` ops on the same shapes as ``trainer.train``) and of the
         per-interval host copy + record build;
       - the step time of the same run (``progress`` stamps, after a warm-up).
     It also runs the trainer with ``on_log=None`` for an end-to-end A/B of
     the store path (noisy on a shared machine: read it with the spread).
(ii) Live-page load at 50,000 steps: a store synthesised with ``RunStore.log``
     (log_every=10 -> 5,000 scalar rows, 50,000 class_train rows for 10
     classes; an eval with confusion matrix every 100 steps), then the readers
     the Live page calls, median over repeats.

    python bench/overhead.py                 # both parts
    python bench/overhead.py --part load --load-steps 50000 --repeats 9
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sslviz.engine.config import from_preset  # noqa: E402
from sslviz.engine.meter import IntervalMeter  # noqa: E402
from sslviz.runs.store import RunStore  # noqa: E402
from sslviz.engine.prepare import prepare  # noqa: E402
from sslviz.engine.trainer import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/synthetic.py
from synthetic import trainer_record  # noqa: E402

LOG_SHARE_TARGET = 0.02  # recording metrics <= 2% of step time
LOAD_TARGET_MS = 300.0  # Live page readers <= 300 ms at 50k steps
K = 10


# -- (i) share of step time spent recording metrics ------------------------------------
def _train_timed(cfg, p, store: RunStore | None, run_id: int | None, warm: int) -> tuple[float, list[float]]:
    """Seconds per step after ``warm`` steps, and the seconds of each ``store.log`` call."""
    stamps: dict[int, float] = {}
    log_s: list[float] = []

    def on_log(record: dict) -> None:
        t = time.perf_counter()
        store.log(run_id, record)
        log_s.append(time.perf_counter() - t)

    train(cfg, prepared=p, on_log=on_log if store is not None else None,
          progress=lambda step: stamps.__setitem__(step, time.perf_counter()))
    last = max(s for s in stamps if s < cfg.steps)  # the final interval also evaluates: not timed
    return (stamps[last] - stamps[warm]) / (last - warm), log_s


def accumulation_micro(uB: int, log_every: int, reps: int = 200) -> tuple[float, float]:
    """(seconds per step of the trainer's IntervalMeter.update, seconds per interval of its flush)."""
    g = torch.Generator().manual_seed(0)
    pseudo = torch.randint(K, (uB,), generator=g)
    yu = torch.randint(K, (uB,), generator=g)
    conf = torch.rand(uB, generator=g)
    mask = (conf > 0.5).float()
    probs = torch.softmax(torch.randn(uB, K, generator=g), 1)
    losses = torch.rand(4, generator=g)
    thresholds = torch.full((K,), 0.95)
    meter = IntervalMeter(K, "cpu")

    def step():
        meter.update(losses, pseudo, conf, mask, yu, probs)

    for _ in range(10):
        step()
    t = time.perf_counter()
    for _ in range(reps):
        step()
    per_step = (time.perf_counter() - t) / reps
    intervals = reps // log_every or 1
    t = time.perf_counter()
    for _ in range(intervals):
        step()  # a flush of an empty meter would skip the real work
        meter.flush(thresholds)
    per_interval = (time.perf_counter() - t) / intervals - per_step
    return per_step, per_interval


def logging_share(steps: int, warm: int, log_every: int, batch: int, mu: int, repeats: int) -> dict:
    cfg = from_preset("fixmatch", dataset="digits", steps=warm + steps + log_every, batch_size=batch, mu=mu,
                      device="cpu", log_every=log_every, eval_every=log_every * ((warm + steps) // log_every + 2), seed=0)  # past the end: no eval
    p = prepare(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs.db")
        with_store, without, log_calls = [], [], []
        for r in range(repeats):  # alternate so drift on a shared machine hits both alike
            run_id = store.create_run(cfg.to_dict())
            s, calls = _train_timed(cfg, p, store, run_id, warm)
            with_store.append(s)
            log_calls += calls
            without.append(_train_timed(cfg, p, None, None, warm)[0])
        store.close()
    acc_step, acc_interval = accumulation_micro(mu * batch, log_every)
    step_s = statistics.median(with_store)
    log_call = statistics.median(log_calls)
    per_step = {"accumulate": acc_step, "host copy + record": acc_interval / log_every,
                "store.log": log_call / log_every}
    total = sum(per_step.values())
    out = {"step_s_with_store": with_store, "step_s_without_store": without, "store_log_call_s": log_call,
           "store_log_calls": len(log_calls), "per_step": per_step, "share": total / step_s}
    print(f"(i) digits cnn_digits B={batch} mu={mu} log_every={log_every}, {steps} timed steps x {repeats} runs")
    print(f"    step time with store.log:  median {step_s * 1e3:8.1f} ms  "
          f"[{min(with_store) * 1e3:.1f}-{max(with_store) * 1e3:.1f}]")
    print(f"    step time on_log=None:     median {statistics.median(without) * 1e3:8.1f} ms  "
          f"[{min(without) * 1e3:.1f}-{max(without) * 1e3:.1f}]")
    print(f"    store.log per call:        median {log_call * 1e3:8.2f} ms  "
          f"[{min(log_calls) * 1e3:.2f}-{max(log_calls) * 1e3:.2f}] over {len(log_calls)} calls")
    for name, s in per_step.items():
        print(f"    {name + ' per step:':27s}{s * 1e3:8.3f} ms  ({s / step_s:.3%} of a step)")
    print(f"    recording share of step time: {out['share']:.3%}  (target <= {LOG_SHARE_TARGET:.0%}: "
          f"{'met' if out['share'] <= LOG_SHARE_TARGET else 'MISSED'})")
    return out


# -- (ii) Live-page load at many steps --------------------------------------------------
def synthesise(store: RunStore, steps: int, log_every: int = 10, eval_every: int = 100) -> int:
    """A finished-looking run of ``steps`` steps written through ``RunStore.log``."""
    rng = np.random.default_rng(0)
    cfg = from_preset("fixmatch", steps=steps, log_every=log_every, eval_every=eval_every).to_dict()
    run_id = store.create_run(cfg, info={"class_names": [str(k) for k in range(K)]})
    store.update_run(run_id, status="running")
    for step in range(log_every, steps + 1, log_every):
        record = trainer_record(rng, step, K, eval_every)
        store.log(run_id, record)
    return run_id


def live_readers(store: RunStore, run_id: int) -> dict[str, float]:
    """Seconds per reader, in the order the Live page calls them."""
    calls = {
        "runs": lambda: store.runs(),
        "run": lambda: store.run(run_id),
        "scalars": lambda: store.scalars(run_id),
        "class_train": lambda: store.class_train(run_id),
        "class_eval": lambda: store.class_eval(run_id),
        "evals": lambda: store.evals(run_id),
        "confusion test": lambda: store.confusion(run_id, "test"),
        "confusion pseudo": lambda: store.confusion(run_id, "pseudo"),
        "events": lambda: store.events(run_id),
    }
    out = {}
    for name, call in calls.items():
        t = time.perf_counter()
        call()
        out[name] = time.perf_counter() - t
    return out


def live_load(steps: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs.db")
        t = time.perf_counter()
        run_id = synthesise(store, steps)
        build_s = time.perf_counter() - t
        rows = {tb: store._conn().execute(f"SELECT COUNT(*) FROM {tb}").fetchone()[0]
                for tb in ("scalars", "class_train", "evals", "class_eval", "confusion")}
        live_readers(store, run_id)  # warm the page cache, as a polling page would be
        samples = [live_readers(store, run_id) for _ in range(repeats)]
        store.close()
    totals = [sum(s.values()) for s in samples]
    med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    total = statistics.median(totals)
    print(f"(ii) Live page readers at {steps} steps (store built in {build_s:.1f} s via RunStore.log; rows {rows})")
    for k, v in med.items():
        print(f"    {k:18s} median {v * 1e3:8.2f} ms")
    print(f"    all readers: median {total * 1e3:.1f} ms  [{min(totals) * 1e3:.1f}-{max(totals) * 1e3:.1f}] "
          f"over {repeats} repeats  (target <= {LOAD_TARGET_MS:.0f} ms: "
          f"{'met' if total * 1e3 <= LOAD_TARGET_MS else 'MISSED'})")
    return {"rows": rows, "median_s": med, "total_s": totals, "build_s": build_s}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("all", "logging", "load"), default="all")
    ap.add_argument("--steps", type=int, default=100, help="(i) timed training steps per run")
    ap.add_argument("--warmup", type=int, default=10, help="(i) untimed steps (a multiple of --log-every)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads of the training process (default: torch's; the sslviz worker "
                         "uses cpu_count // SSLVIZ_CPU_SLOTS, i.e. 1 on a 2-core machine)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--mu", type=int, default=7)
    ap.add_argument("--runs", type=int, default=2, help="(i) runs with and without the store, alternated")
    ap.add_argument("--load-steps", type=int, default=50_000, help="(ii) steps of the synthesised run")
    ap.add_argument("--repeats", type=int, default=7, help="(ii) reader repeats")
    return ap


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warmup % args.log_every or args.steps % args.log_every:
        raise SystemExit("--warmup and --steps must be multiples of --log-every (progress is called per interval).")
    out = {}
    if args.part in ("all", "logging"):
        out["logging"] = logging_share(args.steps, args.warmup, args.log_every, args.batch_size, args.mu, args.runs)
    if args.part in ("all", "load"):
        out["load"] = live_load(args.load_steps, args.repeats)
    return out


if __name__ == "__main__":
    main()
