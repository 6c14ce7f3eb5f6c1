"""runfilter: which runs a picker offers (pure pandas)."""
import pandas as pd

from sslviz.dashboard.runfilter import RunFilter, choices, dataset_label, filter_runs


def _runs(sweep=False) -> pd.DataFrame:
    rows = [
        dict(id=4, name="long", preset="balanced", status="running", archived=0, config={"dataset": "/data/cifar-10-batches-py"}),
        dict(id=3, name="", preset="fixmatch", status="finished", archived=1, config={"dataset": "digits"}),
        dict(id=2, name="toy a", preset="fixmatch", status="failed", archived=0, config={"dataset": "toy2d"}),
        dict(id=1, name="Old", preset="freematch", status="stopped", archived=0, config={"dataset": "digits"}),
    ]
    df = pd.DataFrame(rows)  # as RunStore.runs() gives them: config decoded
    if sweep:
        df["sweep"] = ["g1", None, "g1", "g2"]
    return df


def ids(df) -> list[int]:
    return df["id"].astype(int).tolist()


def test_archived_hidden_by_default_and_shown_on_request():
    assert ids(filter_runs(_runs())) == [4, 2, 1]
    assert ids(filter_runs(_runs(), RunFilter(show_archived=True))) == [4, 3, 2, 1]


def test_each_filter_and_their_conjunction():
    runs = _runs()
    assert ids(filter_runs(runs, RunFilter(preset=("fixmatch",), show_archived=True))) == [3, 2]
    assert ids(filter_runs(runs, RunFilter(dataset=("digits",)))) == [1]
    assert ids(filter_runs(runs, RunFilter(dataset=("cifar-10-batches-py",)))) == [4]
    assert ids(filter_runs(runs, RunFilter(status=("failed", "stopped")))) == [2, 1]
    assert ids(filter_runs(runs, RunFilter(text="OLD"))) == [1]  # case-insensitive, name
    assert ids(filter_runs(runs, RunFilter(text="#2"))) == [2]
    assert ids(filter_runs(runs, RunFilter(text="toy2"))) == [2]  # the dataset
    assert ids(filter_runs(runs, RunFilter(preset=("fixmatch",), status=("finished",)))) == []  # #3 is archived
    assert ids(filter_runs(runs, RunFilter(preset=("freematch",)), keep=[4, 3])) == [4, 3, 1]  # kept whatever


def test_sweep_only_when_runs_have_one():
    assert "sweep" not in choices(_runs())
    assert choices(_runs())["dataset"] == ["cifar-10-batches-py", "digits", "toy2d"]
    assert choices(_runs(sweep=True))["sweep"] == ["g1", "g2"]
    assert ids(filter_runs(_runs(sweep=True), RunFilter(sweep=("g1",)))) == [4, 2]
    assert ids(filter_runs(_runs(), RunFilter(sweep=("g1",)))) == [4, 2, 1]  # no column: no filter


def test_dataset_label():
    assert dataset_label("toy2d") == "toy2d" and dataset_label("/a/b/imgs/") == "imgs"
