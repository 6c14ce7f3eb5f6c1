"""Command line: ``python -m sslviz train|resume|stop|archive|unarchive|delete|list|show|doctor|export|sweep|presets|docs``.

Every TrainConfig field is a ``train`` flag (``--gamma 50``, ``--class-weighting effective``);
precedence is preset < ``--config`` YAML < flags. Bad input exits non-zero with one line.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .engine.config import FIELDS, RetiredKeyWarning, PRESET_DESCRIPTIONS, PRESETS, TrainConfig, parse_yaml
from .runs import records
from .engine.data import DatasetError
from .runs.lifecycle import PROCESS_LOST, NoSuchRun
from .engine.params import InvalidParameterError
from .engine.registry import budget_warnings
from .engine.splits import SplitError
from .runs.store import RunStore, StoreError
from .runs.sweep_spec import EARLY_STOP

USER_ERRORS = (InvalidParameterError, DatasetError, SplitError, StoreError, ValueError, FileNotFoundError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the whole usage block
        self.exit(2, f"sslviz: error: {message}\n")


_ARG_TYPES = {"int": int, "float": float, "str": str, "options": str}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped as on the Setup page, with its allowed values and default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in FIELDS.values():
        if f.name == "preset":  # --preset is its own flag
            continue
        if f.group not in groups:
            groups[f.group] = parser.add_argument_group(f"{f.group} (override preset and --config)")
        flag, group = "--" + f.name.replace("_", "-"), groups[f.group]
        help_ = f"{f.help} (default: {f.default!r})".replace("%", "%%")
        if f.kind == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_)
            continue
        kind = _ARG_TYPES[f.kind]
        if f.optional:  # "none" on the command line is the field's None (the dataset's default)
            kind = _optional(kind)
        group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, choices=f.choices,
                           metavar=None if f.choices else f.kind.upper(), help=help_)


def _optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


MAX_ID = 2**63 - 1  # SQLite's largest integer: run and sweep ids are row ids


def _an_id(text: str) -> int:
    """A run or sweep id: a whole number from 1 to ``MAX_ID`` (argparse names the argument in its message)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"an id is a whole number from 1 to {MAX_ID}; got {text!r}")
    return value


def _read_text(path: Path, what: str) -> str:
    """``path``'s text (UTF-8), or one line naming the file: it cannot be read, or it is not UTF-8 (and where)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"Cannot read {what} {path}: {exc.strerror}.") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ValueError(f"{what.capitalize()} {path} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line "
                         f"{line}; save it as UTF-8.") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sslviz", description="Semi-supervised learning under class imbalance.")
    parser.add_argument("--store", type=Path, default=None, help="run store file (default $SSLVIZ_HOME/runs.db)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one run in the foreground (or --background)")
    train.add_argument("--preset", default=None, help="one of: " + ", ".join(PRESETS))
    train.add_argument("--config", type=Path, help="YAML file of config knobs")
    train.add_argument("--background", action="store_true", help="queue it as a background worker and return")
    train.add_argument("--save-config", type=Path, help="write the resolved config as YAML and exit")
    _add_config_flags(train)

    for name, text in (("resume", "continue a stopped or failed run from its checkpoint"),
                       ("stop", "ask a running run to stop gracefully (a queued one stops at once)"),
                       ("archive", "hide an ended run from list and the run pickers (unarchive shows it again)"),
                       ("unarchive", "show an archived run again"),
                       ("delete", "remove an ended run: its metrics, checkpoint and log file"),
                       ("show", "summary of one run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run", type=_an_id)
        if name == "resume":
            p.add_argument("--background", action="store_true")
    listing = sub.add_parser("list", help="the runs in the store (archived ones with --all)")
    listing.add_argument("--all", action="store_true", help="include archived runs")
    evaluate = sub.add_parser("evaluate", help="evaluate a run's latest checkpoint now (default: the test set) "
                                              "and record it; the run keeps going")
    evaluate.add_argument("run", type=_an_id)
    evaluate.add_argument("--split", choices=records.SPLITS, action="append", help="val and/or test (default test)")
    export = sub.add_parser("export", help="write a run's metrics to CSV or Parquet files")
    export.add_argument("run", type=_an_id)
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("--out", type=Path, default=Path("."))
    doctor = sub.add_parser("doctor", help="what majority bias a run has, the evidence, and what to try")
    doctor.add_argument("run", type=_an_id)
    doctor.add_argument("--json", action="store_true", help="the report as JSON (for scripts)")
    doctor.add_argument("--no-truth", action="store_true",
                        help="do not read the unlabeled set's labels: estimates only, as for data without them")
    doctor.add_argument("--try", dest="try_k", type=int, metavar="K", default=None,
                        help="launch suggestion K (1 = the first listed) beside the run, in the background; "
                             "doctor RUN shows the verdict once its runs finish")
    doctor.add_argument("--seeds", default="", help="--try: more seeds for both arms, e.g. 1,2 (the run's own is "
                                                    "always one)")
    sub.add_parser("presets", help="the presets and the knobs each changes")
    docs = sub.add_parser("docs", help="print the README's technique and knob tables (markdown)")
    docs.add_argument("--readme", type=Path, help="rewrite the tables between this file's marker comments instead")
    sweep = sub.add_parser("sweep", help="a grid of runs: define and start it (--grid ...), or list, show, stop, "
                                         "resume, delete or export one", description=SWEEP_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("action", nargs="?", default="start", choices=SWEEP_ACTIONS, help="default: start")
    sweep.add_argument("sweep", nargs="?", type=_an_id, help="sweep id (show, stop, resume, delete, export)")
    sweep.add_argument("--grid", action="append", metavar="FIELD=V1,V2", help="an axis of the grid (repeatable)")
    sweep.add_argument("--seeds", default=None, help="seeds of every cell, e.g. 0,1,2 (default 0)")
    sweep.add_argument("--file", type=Path, help="YAML sweep file (grid, seeds, base, name); flags add to it")
    sweep.add_argument("--preset", default=None, help="preset of every cell (unless preset is a grid axis)")
    sweep.add_argument("--config", type=Path, help="YAML file of config knobs shared by every cell")
    sweep.add_argument("--sweep-name", default=None, help="a label for the sweep")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: the worker queue and its slots (returns at once); ray: one Ray actor per cell, "
                            "driven from this process until the sweep ends")
    sweep.add_argument("--address", default=None, help="Ray cluster address (default $RAY_ADDRESS, else a local Ray)")
    sweep.add_argument("--storage-path", default=None,
                       help="Ray: a folder every node reaches for checkpoints (without one a remote trial resumes "
                            "from step 0)")
    sweep.add_argument("--early-stop", choices=EARLY_STOP, default=None,
                       help="tune a knob: the cells run as Ray Tune trials and ASHA stops those behind on the "
                            "validation balanced accuracy (needs --executor ray; without it every cell runs to the "
                            "same budget)")
    sweep.add_argument("--grace-period", type=int, default=None, metavar="STEPS",
                       help="--early-stop: steps before a trial can be stopped (default: the cells' eval_every)")
    sweep.add_argument("--reduction-factor", type=float, default=None, metavar="R",
                       help="--early-stop: rungs at grace_period x R^k steps, each keeping about 1/R of the trials "
                            "(default 3)")
    sweep.add_argument("--dry-run", action="store_true", help="validate every cell and print the estimate only")
    sweep.add_argument("--format", choices=("csv", "parquet"), default="csv", help="export: the cell table format")
    sweep.add_argument("--out", type=Path, default=Path("."), help="export: folder")
    _add_config_flags(sweep)
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("run", type=_an_id)
    spare = sub.add_parser("spare", help=argparse.SUPPRESS)  # a warm worker: forks runs' workers (worker.run_spare)
    spare.add_argument("--idle", type=float, default=None, help="seconds without a run before it exits")
    spare.add_argument("--owner", type=int, default=None, help="leave when this process (the server) is gone")
    return parser


SWEEP_ACTIONS = ("start", "list", "show", "stop", "resume", "delete", "export")
SWEEP_HELP = """A sweep runs one config per cell of a grid, every cell with each seed:

  python -m sslviz sweep --grid preset=fixmatch,balanced --grid gamma=10,50 --seeds 0,1,2 --steps 300
  python -m sslviz sweep --file sweep.yaml --executor ray --address auto --storage-path /shared/ckpt
  python -m sslviz sweep --grid threshold=0.8,0.9,0.95 --steps 600 --executor ray --early-stop asha
  python -m sslviz sweep list | show 2 | stop 2 | resume 2 | delete 2 | export 2 --format parquet

Every cell is validated before anything starts. Config flags (--steps, --dataset ...) are shared by every cell."""


def _sweep_command(store: RunStore, args) -> int:
    from .runs import sweep as sw, sweep_results, sweep_spec

    if args.action == "list":
        sweeps = store.sweeps()
        if sweeps.empty:
            print(f"no sweeps yet in {store.path}; start one with: python -m sslviz sweep --grid gamma=10,50")
        else:
            print(sweeps[["id", "name", "executor", "runs"]].to_string(index=False))
        return 0
    if args.action != "start":
        if args.sweep is None:
            raise ValueError(f"sweep {args.action} needs a sweep id (python -m sslviz sweep list shows them).")
        row = store.sweep(args.sweep)
        if row is None:
            raise sweep_spec.SweepError(f"There is no sweep {args.sweep} in {store.path}.")
        if args.action == "stop":
            print(f"stop requested for {len(sw.stop(store, args.sweep))} run(s) of sweep {args.sweep}")
        elif args.action == "delete":
            print(f"sweep {args.sweep} deleted with {len(sw.delete(store, args.sweep))} run(s)")
        elif args.action == "resume":
            ids = sw.resume(store, args.sweep)
            print(f"{len(ids)} run(s) of sweep {args.sweep} queued to resume")
            if row["executor"] == "ray" and ids:
                from .runs.ray_executor import drive

                print(drive(store, args.sweep, address=args.address, storage_path=args.storage_path))
        else:
            res = sweep_results.results(store, args.sweep)
            cells = sweep_results.cell_table(res, sweep_spec.varied(row["spec"]))
            if args.action == "show":
                print(f"sweep {args.sweep} {row['name']} ({row['executor']}): {len(res)} runs, "
                      + ", ".join(f"{n} {s}" for s, n in res.status.value_counts().items()))
                cols = [*sweep_spec.varied(row["spec"]), "seeds", *(f"{m}_mean" for m in sweep_results.METRICS)]
                print(cells[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
                for r in res[res.early_stop.notna()].itertuples():
                    print(f"run {r.run}: {r.early_stop}")
            else:
                args.out.mkdir(parents=True, exist_ok=True)
                path = args.out / f"sweep{args.sweep}_cells.{args.format}"
                path.write_bytes(sweep_results.export_table(cells, args.format))
                print(path)
        return 0
    spec = (sweep_spec.SweepSpec.from_yaml(_read_text(args.file, "sweep file"), source=f"Sweep file {args.file}")
            if args.file else sweep_spec.SweepSpec())
    base = dict(spec.base)
    if args.config is not None:
        base.update(parse_yaml(_read_text(args.config, "config file"), source=f"Config file {args.config}"))
    base.update({name: getattr(args, name) for name in FIELDS if name != "preset" and hasattr(args, name)})
    if args.preset:
        base["preset"] = args.preset
    grid = {**spec.grid, **sweep_spec.parse_grid(args.grid)}
    seeds = sweep_spec.parse_seeds(args.seeds) if args.seeds else spec.seeds
    spec = sweep_spec.SweepSpec(grid=grid, seeds=seeds, base={k: v for k, v in base.items() if k not in grid},
                        name=args.sweep_name or spec.name)
    from .runs.worker import cache_dir

    if args.early_stop is None and (args.grace_period, args.reduction_factor) != (None, None):
        raise sweep_spec.SweepError("--grace-period and --reduction-factor set ASHA's rungs; they need --early-stop asha.")
    plan = sw.validate(spec, cache_dir(store), store=store)
    early_stop = None
    if args.early_stop:
        knobs = {"grace_period": args.grace_period, "reduction_factor": args.reduction_factor}
        early_stop = sweep_spec.EarlyStop(args.early_stop, **{k: v for k, v in knobs.items() if v is not None}).options(
            args.executor, plan.configs)
    parallel = sw.default_parallel(args.executor, plan.configs, store)
    plan.seconds, _ = sw.estimate_seconds(plan.configs, parallel=parallel, store=store)
    print(f"{len(plan.configs)} runs ({' x '.join(f'{len(v)} {k}' for k, v in grid.items()) or '1 cell'} x "
          f"{len(seeds)} seed(s)), about {plan.seconds / 60:.1f} min with {parallel} at once ({plan.basis})"
          + (f"; at most that: ASHA stops trials behind at steps {early_stop['grace_period']} x "
             f"{early_stop['reduction_factor']:g}^k" if early_stop else ""))
    for message in plan.warnings:
        print(f"sslviz: warning: {message}", file=sys.stderr)
    if args.dry_run:
        return 0
    if args.executor == "local":
        sweep_id, run_ids = sw.submit_local(store, plan)
        print(f"sweep {sweep_id}: runs {run_ids[0]}-{run_ids[-1]} queued in {store.path}; "
              f"follow with: python -m sslviz sweep show {sweep_id}")
        return 0
    sweep_id, run_ids, results = sw.submit_ray(store, plan, address=args.address, storage_path=args.storage_path,
                                               early_stop=early_stop)
    print(f"sweep {sweep_id} on Ray: " + ", ".join(f"{n} {s}" for s, n in
                                                   __import__("collections").Counter(results.values()).items()))
    return 0 if all(s in ("finished", "stopped") for s in results.values()) else 1


def _resolve_config(args) -> TrainConfig:
    values = {}
    if args.config is not None:
        values = parse_yaml(_read_text(args.config, "config file"), source=f"Config file {args.config}")
    # args.preset (None unless --preset) is passed below, not merged: it must not erase the YAML's preset.
    values.update({name: getattr(args, name) for name in FIELDS if name != "preset" and hasattr(args, name)})
    return TrainConfig.from_dict(values, preset=args.preset or values.get("preset"))


def _progress_bar(total: int, start: int):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(step: int) -> None:
        bar.update(step - bar.n)
        if step >= total:
            bar.close()

    return update


def _train_foreground(store: RunStore, run_id: int) -> int:
    from .engine.trainer import load_checkpoint
    from .runs.worker import checkpoint_path, run_worker

    row = store.run(run_id)
    ckpt = checkpoint_path(store, run_id)
    start = int(load_checkpoint(ckpt)["step"]) if ckpt.exists() else 0
    print(f"run {run_id}: {row['preset']} on {row['config']['dataset']}, store {store.path}")
    skipped = row["info"].get("skipped_files") or []
    if skipped:
        print(f"skipped {len(skipped)} file(s) without an image extension: {', '.join(skipped[:3])}"
              + (", …" if len(skipped) > 3 else ""))
    status = run_worker(store, run_id, progress=_progress_bar(row["total_steps"], start))
    row = store.run(run_id)
    tail = "".join(f", {records.SPLIT_LABELS[split]} balanced accuracy {ev.balanced_accuracy.iloc[-1]:.3f}"
                   for split in records.SPLITS if len(ev := store.evals(run_id, split=split)))
    print(f"run {run_id} {status}{': ' + row['error'] if row['error'] else ''}{tail}")
    return 0 if status in ("finished", "stopped") else 1


def _status_text(row) -> str:
    """'failed · process lost' for a lost run, else the status."""
    return f"{row['status']} · {PROCESS_LOST}" if row.get("error") == PROCESS_LOST else str(row["status"])


def _show(store: RunStore, run_id: int) -> None:
    import pandas as pd

    from .runs.records import NO_VAL_MESSAGE, SPLIT_LABELS, SPLITS

    row = store.run(run_id)
    if row is None:
        raise NoSuchRun(run_id, store.path)
    print(f"run {run_id} [{row['status']}{' - ' + row['error'] if row['error'] else ''}] "
          f"preset={row['preset']} step {row['step']}/{row['total_steps']} device={row['device']} "
          f"code={row['code_version'] or 'unknown'}")
    cfg = row["config"]
    print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if TrainConfig().to_dict().get(k) != v))
    latest = store.latest_evals(run_id)
    for split in SPLITS:
        e = latest.get(split)
        print(f"{SPLIT_LABELS[split]} (step {int(e['step'])}): accuracy {e['accuracy']:.3f}, balanced accuracy "
              f"{e['balanced_accuracy']:.3f}" if e else
              f"{SPLIT_LABELS[split]}: {NO_VAL_MESSAGE if split == 'val' and latest else 'not evaluated yet'}")
    info = row["info"]
    table = pd.DataFrame({"class": info.get("class_names", []), "labeled": info.get("labeled_counts", []),
                          "unlabeled": info.get("unlabeled_counts", [])})
    for split in SPLITS:
        recall = store.class_eval(run_id, split, None)
        if len(recall):
            table[f"{split}_recall"] = recall[recall.step == recall.step.max()].recall.round(3).to_numpy()
    ct = store.class_train(run_id, None)
    if len(ct):
        last = ct[ct.step == ct.step.max()]
        table["threshold"] = last.threshold.round(3).to_numpy()
        table["pl_accepted"] = last.n_accepted.to_numpy()
        table["pl_precision"] = last.precision.round(3).to_numpy()
    print(table.to_string(index=False))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "docs":  # needs no store
        from .engine.config import doc_tables, fill_doc_tables

        if args.readme is None:
            print("\n\n".join(doc_tables().values()))
            return 0
        try:
            args.readme.write_text(fill_doc_tables(args.readme.read_text()))
        except (OSError, ValueError) as exc:
            print(f"sslviz: error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote the tables into {args.readme}")
        return 0
    try:
        store = RunStore(args.store)
        if args.command not in ("worker", "spare"):
            from .runs.worker import cold_start_handed

            cold_start_handed(store)  # a run a dead warm worker never forked goes on now, as the dashboard's pump does
        if args.command == "train":
            with warnings.catch_warnings(record=True) as retired:
                warnings.simplefilter("always", RetiredKeyWarning)
                cfg = _resolve_config(args)
            for w in retired:  # one line each, like the errors, not Python's file:line warning format
                print(f"sslviz: warning: {w.message}", file=sys.stderr)
            for message in budget_warnings(cfg):  # before it starts: a short run measures a method's early phase
                print(f"sslviz: warning: {message}", file=sys.stderr)
            if args.save_config:
                args.save_config.write_text(cfg.to_yaml())
                print(f"wrote {args.save_config}")
                return 0
            from .runs import worker

            if args.background:
                print(f"run {worker.submit(store, cfg)} queued in {store.path}")
                return 0
            return _train_foreground(store, worker.record(store, cfg, pid=os.getpid()))
        if args.command == "sweep":
            return _sweep_command(store, args)
        if getattr(args, "run", None) is not None and store.run(args.run) is None:  # every command taking a run id
            raise NoSuchRun(args.run, store.path)
        if args.command == "resume":
            from .runs import worker

            # The same transition as the dashboard's Resume: queued for a worker, or running here at once.
            worker.resume(store, args.run, foreground=not args.background)
            if args.background:
                print(f"run {args.run} queued to resume")
                return 0
            return _train_foreground(store, args.run)
        if args.command == "stop":
            store.request_stop(args.run)
            print(f"stop requested for run {args.run}")
        elif args.command == "delete":
            from .runs import worker

            worker.delete(store, args.run)
            print(f"run {args.run} deleted")
        elif args.command in ("archive", "unarchive"):
            store.set_archived(args.run, args.command == "archive")
            print(f"run {args.run} {args.command}d")
        elif args.command == "list":
            runs = store.runs(include_archived=args.all)
            if runs.empty:
                print(f"no runs yet in {store.path}; start one with: python -m sslviz train")
            else:
                runs = runs.assign(status=[_status_text(r) for _, r in runs.iterrows()])
                cols = ["id", "name", "preset", "status", "step", "total_steps", "device", "val_balanced_accuracy",
                        "val_accuracy", "test_balanced_accuracy", "test_accuracy", "code_version"]
                if args.all:
                    cols.insert(4, "archived")
                print(runs[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        elif args.command == "show":
            _show(store, args.run)
        elif args.command == "evaluate":
            from .runs.worker import evaluate_now

            record = evaluate_now(store, args.run, tuple(args.split or ("test",)))
            for split, m in record["eval"].items():
                print(f"run {args.run} step {record['step']} {records.SPLIT_LABELS[split]}: accuracy "
                      f"{m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}")
        elif args.command == "export":
            args.out.mkdir(parents=True, exist_ok=True)
            for name, df in store.export(args.run).items():
                path = args.out / f"run{args.run}_{name}.{args.format}"
                df.to_csv(path, index=False) if args.format == "csv" else df.to_parquet(path, index=False)
                print(path)
        elif args.command == "doctor":
            from .runs import doctor

            rep = doctor.report(store, args.run, truth=not args.no_truth)
            if args.try_k is not None:
                from .runs import worker
                from .runs.sweep_spec import parse_seeds

                if not 1 <= args.try_k <= len(rep["suggestions"]):
                    raise ValueError(f"--try must be from 1 to {len(rep['suggestions'])} (the suggestions listed for "
                                     f"run {args.run}); got {args.try_k}.")
                chosen = doctor.Suggestion(**{**rep["suggestions"][args.try_k - 1],
                                              "addresses": tuple(rep["suggestions"][args.try_k - 1]["addresses"])})
                ids = doctor.launch_trial(store, args.run, chosen, doctor.target_finding(rep["findings"], chosen),
                                          parse_seeds(args.seeds) if args.seeds else (),
                                          submit=lambda cfg: worker.submit(store, cfg))
                print(f"trying {chosen.technique} for run {args.run}: run(s) {', '.join(map(str, ids))} queued; "
                      f"python -m sslviz doctor {args.run} gives the verdict once they finish")
                return 0
            print(doctor.to_json(rep) if args.json else doctor.format_text(rep))
        elif args.command == "presets":
            for name, knobs in PRESETS.items():
                print(f"{name:12s} {PRESET_DESCRIPTIONS[name]}")
                if knobs:
                    print(" " * 13 + ", ".join(f"{k}={v}" for k, v in knobs.items()))
        elif args.command == "worker":
            from .runs.worker import run_worker

            run_worker(store, args.run)
        elif args.command == "spare":
            from .runs.worker import SPARE_IDLE_S, run_spare

            run_spare(store, SPARE_IDLE_S if args.idle is None else args.idle, owner=args.owner)
        return 0
    except USER_ERRORS as exc:
        print(f"sslviz: error: {exc}", file=sys.stderr)
        return 2
