"""The explorer in a real browser: JupyterLab on a free local port, the notebook opened in
headless Chromium (Debian's ``chromium``, driven by Playwright), the explorer run on a tiny
network, the sparsity slider moved with the keyboard; the readout and the plot must change, the
background measurement must arrive and the test-metrics button must show its table and grid.
The screenshots (the page, the explorer alone) are saved in the test's tmp_path; README's
docs/explorer.png is such a widget.png.

Skipped, with the reason, when Chromium, Playwright or JupyterLab is missing, except where
``CUT_REQUIRE_BROWSER=1`` (``.ci/run`` sets it): there a missing browser fails the test.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CUT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "cut-explorer-test"

SETUP = '''\
import torch
from lib.explorer import explore
from lib.models import model_from_config
from lib.workspace import Workspace

ws = Workspace("nyuv2_3task", "tiny", fast=True)  # synthetic scenes, an untrained network
torch.manual_seed(0)
net = model_from_config(ws.cfg).eval()
view = explore(net, ws.criterion(), ws.loader(), num_batches=1, cfg=ws.cfg,
               test_loader=ws.loader("test", batch_size=2), tasks=["seg", "depth"],
               sparsity=90, out_dir="exports", latency_repeats=1)
view'''


def _missing_browser():
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    for module in ("playwright.sync_api", "jupyterlab", "ipywidgets"):
        try:
            __import__(module)
        except ImportError:
            return f"{module.split('.')[0]} is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser_ready():
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("CUT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CUT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    nbformat.write(nb, path)


def _jupyter_env(root: Path) -> dict:
    """Config, data, runtime, settings and IPython dirs under ``root``; no news toast."""
    env = dict(os.environ)
    for var, name in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                      ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                      ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        env[var] = str(root / name)
        (root / name).mkdir(parents=True, exist_ok=True)
    notification = root / "settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(json.dumps(
        {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}))
    (root / "tmp").mkdir()
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONPATH=path, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               TMPDIR=str(root / "tmp"))  # the kernel's temporary folders stay in tmp_path
    return env


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({server.returncode}): "
                               f"{log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout} s: "
                       f"{log.read_text()[-2000:]}")


def _wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _run_first_cell(page, attempts: int = 6) -> None:
    """Ctrl+Enter in the first cell until its prompt shows it queued or ran: keys pressed
    before the page's kernel connection is up run nothing, and no element says when it is."""
    prompt = page.locator(".jp-Cell .jp-InputPrompt").first
    for _ in range(attempts):
        page.click(".jp-Cell .jp-InputArea-editor")
        page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if prompt.inner_text().strip() not in ("[ ]:", ""):
                return
            time.sleep(0.2)
    raise AssertionError(f"the notebook cell never started running ({attempts} attempts)")


def test_slider_moves_change_the_readout_and_the_plot_in_chromium(browser_ready, tmp_path):
    from playwright.sync_api import sync_playwright

    work = tmp_path / "lab"
    work.mkdir()
    _write_notebook(work / "explorer.ipynb")
    port, log = _free_port(), tmp_path / "jupyter.log"
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={TOKEN}",
               f"--ServerApp.root_dir={work}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                  env=_jupyter_env(tmp_path / "jupyter"), cwd=work)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api?token={TOKEN}", server, log, 60)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 2300})
            try:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={TOKEN}")
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
                _run_first_cell(page)
                page.locator(".cut-explorer-sparsity").wait_for(timeout=90_000)
                readout = page.locator(".cut-explorer-figures")
                plot = page.locator("img.cut-explorer-layer-plot")
                before = readout.inner_text()
                src_before = plot.get_attribute("src")
                assert "target 90 %" in before

                handle = page.locator(".cut-explorer .noUi-handle").first
                handle.focus()
                for _ in range(3):
                    handle.press("ArrowLeft")
                after = _wait_until(lambda: (lambda t: t if "target 87 %" in t else None)(
                    readout.inner_text()), 30, "the readout of sparsity 87 %")
                assert after != before
                _wait_until(lambda: plot.get_attribute("src") != src_before, 30,
                            "a new frame of the per-layer sparsity plot")
                # the background measurement reaches the page through the kernel's comm
                page.locator(".cut-explorer-measured").wait_for(timeout=60_000)
                page.get_by_text("test metrics + predictions").click()
                page.locator("table.cut-explorer-metrics").wait_for(timeout=60_000)
                page.locator("img.cut-explorer-grid").wait_for(timeout=60_000)
                assert "test metrics of the pruned network" in page.locator(
                    ".cut-explorer-status").inner_text()
                page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
                page.locator(".cut-explorer").screenshot(path=str(tmp_path / "widget.png"))
            except BaseException:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    shutil.rmtree(work / "exports", ignore_errors=True)
