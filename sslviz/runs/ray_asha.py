"""Tuning a knob with early stopping: a sweep's cells as Ray Tune trials under ASHA; this process writes the store.

``python -m sslviz sweep --grid lr=0.01,0.03,0.1 --executor ray --early-stop asha`` records the sweep with its
``EarlyStop`` options (``sweeps.options["early_stop"]``) and calls :func:`tune`: one ``tune.Tuner`` over the
sweep's queued runs (a grid search over their ids), each trial asking for 1 CPU (and a GPU as
``ray_executor.gpus_for`` decides). A trial trains its run's config and, at each validation step, reports the
validation balanced accuracy with the trainer records since its previous report (:func:`trial`; a trial that
raises attaches the records since its last report to its exception). ASHA
(``ASHAScheduler``, time = that training step) compares the trials at its rungs (grace_period,
grace_period x reduction_factor, ... steps) and stops those below a rung's cutoff.

The store is written here only, by a Tune callback on this driver (:class:`_Writer`): Tune hands each reported
result to the callbacks once, the one a stop was decided on included, and the callback writes its records
and drops them from the result (Tune keeps the metric only). The trial process has no store (``NO_STORE``, as a
plain Ray trial). Each run ends in the store through its lifecycle: ``finished`` at its last step; ``stopped``
with an event "stopped early by ASHA at step N (validation balanced accuracy x, below the cutoff y of the rung at
step M)"; ``stopped`` on request (the store's stop flag, read by Tune's stopper, as ``sweep stop`` and the page
set it); ``failed`` with the trainer's error. ASHA's stops are final: Tune kills the trial, which keeps no
checkpoint, and a tuned sweep is not resumed (``sweep.resume`` refuses; start a new one).

Ray Tune (``ray[tune]``, the ``sslviz[ray]`` extra) is imported lazily, as Ray is.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import lifecycle
from .host import RunHost
from .ray_executor import connect, gpus_for, trial_setup

TUNE_METRIC = "val_balanced_accuracy"  # what early stopping compares trials on: validation, never test
ASHA_EVENT = "stopped early by ASHA"  # how the event of a run ASHA stopped begins
STEP = "step"  # ASHA's time attribute: the training step of the validation a result reports
PENDING = "sslviz_records"  # the attribute of a failed trial's exception holding its records since the last report


def tune_modules():
    """``(ray.tune, ASHAScheduler)``; RuntimeError saying how to install them when Ray Tune is missing."""
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError as exc:
        raise RuntimeError("Early stopping needs Ray Tune: pip install 'sslviz[ray]' (ray[tune]==2.60.0); "
                           f"importing it failed: {exc}") from None
    return tune, ASHAScheduler


def trial(config: dict, *, configs: dict, threads: int = 1) -> None:
    """One Tune trial: train run ``config["run_id"]`` (its config from ``configs``) and, at each validation step,
    report the validation metric with the trainer records since the previous report. Knows no store."""
    from ray import tune

    from ..engine.trainer import train

    run_id = config["run_id"]
    cfg, device = trial_setup(configs[run_id], threads)
    pending: list[dict] = []

    def report(record: dict) -> None:
        pending.append(record)
        val = (record.get("eval") or {}).get("val")
        # Only validation steps report: ASHA decides on the metric, and Tune refuses a result without it. The
        # trainer validates at its first log step and its last, so no record is left behind when it returns.
        if val is not None:
            tune.report({"run_id": run_id, "device": device, STEP: int(record["step"]),
                         TUNE_METRIC: float(val["balanced_accuracy"]), "records": list(pending)})
            pending.clear()

    try:
        train(cfg, on_log=report)
    except Exception as exc:
        # Tune takes a result only with the metric, so the records since the last validation ride on the error,
        # which Tune pickles for the driver (``_trial_error``): the steps before a divergence are what explain it.
        setattr(exc, PENDING, list(pending))
        raise


class _Writer:
    """The driver's half of each trial's run host: claims, writes each reported batch once, beats, ends each run."""

    def __init__(self, store, steps: dict[int, int]):
        self.store, self.steps = store, steps  # steps: run id -> its budget (a trial that got there finished)
        self.hosts = {run_id: RunHost(store, run_id, where=" (Ray Tune trial)", placeholder="ray") for run_id in steps}
        self.verdicts: dict[str, str] = {}  # trial id -> why ASHA stopped it (the scheduler fills it)
        self.results: dict[int, str] = {}  # run id -> the status it ended in
        self._beat = 0.0

    def __getstate__(self):
        # Tune pickles its run config (this writer, in the callback and the stopper) into its folder for
        # Tuner.restore, which sslviz does not use; the store's connection does not pickle, and no copy writes.
        return {**self.__dict__, "store": None, "hosts": {}}

    def should_stop(self, trial_id: str, result: dict) -> bool:
        """Tune's stopper: the run was asked to stop (its stop flag, or stopped while queued) or deleted."""
        row = self.store.run(result["run_id"])
        return row is None or row["status"] not in lifecycle.ACTIVE or bool(row["stop_requested"])

    def result(self, run_id: int, result: dict) -> None:
        records = result.pop("records")  # written here, once; Tune keeps only the metric in its trial state
        host = self.hosts[run_id]
        if not host.claimed:
            if not host.claim(f"ray:{result['device']}"):  # stopped while queued, or deleted: the stopper ends it
                return
            host.started(result["device"])
        for record in records:
            host.log(record)

    def complete(self, run_id: int, trial_id: str, last: dict) -> None:
        step = int(last.get(STEP, 0))
        if step >= self.steps[run_id]:
            self._end(run_id, lifecycle.FINISHED)
        elif trial_id in self.verdicts:
            self._end(run_id, lifecycle.STOPPED, message=self.verdicts[trial_id])
        else:
            row = self.store.run(run_id)
            asked = row is not None and row["stop_requested"]
            self._end(run_id, lifecycle.STOPPED, message=f"stopped {'on request' if asked else 'by Ray Tune'} at step "
                                                         f"{step}")

    def fail(self, run_id: int, error: str, records=()) -> None:
        """End the run failed with ``error``, after its ``records`` since the last report (a trial fails between
        two validations; before its first report it has none)."""
        host = self.hosts[run_id]
        if host.claimed:
            for record in records:
                host.log(record)
        self._end(run_id, lifecycle.FAILED, error)

    def heartbeat(self) -> None:
        """Every running trial's run, every HEARTBEAT_EVERY seconds: trials report only at validation steps."""
        if time.time() - self._beat >= lifecycle.HEARTBEAT_EVERY:
            self._beat = time.time()
            for run_id, host in self.hosts.items():
                if host.claimed and run_id not in self.results:
                    host.beat()

    def end_leftovers(self, run_ids) -> None:
        """After the tune: a run still queued or running (Ctrl-C, a Tune error) ends stopped, saying so."""
        for run_id in run_ids:
            row = self.store.run(run_id)
            if row is None or row["status"] not in lifecycle.ACTIVE:
                continue
            if row["status"] == lifecycle.QUEUED:
                self.store.request_stop(run_id)
                self.store.add_event(run_id, "stopped", "the tune ended before this trial started")
                self.results[run_id] = lifecycle.STOPPED
            else:
                self._end(run_id, lifecycle.STOPPED,
                          message=f"the tune ended before this trial did (step {row['step']})")

    def _end(self, run_id: int, status: str, error: str | None = None, message: str | None = None) -> None:
        ended = self.hosts[run_id].end(status, error, message)
        if ended == status:  # a verdict given meanwhile (stopped while queued, deleted) is not this tune's
            self.results[run_id] = status


def _verdict(bracket, trial_id: str, result: dict, before: dict) -> str:
    """Why ASHA stopped a trial: the rung this result recorded it in (``before``: each rung's trial ids before the
    result) and that rung's cutoff over the other trials, the one the trial fell below. When no rung took it just
    now (ASHA may decide on a rung it filled earlier), the highest rung holding it, and no cutoff when that rung
    has no other trial; never an error that would abort the tune."""
    step, value = int(result[STEP]), float(result[TUNE_METRIC])
    holding = [(m, r) for m, r in bracket._rungs if trial_id in r]  # rungs are kept highest first
    new = [(m, r) for m, r in holding if trial_id not in before.get(m, ())]
    if not (new or holding):
        return f"{ASHA_EVENT} at step {step} (validation balanced accuracy {value:.3f})"
    milestone, recorded = (new or holding)[0]
    others = {k: v for k, v in recorded.items() if k != trial_id}
    cutoff = bracket.cutoff(others) if others else None
    where = (f"below the cutoff {float(cutoff):.3f} of the rung at step {int(milestone)}" if cutoff is not None
             else f"at the rung at step {int(milestone)}")
    return f"{ASHA_EVENT} at step {step} (validation balanced accuracy {value:.3f}, {where})"


def _scheduler(ASHAScheduler, verdicts: dict, **kwargs):
    """Ray Tune's ASHAScheduler that also records, per trial it stops before ``max_t``, why (:func:`_verdict`).
    Reads ASHA's brackets (``_trial_info``, ``_rungs``): private, hence ``ray`` pinned."""

    class Asha(ASHAScheduler):
        def on_trial_result(self, controller, trial, result):
            bracket = self._trial_info.get(trial.trial_id)
            before = {m: set(r) for m, r in bracket._rungs} if bracket is not None else {}
            action = super().on_trial_result(controller, trial, result)
            if action == self.STOP and result.get(STEP, 0) < self._max_t:
                verdicts[trial.trial_id] = _verdict(self._trial_info[trial.trial_id], trial.trial_id, result, before)
            return action

    return Asha(**kwargs)


def _trial_error(trial) -> tuple[str, list[dict]]:
    """The trainer's exception of a failed trial ("Diverged: Training diverged at step 10 ...") and the records it
    carried (``trial`` attaches those since the last report), from the error Tune pickled in the trial's folder on
    this driver (``get_pickled_error`` reads the storage copy, synced later)."""
    from ray import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            error = cloudpickle.load(f)
    except (TypeError, OSError):  # no file: Tune recorded no exception object
        return "the Ray Tune trial failed", []
    cause = getattr(error, "cause", None) or error  # a RayTaskError wraps the trainer's exception
    return f"{type(cause).__name__}: {cause}", list(getattr(cause, PENDING, None) or [])


def _callback(tune, writer: _Writer):
    """A Tune callback handing the driver's trial events to ``writer``."""

    class StoreCallback(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            writer.result(trial.config["run_id"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            writer.complete(trial.config["run_id"], trial.trial_id, trial.last_result or {})

        def on_trial_error(self, iteration, trials, trial, **info):
            writer.fail(trial.config["run_id"], *_trial_error(trial))

        def on_step_end(self, iteration, trials, **info):
            writer.heartbeat()

    return StoreCallback()


def tune(store, sweep_id: int, *, address: str | None = None, num_cpus: int | None = None,
         gpus_per_run: float | None = None, threads: int = 1) -> dict[int, str]:
    """Run every queued Ray run of tuning sweep ``sweep_id`` as a Ray Tune trial under ASHA, writing its records
    into ``store`` here. Returns ``{run id: final status}``."""
    ray_tune, ASHAScheduler = tune_modules()
    from ..engine.config import TrainConfig

    options = store.sweep(sweep_id)["options"]
    early = options["early_stop"]
    connect(address or options.get("address"), num_cpus)
    runs = store.runs(include_archived=True)
    queued = runs[(runs["sweep"] == sweep_id) & (runs.status == lifecycle.QUEUED) & (runs.executor == "ray")]
    configs = {int(r): store.run(int(r))["config"] for r in queued.sort_values("id").id}
    if not configs:
        return {}
    cfgs = {run_id: TrainConfig.from_dict(c) for run_id, c in configs.items()}
    gpus = {run_id: gpus_for(c, gpus_per_run) for run_id, c in cfgs.items()}
    writer = _Writer(store, {run_id: c.steps for run_id, c in cfgs.items()})
    scheduler = _scheduler(ASHAScheduler, writer.verdicts, time_attr=STEP, metric=early["metric"], mode="max",
                           max_t=early["max_t"], grace_period=early["grace_period"],
                           reduction_factor=early["reduction_factor"])
    storage = options.get("storage_path") or str(Path(store.path).resolve().parent / "ray_results")
    trainable = ray_tune.with_resources(ray_tune.with_parameters(trial, configs=configs, threads=threads),
                                        lambda config: {"cpu": 1, "gpu": gpus[config["run_id"]]})
    tuner = ray_tune.Tuner(
        trainable, param_space={"run_id": ray_tune.grid_search(list(configs))},
        tune_config=ray_tune.TuneConfig(scheduler=scheduler),
        run_config=ray_tune.RunConfig(name=f"{Path(store.path).stem}-sweep{sweep_id}", storage_path=storage,
                                      callbacks=[_callback(ray_tune, writer)], stop=writer.should_stop, verbose=0,
                                      failure_config=ray_tune.FailureConfig(max_failures=0)))
    try:
        tuner.fit()
    finally:
        writer.end_leftovers(configs)
    return writer.results
