"""The bias doctor on planted records: each kind of finding fires with the right classes and evidence where its problem
is planted, and stays silent on a run without it (a balanced gamma-1 run included); every finding that can read the
hidden truth also fires from its estimate with the truth hidden. Then the CLI on real short runs."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sslviz import cli
from sslviz.engine.config import TrainConfig
from sslviz.runs import doctor

K = 4
NAMES = ["a", "b", "c", "d"]
STEPS = list(range(10, 210, 10))  # 20 logging windows


def planted(*, labeled=(400, 200, 100, 50), truth=(400, 200, 100, 50), pl_share=None, accepted_rate=(0.5,) * K,
            precision=(0.95,) * K, threshold=(0.95,) * K, confidence=(0.97,) * K, val_recall=(0.8,) * K,
            val_predicted=None, val_acc=None, cfg=None, per_window=200):
    """Records of a run whose unlabeled windows hold ``per_window`` samples drawn from ``truth``: the model predicts
    class c for a ``pl_share`` of them (default: the truth), accepts ``accepted_rate`` of those with ``precision``;
    validation: 100 samples per class, recalled at ``val_recall`` (the misses spread evenly, or all to the class
    ``val_predicted`` names)."""
    truth_share = np.asarray(truth, float) / np.sum(truth)
    conf = np.zeros((K, K))
    for c in range(K):
        hit = 100 * val_recall[c]
        conf[c, c] = hit
        if val_predicted is None:
            conf[c, [j for j in range(K) if j != c]] = (100 - hit) / (K - 1)
        else:
            conf[c, val_predicted] += 100 - hit
    # by default the model predicts on unlabeled data as it does on validation: P(pred) = P(pred | y) P(y)
    pl = np.asarray(pl_share if pl_share is not None else (conf / conf.sum(axis=1, keepdims=True)).T @ truth_share)
    rows = []
    for step in STEPS:
        for c in range(K):
            n_pl = int(round(per_window * pl[c]))
            n_acc = int(round(n_pl * accepted_rate[c]))
            rows.append(dict(step=step, cls=c, threshold=threshold[c], conf_pl=confidence[c], conf_true=confidence[c],
                             n_pl=n_pl, n_accepted=n_acc, n_true=int(round(per_window * truth_share[c])),
                             n_correct=int(round(n_acc * precision[c]))))
    acc = val_acc if val_acc is not None else [float(np.mean(val_recall))] * 5
    evals = pd.DataFrame({"step": [40 * (i + 1) for i in range(len(acc))], "balanced_accuracy": acc})
    return doctor.RunRecords(np.asarray(labeled, float), np.asarray(truth, float), NAMES, pd.DataFrame(rows), evals,
                             conf, cfg or TrainConfig(steps=200), STEPS[-1])


def kinds(records) -> dict:
    return {f.kind: f for f in doctor.diagnose(records)}


def test_a_run_without_a_problem_gets_no_finding_with_or_without_the_truth():
    healthy = planted()
    assert doctor.diagnose(healthy) == [] and doctor.diagnose(healthy.hidden()) == []
    balanced = planted(labeled=(100,) * K, truth=(100,) * K)  # gamma 1
    assert doctor.diagnose(balanced) == [] and doctor.diagnose(balanced.hidden()) == []


@pytest.mark.parametrize("hide", [False, True], ids=["truth", "estimate"])
def test_tail_starvation_names_the_starved_classes(hide):
    r = planted(accepted_rate=(0.6, 0.5, 0.02, 0.0))
    f = kinds(r.hidden() if hide else r)["tail_starvation"]
    assert f.classes == (2, 3) and f.severity == "severe" and f.source == ("estimate" if hide else "truth")
    assert f.evidence["classes"]["d"]["accepted"] == 0 and f.steps == (110, 200)
    assert f.evidence["classes"]["c"]["share_unlabeled"] == pytest.approx(100 / 750, abs=0.02)
    assert "tail_starvation" not in kinds(planted(accepted_rate=(0.6, 0.5, 0.4, 0.3)))  # less, not starved


@pytest.mark.parametrize("hide", [False, True], ids=["truth", "estimate"])
def test_contamination_names_the_class_that_absorbs_wrong_labels(hide):
    # with the truth: its pseudo-labels are wrong; the estimate reads validation: the misses all go to class 0
    r = planted(precision=(0.3, 0.95, 0.95, 0.95), val_recall=(0.95, 0.6, 0.6, 0.6), val_predicted=0)
    f = kinds(r.hidden() if hide else r)["contamination"]
    assert f.classes == (0,) and f.severity == ("mild" if hide else "severe")
    assert f.evidence["classes"]["a"]["precision"] == pytest.approx(0.3 if not hide else 100 / 220, abs=0.01)
    assert "contamination" not in kinds(planted(precision=(0.85, 0.95, 0.9, 0.95)))


def test_threshold_starvation_needs_predictions_that_never_pass():
    r = planted(accepted_rate=(0.5, 0.5, 0.5, 0.0), threshold=(0.95, 0.95, 0.95, 0.95), confidence=(0.97, 0.97, 0.97, 0.6))
    f = kinds(r)["threshold_starvation"]
    assert f.classes == (3,) and f.since == 10 and f.evidence["classes"]["d"]["windows"] == 20
    assert f.evidence["classes"]["d"]["threshold"] == 0.95 and f.evidence["classes"]["d"]["mean_confidence"] == 0.6
    # never predicted at all: not a threshold problem; predicted and accepted: no problem
    assert "threshold_starvation" not in kinds(planted(pl_share=(0.5, 0.3, 0.2, 0.0), accepted_rate=(0.5, 0.5, 0.5, 0.0)))
    assert "threshold_starvation" not in kinds(planted(confidence=(0.97, 0.97, 0.97, 0.6)))


def test_majority_drift_from_concentrated_predictions_and_from_a_falling_accuracy():
    collapsed = kinds(planted(val_recall=(1.0, 0.3, 0.1, 0.05), val_predicted=0))["majority_drift"]
    assert collapsed.classes == (0,) and set(collapsed.evidence["ignored"]) >= {"c", "d"}
    falling = kinds(planted(val_acc=[0.5, 0.7, 0.72, 0.6, 0.55]))["majority_drift"]
    assert falling.since == 120 and falling.evidence["drop"] == pytest.approx(0.17)
    assert falling.severity == "severe"
    assert "majority_drift" not in kinds(planted(val_acc=[0.5, 0.7, 0.72, 0.7, 0.71]))  # noise, not a fall


@pytest.mark.parametrize("hide", [False, True], ids=["truth", "estimate"])
def test_distribution_mismatch_says_reversed_and_that_alignment_to_labeled_works_against_it(hide):
    cfg = TrainConfig(steps=200, dist_align="labeled")
    r = planted(truth=(50, 100, 200, 400), cfg=cfg)
    f = kinds(r.hidden() if hide else r)["distribution_mismatch"]
    assert f.evidence["shape"] == "reversed" and f.severity == "severe"
    assert f.evidence["aligned_to_labeled"] == ["distribution alignment to the labeled profile"]
    assert "distribution_mismatch" not in kinds(planted(cfg=cfg))
    names = [s.technique for s in doctor.suggest(doctor.diagnose(r), cfg)]
    assert names[0] == "ACR (adaptive consistency regularizer)"  # declared for a mismatched unlabeled profile
    assert "Distribution alignment" not in names  # on already: not suggested again


def test_not_yet_itself_reads_the_declared_budgets():
    f = kinds(planted(cfg=TrainConfig(steps=200, acr=True)))["not_yet_itself"]
    assert f.severity == "info" and f.evidence == {"technique": "acr", "needs": 4000, "at": 200, "budget": 200,
                                                   "phase": f.evidence["phase"]}
    assert "early phase only" in f.summary
    assert "not_yet_itself" not in kinds(planted(cfg=TrainConfig(steps=200)))


def test_suggestions_rank_declared_remedies_and_put_da_last_under_reversed_data():
    r = planted(truth=(50, 100, 200, 400), accepted_rate=(0.6, 0.5, 0.02, 0.0))
    ranked = doctor.suggest(doctor.diagnose(r), r.cfg)
    names = [s.technique for s in ranked]
    assert "Distribution alignment" not in names[:3] and set(names[-2:]) == {"DARP", "Distribution alignment"}
    assert {s.caution for s in ranked[-2:]} == {"declared to work against reversed unlabeled data"}
    assert not any(s.caution for s in ranked[:-2])
    assert all(s.rests_on.startswith("declared") for s in ranked)


def test_estimate_profile_recovers_a_planted_shift():
    conf = np.array([[80, 10, 10], [10, 80, 10], [5, 5, 90]], float)
    truth = np.array([0.6, 0.3, 0.1])
    predicted = (conf / conf.sum(axis=1, keepdims=True)).T @ truth  # what the model predicts on such data
    assert doctor.estimate_profile(conf, predicted * 1000) == pytest.approx(truth, abs=1e-9)


def test_doctor_cli_on_a_finished_run_a_running_one_json_and_an_unknown_id(store, tiny, capsys):
    from sslviz.runs import worker

    rid = worker.record(store, TrainConfig(**{**tiny, "steps": 60}))  # queued, with its split's counts
    assert worker.run_worker(store, rid) == "finished"
    assert cli.main(["--store", str(store.path), "doctor", str(rid)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {rid} at step 60: ")
    assert cli.main(["--store", str(store.path), "doctor", str(rid), "--json", "--no-truth"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["run"] == rid and rep["truth_used"] is False and isinstance(rep["findings"], list)
    assert set(rep["summary"]) == {"val_head_tail_gap", "val_tail_recall", "kl_pseudo_true", "head_share"}
    queued = store.create_run(TrainConfig(**tiny).to_dict())  # queued, nothing logged, no split recorded
    assert cli.main(["--store", str(store.path), "doctor", str(queued)]) == 0
    assert capsys.readouterr().out.startswith(f"run {queued} at step 0: no finding")
    running = store.create_run(store.run(rid)["config"], info=store.run(rid)["info"], pid=os.getpid())
    for step in (5, 10, 15, 20, 25):  # running in this process: the tail predicted, never accepted
        store.log(running, {"step": step, "wall": float(step), "scalars": {"loss": 1.0}, "classes": [
            dict(threshold=0.95, conf_pl=0.97 if c < 4 else 0.5, conf_true=0.5, n_pl=20, n_accepted=10 if c < 4 else 0,
                 n_true=20, n_correct=10 if c < 4 else 0, precision=1.0, recall=0.5) for c in range(6)]})
    assert store.run(running)["status"] == "running"
    assert cli.main(["--store", str(store.path), "doctor", str(running)]) == 0
    assert capsys.readouterr().out.startswith(f"run {running} at step 25: 1 finding: threshold starvation")
    assert cli.main(["--store", str(store.path), "doctor", "999"]) == 2
    assert "There is no run 999" in capsys.readouterr().err


def test_store_evidence_ranks_what_worked_here_first_and_says_how_strong_it_is():
    from sslviz.engine.registry import TECHNIQUES

    cfg = TrainConfig(dataset="digits", gamma=50.0, steps=600)
    run = lambda tail, seed=0, **knobs: doctor.StoreRun(TrainConfig(**{**cfg.to_dict(), "seed": seed, **knobs}).to_dict(),
                                                         0.6 + tail / 4, tail)  # noqa: E731
    runs = [run(0.05, 0), run(0.07, 1), run(0.30, 0, abc=True), run(0.36, 1, abc=True),  # ABC: strong, better
            run(0.01, 0, logit_adjust_tau=1.0, lr=0.1),  # LA: weak (another lr), worse
            run(0.9, 0, gamma=10.0, saw=True)]  # SAW: other data, no evidence
    by_name = {t.name: t for t in TECHNIQUES}
    text, diff = doctor.store_evidence(by_name["abc"], cfg, runs)
    assert text == ("store, strong: validation 3-rarest recall 0.06 -> 0.33 (balanced accuracy 0.615 -> 0.682), "
                    "2 run(s) off vs 2 on, seeds' spread 0.03") and diff == pytest.approx(0.27)
    text, diff = doctor.store_evidence(by_name["logit_adjust"], cfg, runs)
    assert text.startswith("store, weak: validation 3-rarest recall 0.20 -> 0.01") and diff < 0  # ABC runs count as off
    assert doctor.store_evidence(by_name["saw"], cfg, runs) is None

    r = planted(accepted_rate=(0.6, 0.5, 0.02, 0.0), cfg=cfg)
    ranked = doctor.suggest(doctor.diagnose(r), cfg, runs)
    assert ranked[0].technique.startswith("ABC") and ranked[0].rests_on.startswith("store, strong")
    la = [s.technique for s in ranked].index("Logit adjustment")
    assert all(not s.rests_on.startswith("store") for s in ranked[la + 1:])  # after it: declared only, or cautions
    assert ranked[la].rests_on.startswith("store, weak") and la > len(ranked) // 2


def test_trial_configs_change_only_the_suggestion_and_add_seeds_to_both_arms():
    cfg = TrainConfig(dataset="digits", gamma=50.0, steps=600, seed=3)
    trials = doctor.trial_configs(cfg, {"abc": True}, [3, 4])
    assert [(arm, c.seed, c.abc) for arm, c in trials] == [("treatment", 3, True), ("treatment", 4, True),
                                                           ("control", 4, False)]
    for _, c in trials:
        assert {k for k, v in c.to_dict().items() if cfg.to_dict()[k] != v} <= {"seed", "abc"}


def test_try_it_from_the_cli_launches_the_change_beside_the_run_and_gives_the_verdict(store, tiny, capsys,
                                                                                    monkeypatch):
    """doctor RUN --try 1 --seeds 1 queues the change (seeds 0 and 1) and the run as it was (seed 1); once they
    finish, doctor RUN says what the finding's measure did, on validation, with the seeds."""
    from sslviz.runs import worker

    monkeypatch.setenv("SSLVIZ_CPU_SLOTS", "0")  # queued only: this test trains them itself
    rid = worker.record(store, TrainConfig(**{**tiny, "steps": 60, "gamma": 20.0}))
    assert worker.run_worker(store, rid) == "finished"
    rep = doctor.report(store, rid)
    assert rep["suggestions"], rep  # toy2d at gamma 20 after 60 steps: the tail is starved
    assert cli.main(["--store", str(store.path), "doctor", str(rid), "--try", "1", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    technique = rep["suggestions"][0]["technique"]
    assert out.startswith(f"trying {technique} for run {rid}: run(s) {rid + 1}, {rid + 2}, {rid + 3} queued")
    trials = [store.run(i)["info"]["trial"] for i in (rid + 1, rid + 2, rid + 3)]
    assert [t["arm"] for t in trials] == ["treatment", "treatment", "control"] and {t["of"] for t in trials} == {rid}
    assert [store.run(i)["config"]["seed"] for i in (rid + 1, rid + 2, rid + 3)] == [0, 1, 1]
    assert doctor.verdicts(store, rid) == [f"{technique} for {doctor.BY_NAME[trials[0]['finding']].title}: waiting "
                                           f"for run(s) #{rid + 1}, #{rid + 2}, #{rid + 3} to finish"]
    for i in (rid + 1, rid + 2, rid + 3):
        assert worker.run_worker(store, i) == "finished"
    (verdict,) = doctor.verdicts(store, rid)
    assert re.fullmatch(rf"{re.escape(technique)} for [a-z /]+: validation (recall of the 3 rarest classes|balanced "
                        r"accuracy) [01]\.\d\d -> [01]\.\d\d, 2 seed\(s\) each, spread [01]\.\d\d: (it worked|it made "
                        r"it worse|within the seeds' spread: no effect shown)", verdict), verdict
    assert cli.main(["--store", str(store.path), "doctor", str(rid)]) == 0
    assert f"tried: {verdict}" in capsys.readouterr().out
    assert cli.main(["--store", str(store.path), "doctor", str(rid), "--try", "99"]) == 2
    assert "--try must be from 1 to" in capsys.readouterr().err


def test_doctor_reads_a_run_of_an_older_store(tmp_path, capsys):
    """A v0 store (no validation split, retired keys in its configs) is upgraded and diagnosed from its records."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "store_v0", tmp_path / "home")
    store = str(tmp_path / "home" / "runs.db")
    assert cli.main(["--store", store, "doctor", "3", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["step"] == 780 and {f["kind"] for f in rep["findings"]} >= {"tail_starvation", "threshold_starvation"}
    assert cli.main(["--store", store, "doctor", "2"]) == 0
    assert capsys.readouterr().out.startswith("run 2 at step 20: 1 finding: not yet itself — info")
