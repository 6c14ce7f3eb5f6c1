"""The README's first command, verbatim, on a machine that has never run Streamlit: no terminal, empty HOME.

Streamlit's onboarding asks for an e-mail address when it runs with ``--server.headless false`` and no
credentials file; with no stdin it exits 255 before serving. ``.streamlit/config.toml`` turns the prompt
off; this test fails if that (or anything else in the command) stops the server from answering.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dashboard_command() -> str:
    """The README's set-up command that serves the dashboard (the indented line with `streamlit run`)."""
    lines = re.findall(r"^    (.*streamlit run .*)$", (ROOT / "README.md").read_text(), re.M)
    assert lines, "README.md has no indented `streamlit run` command"
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_first_command_serves_without_a_prompt(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    port = _free_port()
    # The command is run as written; only the port (8501 may be taken on a shared machine), the store and the
    # browser opener (none on CI: a no-op) come from the environment.
    env = {**os.environ, "HOME": str(home), "STREAMLIT_SERVER_PORT": str(port), "BROWSER": "true",
           "SSLVIZ_HOME": str(tmp_path / "sslviz")}
    proc = subprocess.Popen(["bash", "-c", dashboard_command()], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    answer = r.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        if answer is None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate(timeout=10)[0].decode(errors="replace")
            raise AssertionError(f"no answer from the server (exit status {proc.returncode}); output:\n{out[-3000:]}")
        assert answer == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        assert not list(home.glob(".streamlit/credentials.toml")), "the command wrote an onboarding answer into HOME"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
