"""The course in a real browser: a student runs a lecture in JupyterLab, an instructor reads feedback.

Headless Chromium driven by Selenium through Debian's ``chromium`` and ``chromium-driver`` packages
(``apt-get install chromium chromium-driver``); without them, or without ``selenium`` (the ``test``
extra), the module is skipped with the reason. The browser resolves no host but 127.0.0.1, so the
pages run offline exactly as they would without a network (the feedback page's MathJax link fails
fast instead of hanging).

1. JupyterLab (``.venv``'s, token-less, on a free localhost port, private settings and runtime
   folders) serves a copy of a lecture notebook; the test opens it, chooses Run > Run All Cells from
   the menu bar as a student would, waits until every code cell has an execution count, and checks
   that a plot (a decoded ``<img>``) and a ``RESULT name: value`` line (``dlmi.show_result``) are in
   the page and that no cell printed a traceback.
2. A partly correct assignment 01 is graded by ``dlmi-course autograde`` and ``dlmi-course feedback``
   (the commands an instructor runs); the feedback HTML, opened in the browser, shows the total
   score from the gradebook record, and the per-test scores in its table of contents add up to it.

Each test saves a screenshot under its pytest tmp folder and prints the path. Every wait is bounded;
JupyterLab, its kernel, chromedriver and Chromium are ended in the fixtures' teardown.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `test` extra)")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The fastest lecture that has plots and headline results: about 30 s on 2 busy cores.
LECTURE = Path("course/01_rnn/lecture_01_rnn.ipynb")
ASSIGNMENT = "assignment_01_rnn.ipynb"
RUN_SECONDS = 240      # whole-notebook budget is 120 s; leave room for a loaded machine
START_SECONDS = 90     # JupyterLab up, page loaded, kernel idle


def _family(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    return []


def _kill(family: list[psutil.Process]) -> None:
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(family, timeout=10)


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """End a process politely (a Jupyter server then shuts its kernels down), then whatever is left
    of it and its descendants (kernels run in sessions of their own: a process-group kill misses them)."""
    family = _family(proc.pid)
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    _kill(family)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    profile = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--window-size=1400,1600", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-sandbox",  # as root (CI, containers) Chromium starts only without its sandbox
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    print(f"\n{driver.capabilities.get('browserName')} {driver.capabilities.get('browserVersion')}")
    try:
        yield driver
    finally:
        family = _family(service.process.pid)  # chromedriver and the Chromium processes it started
        driver.quit()
        _kill(family)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(root, tmp_path):
    """JupyterLab on a folder holding a copy of LECTURE; yields its base URL."""
    notebooks = tmp_path / "course"
    notebooks.mkdir()
    shutil.copy(root / LECTURE, notebooks / LECTURE.name)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # Every cell in the DOM (JupyterLab 4 renders only the cells in view by default), so that the
    # prompts and outputs read below are the whole notebook's.
    tracker = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={notebooks}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=notebooks)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert proc.poll() is None, f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"JupyterLab did not answer on {url} in {START_SECONDS} s"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as r:
                    if r.status == 200:
                        break
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        log.close()


# Prompts of the open notebook's code cells ("[3]:", "[*]:", "[ ]:") and any traceback in its outputs.
STATE_JS = """
const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
if (!panel) return null;
const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim());
const errors = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(e => e.textContent).filter(t => t.includes('Traceback') || /^\\w+(Error|Exception):/m.test(t));
return {prompts: prompts, errors: errors};
"""


def _menu(driver, menu: str, item: str) -> None:
    """Click ``menu`` in JupyterLab's menu bar, then its entry ``item``."""
    driver.find_element(
        By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and normalize-space()='{menu}']").click()
    entry = WebDriverWait(driver, 10).until(lambda d: d.find_element(
        By.XPATH, f"//li[contains(@class,'lm-Menu-item')][.//div[contains(@class,'lm-Menu-itemLabel') "
                  f"and normalize-space()='{item}']]"))
    entry.click()


def test_a_lecture_runs_in_jupyterlab(lab, browser, tmp_path):
    driver = browser
    start = time.monotonic()
    driver.get(f"{lab}/lab/tree/{LECTURE.name}")
    # The kernel can report idle before the cells are drawn: wait for both.
    WebDriverWait(driver, START_SECONDS).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
        and (d.execute_script(STATE_JS) or {}).get("prompts"),
        message="the notebook did not open with its code cells and an idle kernel")
    state = driver.execute_script(STATE_JS)
    assert not any(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), "the release must ship unexecuted"

    _menu(driver, "Run", "Run All Cells")

    def finished(d):
        s = d.execute_script(STATE_JS)
        if s["errors"]:
            return s
        return s if all(re.fullmatch(r"\[\d+\]:", p) for p in s["prompts"]) else False

    state = WebDriverWait(driver, RUN_SECONDS, poll_frequency=1).until(
        finished, message=f"Run All Cells did not finish in {RUN_SECONDS} s")
    ran = time.monotonic() - start
    assert not state["errors"], "a cell failed:\n" + "\n".join(state["errors"])[:4000]

    images = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-OutputArea-output img")
    assert images, "no image output: the plots are missing"
    assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
               for img in images), "an image output did not decode"
    texts = [e.text for e in driver.find_elements(
        By.CSS_SELECTOR, '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="text/plain"]')]
    results = [line for t in texts for line in t.splitlines() if re.fullmatch(r"RESULT [^:]+: \S.*", line)]
    assert results, "no `RESULT name: value` line among the outputs"

    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", images[-1])
    shot = tmp_path / "jupyterlab_lecture_01.png"
    assert driver.save_screenshot(str(shot))
    print(f"\nran {LECTURE} in JupyterLab in {ran:.0f} s: {len(state['prompts'])} code cells, "
          f"{len(images)} images, {results}\nscreenshot: {shot}")


def _partial_submission(root: Path, keep: str = "rnn_forward"):
    """The released assignment with one answer (``keep``) copied from the solution."""
    sol = nbformat.read(root / "solutions" / "01_rnn" / ASSIGNMENT, as_version=4)
    nb = nbformat.read(root / "course" / "01_rnn" / ASSIGNMENT, as_version=4)
    answer = next(c.source for c in sol.cells if c.metadata.get("nbgrader", {}).get("grade_id") == keep)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == keep)
    cell.source = "\n".join(line for line in answer.splitlines()
                            if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    return nb


@pytest.fixture(scope="module")
def feedback_page(root, tmp_path_factory):
    """One student's feedback HTML, made by `dlmi-course autograde` and `dlmi-course feedback`."""
    from dlmi.course.cli import main
    from dlmi.course.grading.outcome import read_record

    course = tmp_path_factory.mktemp("grading") / "course"
    (course / "solutions" / "01_rnn").mkdir(parents=True)
    shutil.copy(root / "solutions" / "01_rnn" / ASSIGNMENT, course / "solutions" / "01_rnn")
    shutil.copytree(root / "course" / "01_rnn", course / "course" / "01_rnn")
    shutil.copy(root / "nbgrader_config.py", course)
    folder = course / "submitted" / "ana" / "01_rnn"
    folder.mkdir(parents=True)
    nbformat.write(_partial_submission(root), folder / ASSIGNMENT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--root", str(course), "autograde", "01", "--workers", "1", "--no-progress"]) == 0, out.getvalue()
        assert main(["--root", str(course), "feedback", "01"]) == 0, out.getvalue()
    page = course / "feedback" / "ana" / "01_rnn" / ASSIGNMENT.replace(".ipynb", ".html")
    assert page.is_file(), out.getvalue()
    return page, read_record(course / "autograded" / "ana" / "01_rnn")


def test_the_feedback_page_shows_the_score(feedback_page, browser, tmp_path):
    page, record = feedback_page
    assert record["outcome"] == "graded" and 0 < record["score"] < record["max_score"], record
    driver = browser
    driver.get(page.as_uri())
    heading = WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.XPATH, "//h4[contains(., 'Score:')]"))
    assert heading.is_displayed()
    assert heading.text == f"{ASSIGNMENT.removesuffix('.ipynb')} (Score: {record['score']} / {record['max_score']})"
    parts = [re.search(r"\(Score: ([\d.]+) / ([\d.]+)\)", li.text)
             for li in driver.find_elements(By.CSS_SELECTOR, "#toc li") if "Score:" in li.text]
    assert parts and all(li.is_displayed() for li in driver.find_elements(By.CSS_SELECTOR, "#toc li"))
    assert sum(float(m[1]) for m in parts) == record["score"]
    assert sum(float(m[2]) for m in parts) == record["max_score"]
    shot = tmp_path / "feedback_assignment_01.png"
    assert driver.save_screenshot(str(shot))
    print(f"\nfeedback for ana: {heading.text}\nscreenshot: {shot}")
