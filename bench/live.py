"""Cost of one Live refresh and of Compare on long runs: server time and bytes of figure JSON.

A store is filled through the real record path (``RunStore.log`` with records shaped like the trainer's:
scalars, 10 classes, a pseudo-label confusion, a validation evaluation every 100 steps, technique state
``da.p_model`` (10 classes) and ``freematch.tau_t``; one planted one-interval burst of accepted
pseudo-labels in class 7) for runs of 5k, 50k and 500k training steps logged every 10. Compare's five runs
are that run and four copies of its rows (``INSERT ... SELECT``: the same rows the record path wrote).

The pages run under Streamlit's ``AppTest`` (the script a server runs on every refresh, widgets included):
one Live refresh is a rerun of the Live page with one tab open, timed per tab (median over repeats); its
bytes are the Plotly figure JSON the page sends (``plotly_chart``'s spec, what goes to the browser). Compare
is a rerun with the five runs selected.

``--code DIR`` runs the pages and store of another checkout (e.g. a ``git worktree`` of the commit before the
change) against the same store files, so before and after are measured side by side.

    python bench/live.py                                  # 5k, 50k, 500k; this checkout
    python bench/live.py --steps 5000,50000 --code /tmp/before --label before
    python bench/live.py --ema                            # ema_smooth (pandas) vs the TensorBoard loop
    python bench/live.py --steps 500000 --browser         # plus fresh-server first paint / first chart (Chromium)
    python bench/live.py --paints 10 --code /tmp/before --label before   # first paint only, 10 fresh servers
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/synthetic.py, from any working directory
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sslviz.dashboard.views import TABS  # noqa: E402  (the Live page's tabs)
from synthetic import trainer_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K = 10
LOG_EVERY, EVAL_EVERY = 10, 100
SPIKE_CLASS = 7
LIVE_TARGET_MS, LIVE_TARGET_KB = 150.0, 300.0
COMPARE_TARGET_MS, COMPARE_TARGET_KB = 300.0, 1000.0


def fill(store, steps: int) -> int:
    """A finished run of ``steps`` steps written through ``RunStore.log``; returns its id."""
    from sslviz.engine.config import from_preset

    rng = np.random.default_rng(0)
    cfg = from_preset("fixmatch", steps=steps, log_every=LOG_EVERY, eval_every=EVAL_EVERY).to_dict()
    rid = store.create_run(cfg, info={"class_names": [str(k) for k in range(K)],
                                      "labeled_counts": [int(50 * 50 ** (-k / (K - 1))) for k in range(K)],
                                      "unlabeled_counts": [int(40 * 50 ** (-k / (K - 1))) for k in range(K)]})
    store.update_run(rid, status="running")
    spike = (steps // 2) // LOG_EVERY * LOG_EVERY
    for step in range(LOG_EVERY, steps + 1, LOG_EVERY):
        record = trainer_record(rng, step, K, EVAL_EVERY, spike_class=SPIKE_CLASS if step == spike else None,
                                technique=True)
        if step == steps:
            record["eval"]["test"] = record["eval"]["val"]
        store.log(rid, record)
    store.update_run(rid, status="finished", finished=time.time())
    return rid


def copy_run(store, rid: int) -> int:
    """A new run with ``rid``'s registry row and metric rows (as the record path wrote them)."""
    from sslviz.runs import records

    run = store.run(rid)
    new = store.create_run(run["config"], info=run["info"])
    store.update_run(new, status="finished", finished=time.time(), step=int(run["step"]))
    for row in records.METRIC_ROWS:
        cols = [c for c in records.columns(row) if c != "run_id"]
        store._write([(f"INSERT INTO {row.TABLE} (run_id, {', '.join(cols)}) SELECT ?, {', '.join(cols)} "
                       f"FROM {row.TABLE} WHERE run_id = ?", (new, rid))])
    return new


def _apptest(code: Path, page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(code / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    return at


def _figure_bytes(at) -> int:
    return sum(len(el.proto.spec) for el in at.get("plotly_chart"))


def _timed(at, repeats: int, tab: str | None = None) -> tuple[list[float], int]:
    times = []
    for _ in range(repeats):
        if tab is not None:  # the open tab, as the browser's ?tab= and the bound widget hold it
            at.query_params["tab"] = tab
            at.session_state["tab"] = tab
        t = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    return times, _figure_bytes(at)


def live(code: Path, rid: int, repeats: int) -> dict:
    """Per tab: median seconds of a Live rerun with that tab open, and its figure JSON bytes."""
    at = _apptest(code, "pages/live.py")
    at.query_params["run"] = str(rid)
    out = {}
    for tab in TABS:
        first, _ = _timed(at, 1, tab)  # open it: the first read of a series bins every row (then kept)
        times, size = _timed(at, repeats, tab)
        out[tab] = dict(ms=1e3 * statistics.median(times), lo=1e3 * min(times), hi=1e3 * max(times), bytes=size,
                        first_ms=1e3 * first[0])
    return out


def compare(code: Path, ids: list[int], repeats: int) -> dict:
    at = _apptest(code, "pages/compare.py")
    at.query_params["runs"] = ",".join(map(str, ids))
    first, _ = _timed(at, 1)
    times, size = _timed(at, repeats)
    return dict(ms=1e3 * statistics.median(times), lo=1e3 * min(times), hi=1e3 * max(times), bytes=size,
                first_ms=1e3 * first[0])


def many_runs(code: Path, path: Path, extra: int, repeats: int) -> dict:
    """A Live refresh (worst tab) and the queue pump (``worker.reap``, run by every refresh) on ``path``'s store,
    then again after adding ``extra`` finished runs (registry rows with a validation and a test evaluation each,
    as a store fills over months): the cost should not grow with them."""
    from sslviz.runs import worker
    from sslviz.runs.store import RunStore

    def measure() -> dict:
        store = RunStore(path)
        rid = int(store.runs()["id"].min())
        reaps = []
        for _ in range(repeats):
            t = time.perf_counter()
            worker.reap(store, spawn=True)
            reaps.append(time.perf_counter() - t)
        tabs = live(code, rid, repeats)
        worst = max(tabs, key=lambda k: tabs[k]["ms"])
        n = len(store.runs(include_archived=True))
        store.close()
        return dict(runs=n, reap_ms=1e3 * statistics.median(reaps), live_ms=tabs[worst]["ms"], tab=worst)

    before = measure()
    store = RunStore(path)
    template = store.run(int(store.runs()["id"].min()))
    for _ in range(extra):
        new = store.create_run(template["config"], info=template["info"])
        store.update_run(new, status="finished", finished=time.time(), step=int(template["step"]))
        for split in ("val", "test"):
            store._write([("INSERT INTO evals (run_id, step, wall, split, accuracy, balanced_accuracy) VALUES (?, ?, 0, ?, ?, ?)",
                           (new, int(template["step"]), split, 0.5, 0.5))])
    store.close()
    return dict(before=before, after=measure())


def ema(repeats: int = 20) -> None:
    from sslviz.dashboard import charts

    rng = np.random.default_rng(0)
    print("| points | loop (ms) | pandas ewm (ms) | loop / pandas | max abs difference |")
    print("|---|---|---|---|---|")
    for n in (300, 2000, 50_000):
        v = rng.normal(size=n).cumsum()
        v[rng.choice(n, n // 50, replace=False)] = np.nan
        res = {}
        for name, f in (("loop", charts.ema_smooth_loop), ("pandas", charts.ema_smooth)):
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                f(v, 0.6)
                times.append(time.perf_counter() - t)
            res[name] = statistics.median(times) * 1e3
        diff = np.nanmax(np.abs(charts.ema_smooth(v, 0.6) - charts.ema_smooth_loop(v, 0.6)))
        print(f"| {n} | {res['loop']:.3f} | {res['pandas']:.3f} | {res['loop'] / res['pandas']:.1f} | {diff:.1e} |")


# Stamps, in the page, the moment Setup's Start button is first in the DOM and visible (a MutationObserver: it runs
# as the DOM changes, before the frame is painted) and the next animation frame (that frame's paint), in seconds
# since the navigation started (``performance.now()``), i.e. since the first request. Playwright's own
# ``locator.wait_for`` polls 0, 20, 50, 100, 100 ms apart and then every 500 ms, so its clock reads a page that
# appears at 1.8 s as anywhere up to 2.3 s (measured beside this: 2.03-2.17 s against 1.73-2.04 s).
START_SHOWN = """
(() => {
  const shown = () => [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Start run' &&
      b.getBoundingClientRect().width > 0 && getComputedStyle(b).visibility !== 'hidden');
  const watch = new MutationObserver(() => {
    if (window.startShownAt === undefined && shown()) {
      window.startShownAt = performance.now() / 1000;
      requestAnimationFrame(() => { window.startPaintedAt = performance.now() / 1000; });
    }
  });
  document.addEventListener('DOMContentLoaded',
                            () => watch.observe(document.body, {childList: true, subtree: true, attributes: true}));
})();
"""
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def fresh_server(folder: Path):
    """``streamlit run app.py`` on a free port over ``$SSLVIZ_STORE``, as a user starts it; yields its URL once it
    answers its health check; stops it and the warm worker it kept for the next Start."""
    import socket
    import subprocess
    import urllib.request

    from sslviz.runs import worker
    from sslviz.runs.store import RunStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SSLVIZ_HOME": str(folder), "SSLVIZ_STORE": str(os.environ["SSLVIZ_STORE"])}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                            cwd=Path.cwd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        ready, starting = worker._spare_files(RunStore(os.environ["SSLVIZ_STORE"]))
        for pid in ready + starting:
            os.kill(pid, 15)


def first_paint(b, url: str) -> tuple[object, dict]:
    """Open ``url`` in a new page of browser ``b``: (the page, seconds from the request to Setup's Start button
    painted, and Playwright's reading of the same)."""
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    page.add_init_script(START_SHOWN)
    t = time.perf_counter()
    page.goto(url)
    page.get_by_role("button", name="Start run").wait_for(timeout=120_000)
    playwright_s = time.perf_counter() - t
    page.wait_for_function("() => window.startPaintedAt !== undefined")
    return page, {"first_paint_s": page.evaluate("window.startPaintedAt"), "first_paint_playwright_s": playwright_s}


def first_paints(folder: Path, n: int) -> list[dict]:
    """``first_paint`` on ``n`` fresh servers, one after the other."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        for _ in range(n):
            with fresh_server(folder) as url:
                b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
                out.append(first_paint(b, url)[1])
                b.close()
    return out


def browser(folder: Path, run_id: int) -> dict:
    """Seconds, on a fresh server (``streamlit run app.py``) in Chromium: first request -> Setup's Start button
    painted (``first_paint``); Start (default digits run) -> first chart with data on Live; then a new tab on
    ``run_id``'s Live page -> its first chart with data (a run this server has not read yet)."""
    from playwright.sync_api import sync_playwright

    from sslviz.runs import worker
    from sslviz.runs.store import RunStore

    has_chart = "() => [...document.querySelectorAll('.js-plotly-plot')].some(gd => gd.data && gd.data.length)"
    with fresh_server(folder) as url, sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
        page, out = first_paint(b, url)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
        t = time.perf_counter()
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/live?run=*", timeout=60_000)
        page.wait_for_function(has_chart, timeout=120_000)
        out["start_to_first_chart_s"] = time.perf_counter() - t  # at once: the warm worker may still import
        started = [int(page.url.split("run=")[1].split("&")[0])]
        # A second Start once the warm worker is ready (the usual case: a user reads the page first).
        store = RunStore(os.environ["SSLVIZ_STORE"])
        deadline = time.time() + 120
        while not worker.spares(store) and time.time() < deadline:
            time.sleep(0.1)
        page.goto(url)
        page.get_by_role("button", name="Start run").wait_for(timeout=120_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
        t = time.perf_counter()
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url(f"**/live?run={started[0] + 1}*", timeout=60_000)
        page.wait_for_function(has_chart, timeout=120_000)
        out["start_warm_ready_to_first_chart_s"] = time.perf_counter() - t
        started.append(started[0] + 1)
        for rid in started:  # the long run's tab below is timed on idle cores, not beside two trainings
            store.request_stop(rid)
        for _ in range(100):
            if all(store.run(rid)["status"] not in ("queued", "running") for rid in started):
                break
            time.sleep(0.3)
        other = b.new_page(viewport={"width": 1400, "height": 1000})
        t = time.perf_counter()
        other.goto(f"{url}/live?run={run_id}")
        other.wait_for_function(has_chart, timeout=120_000)
        out["long_run_first_chart_s"] = time.perf_counter() - t
        b.close()
    return out


def main(argv=None) -> list[dict] | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="5000,50000,500000", help="training steps of the runs (comma-separated)")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose app.py, pages and sslviz are measured")
    ap.add_argument("--label", default="after")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stores", default=None, help="folder keeping the filled stores between invocations")
    ap.add_argument("--ema", action="store_true", help="only time ema_smooth against the loop")
    ap.add_argument("--many", type=int, default=0,
                    help="only: Live refresh and queue pump before/after adding this many finished runs (5k store)")
    ap.add_argument("--paints", type=int, default=0,
                    help="only: first paint on this many fresh servers (median and range; an empty store)")
    ap.add_argument("--browser", action="store_true",
                    help="also, per size: fresh-server first paint, Start -> first chart, the long run's first chart")
    args = ap.parse_args(argv)
    code = Path(args.code).resolve()
    sys.path.insert(0, str(code))
    os.chdir(code)
    if args.ema:
        ema()
        return
    if args.paints:
        folder = Path(tempfile.mkdtemp(prefix="sslviz-paint-"))
        os.environ["SSLVIZ_STORE"], os.environ["SSLVIZ_HOME"] = str(folder / "runs.db"), str(folder)
        paints = first_paints(folder, args.paints)
        for key in ("first_paint_s", "first_paint_playwright_s"):
            values = [r[key] for r in paints]
            print(f"{args.label} {key}: median {statistics.median(values):.2f} s [{min(values):.2f}-{max(values):.2f}]"
                  f" over {len(values)} fresh servers: " + " ".join(f"{v:.2f}" for v in values), flush=True)
        return paints
    if args.many:
        import shutil

        from sslviz.runs.store import RunStore

        path = Path(tempfile.mkdtemp(prefix="sslviz-many-")) / "runs.db"
        os.environ["SSLVIZ_STORE"], os.environ["SSLVIZ_HOME"] = str(path), str(path.parent)
        os.environ.setdefault("SSLVIZ_WARM_WORKER", "0")
        fill(RunStore(path), 5000)
        res = many_runs(code, path, args.many, args.repeats)
        print("| runs in the store | queue pump (ms) | Live refresh, worst tab (ms) |\n|---|---|---|")
        for r in (res["before"], res["after"]):
            print(f"| {r['runs']} | {r['reap_ms']:.1f} | {r['live_ms']:.0f} ({r['tab']}) |")
        shutil.rmtree(path.parent)
        return
    from sslviz.runs.store import RunStore

    folder = Path(args.stores or tempfile.mkdtemp(prefix="sslviz-live-"))
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        path = folder / f"runs-{steps}.db"
        fresh = not path.exists()
        store = RunStore(path)
        if fresh:
            t = time.perf_counter()
            rid = fill(store, steps)
            ids = [rid, *(copy_run(store, rid) for _ in range(4))]
            print(f"filled {steps} steps in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            t = time.perf_counter()
            for i in ids:  # what the worker does as a run ends (a store without it: pass --stores of an older fill)
                store.roll_up(i)
            print(f"rolled up 5 runs of {steps} steps in {time.perf_counter() - t:.1f} s", flush=True)
        else:
            ids = sorted(int(i) for i in store.runs()["id"])[:5]
        store.close()
        os.environ["SSLVIZ_STORE"] = str(path)
        os.environ["SSLVIZ_HOME"] = str(folder)
        tabs = live(code, ids[0], args.repeats)
        cmp_ = compare(code, ids, args.repeats)
        rows.append(dict(steps=steps, label=args.label, live=tabs, compare=cmp_))
        if args.browser:
            rows[-1]["browser"] = browser(folder, ids[0])
            print(f"{args.label} {steps} steps: browser " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1]["browser"].items()),
                  flush=True)
        worst = max(tabs.values(), key=lambda v: v["ms"])
        print(f"{args.label} {steps} steps: Live " + ", ".join(
            f"{t}: {v['ms']:.0f} ms (first {v['first_ms']:.0f}) {v['bytes'] / 1e3:.0f} KB" for t, v in tabs.items())
              + f" | worst {worst['ms']:.0f} ms | Compare 5 runs {cmp_['ms']:.0f} ms "
                f"[{cmp_['lo']:.0f}-{cmp_['hi']:.0f}] (first {cmp_['first_ms']:.0f}) {cmp_['bytes'] / 1e3:.0f} KB", flush=True)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
