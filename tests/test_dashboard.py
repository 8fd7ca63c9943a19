"""The dashboard and the report, used as a person would: over HTTP and in a headless browser.

One real study (20 trials of tiny training on a slice of Fashion-MNIST, depth 1 or 2, so
``units_2`` is conditional; some trials pruned) is run with ``hpo run`` and analysed with
``hpo analyze``. ``hpo dashboard`` then runs as a subprocess and is checked through
optuna-dashboard's JSON API and in Chromium; the HTML report is opened in Chromium from disk.
Screenshots are kept in ``out/test-artifacts/``. In CI, Chromium must be there (``.ci/run``
installs it): these tests fail rather than skip.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpo.cli import main
from hpo.insight.questions import ALL
from tests.conftest import REPO

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "out" / "test-artifacts"
N_TRIALS = 20
STUDY = """
[study]
name = "insight"
metric = "val_accuracy"

[budget]
n_trials = 20

[sampler]
name = "tpe"
seed = 0
options = { n_startup_trials = 8 }

[pruner]
name = "median"
options = { n_startup_trials = 4, n_warmup_steps = 1 }

[data]
validation_size = 1000
train_size = 1000

[space]
depth = { low = 1, high = 2 }
units = [16, 32, 64]
batch_size = [64, 128]
lr = { low = 1e-3, high = 3e-2, log = true }
optimizer = ["adam", "sgd"]
epochs = 3
"""
FIGURES = [q.id for q in ALL] + ["hpo-best-confusion"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fmnist_dir):
    """(study file, storage URL) of a finished, analysed 20-trial study."""
    tmp = tmp_path_factory.mktemp("insight")
    study = tmp / "insight.toml"
    study.write_text(textwrap.dedent(STUDY))
    url = f"sqlite:///{tmp}/insight.db"
    data = ["--data-dir", str(fmnist_dir), "--threads", "1"]  # tiny trials: 1 thread is fastest
    run = CliRunner().invoke(main, ["run", str(study), "--storage", url, *data])
    assert run.exit_code == 0, run.output
    assert "figures and study note saved" in run.output
    analyze = CliRunner().invoke(main, ["analyze", str(study), "--storage", url, *data[:2]])
    assert analyze.exit_code == 0, analyze.output
    assert f"saved {len(FIGURES)} figures" in analyze.stdout
    return study, url


@pytest.fixture(scope="module")
def dashboard(finished):
    """A running ``hpo dashboard`` subprocess on a free port; yields the study page's URL."""
    with serving(*finished) as served:
        yield served[:3]


@contextlib.contextmanager
def serving(study: Path, url: str):
    """Run ``hpo dashboard`` on a free port: (study page, base URL, study id, first lines)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", "dashboard", str(study), "--storage", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    lines: list[str] = []

    def read() -> None:
        while (line := proc.stdout.readline()) and "Ctrl-C" not in line:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    match = re.search(r"(http://127\.0\.0\.1:\d+)/dashboard/studies/(\d+)", "".join(lines))
    if match is None:
        proc.kill()
        pytest.fail(f"hpo dashboard printed no URL: {lines} {proc.stdout.read()}")
    try:
        yield match.group(0), match.group(1), int(match.group(2)), "".join(lines)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(timeout=20) == 0


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_dashboard_serves_the_study_its_trials_and_hpo_figures(dashboard):
    _, base, study_id = dashboard
    names = [s["study_name"] for s in get_json(f"{base}/api/studies")["study_summaries"]]
    assert names == ["insight"]
    detail = get_json(f"{base}/api/studies/{study_id}")
    assert len(detail["trials"]) == N_TRIALS
    states = {t["state"] for t in detail["trials"]}
    assert "Complete" in states
    assert {g["id"] for g in detail["plotly_graph_objects"]} == set(FIGURES)
    for graph in detail["plotly_graph_objects"]:
        figure = json.loads(graph["graph_object"])
        assert figure["layout"]["title"]["text"]
        assert figure["data"] or "Not enough data" in figure["layout"]["annotations"][0]["text"]
    assert "hpo analysis of insight" in detail["note"]["body"]
    union = {p["name"] for p in detail["union_search_space"]}
    assert {"depth", "units_1", "units_2", "lr"} <= union  # units_2 is conditional
    # optuna-dashboard's own pages work for a study with conditional parameters
    importance = get_json(f"{base}/api/studies/{study_id}/param_importances")
    assert "units_2" in {p["name"] for p in importance["param_importances"][0]}
    for plot in ("contour", "slice", "parallel_coordinate", "rank", "edf", "timeline"):
        assert get_json(f"{base}/api/studies/{study_id}/plot/{plot}")["data"]


def test_dashboard_does_not_create_tables(tmp_path, finished):
    study, _ = finished
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = CliRunner().invoke(
        main, ["dashboard", str(study), "--storage", f"sqlite:///{empty}", "--port", "0"]
    )
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through chromedriver (Debian's chromium and chromium-driver)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        message = "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,2400")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def wait_for_plots(driver, selector: str, count: int) -> list:
    """Wait until ``count`` elements matching ``selector`` hold plotly's rendered SVG."""
    from selenium.webdriver.support.ui import WebDriverWait

    def rendered(d):
        found = d.find_elements("css selector", selector)
        done = [e for e in found if e.find_elements("css selector", "svg.main-svg")]
        return done if len(done) >= count else False

    return WebDriverWait(driver, 60).until(rendered)


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_browser_renders_the_dashboard_with_hpo_figures(dashboard, browser):
    page, _, _ = dashboard
    browser.get(page)
    plots = wait_for_plots(browser, '[id^="user-defined-plot:"]', len(FIGURES))
    assert {p.get_attribute("id").split(":", 1)[1] for p in plots} == set(FIGURES)
    # optuna-dashboard's own plots (history, importance, ...) render beside hpo's
    assert len(browser.find_elements("css selector", ".js-plotly-plot")) > len(FIGURES)
    screenshot(browser, "dashboard.png")
    browser.get(f"{page}/note")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: "What the data shows" in d.page_source)
    screenshot(browser, "dashboard-note.png")


def test_browser_renders_the_report_offline(finished, browser, tmp_path):
    study, url = finished
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(study), "--storage", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<script src" not in html and "plotly.js v" in html  # self-contained, JS embedded
    assert 'name = "insight"' in html and "optuna-dashboard" in html and "Ankle boot" in html
    browser.get(out.as_uri())
    plots = wait_for_plots(browser, ".js-plotly-plot", len(FIGURES))
    assert len(plots) == len(FIGURES)
    screenshot(browser, "report.png")


PG_SERVER = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
PG_PREFIX = os.environ.get("HPO_TEST_DB_PREFIX", "hpo_test_")


@pytest.fixture
def pg_database():
    """A new, empty PostgreSQL database, dropped afterwards (never skipped)."""
    import uuid

    import sqlalchemy

    name = f"{PG_PREFIX}{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def public_tables(url: str) -> int:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        query = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        count = conn.execute(sqlalchemy.text(query)).scalar_one()
    engine.dispose()
    return count


def test_dashboard_on_postgresql(pg_database, write_study, fmnist_dir):
    from hpo.config.spec import load_spec
    from hpo.insight.dashboard import bind
    from tests.conftest import small_study

    study = write_study(small_study(name="pg", n_trials=3))
    empty = CliRunner().invoke(main, ["dashboard", str(study), "--storage", pg_database])
    assert empty.exit_code == 2 and empty.output.startswith("Error: ")
    assert public_tables(pg_database) == 0  # reading created nothing
    data = ["--data-dir", str(fmnist_dir), "--threads", "1"]
    run = CliRunner().invoke(main, ["run", str(study), "--storage", pg_database, *data])
    assert run.exit_code == 0, run.output
    server, page = bind(load_spec(study), pg_database, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base, study_id = page.split("/dashboard/studies/")
        detail = get_json(f"{base}/api/studies/{study_id}")
        assert detail["name"] == "pg" and len(detail["trials"]) == 3
        assert {g["id"] for g in detail["plotly_graph_objects"]} == {q.id for q in ALL}
    finally:
        server.shutdown()
        server.server_close()


WIDTHS = [16, 32, 64, 128, 256, 512]
WIDTH_GRID = f"""
[study]
name = "widths"
metric = "val_accuracy"

[sampler]
name = "grid"

[pruner]
name = "none"

[data]
validation_size = 500
train_size = 500

[space]
depth = 2
units_1 = {WIDTHS}
units_2 = {WIDTHS}
epochs = 1
"""


@pytest.fixture(scope="module")
def width_grids(tmp_path_factory, fmnist_dir):
    """Two 36-point grids of two widths: (study file, URL) of one trained with ``hpo run``
    (lists ordinal), and of one filled as hpo did before lists had a kind (categorical; its
    values are made up: the axes' order depends on the stored distributions, not on training)."""
    from hpo.config.spec import load_spec
    from tests.test_ordinal import run_grid

    tmp = tmp_path_factory.mktemp("widths")
    study = tmp / "widths.toml"
    study.write_text(WIDTH_GRID)
    url = f"sqlite:///{tmp}/widths.db"
    data = ["--data-dir", str(fmnist_dir), "--threads", "1"]
    run = CliRunner().invoke(main, ["run", str(study), "--storage", url, *data])
    assert run.exit_code == 0, run.output
    old = f"sqlite:///{tmp}/old.db"
    run_grid(load_spec(study), old, old=True)
    return study, url, old


def tick_reading(driver, graph: str, axis: str) -> list[tuple[str, float]]:
    """The tick labels plotly drew on one axis of a dashboard graph (SVG text), in screen order
    (left to right, bottom to top), each with the number it stands for.

    On a log axis plotly labels the powers of ten in full and the ticks between them with their
    leading digit (``10 2 3 … 100 2 3``): a digit stands for itself times the power of ten of
    its decade, which the tick's position on the axis gives.
    """
    kind = driver.execute_script(
        f"return document.getElementById('{graph}')._fullLayout.{axis}axis.type"
    )
    ticks = driver.execute_script(
        f"return Array.from(document.querySelectorAll('#{graph} .{axis}tick text')).map(t => "
        "{const r = t.getBoundingClientRect(); "
        "return [t.textContent, r.left + r.width / 2, -(r.top + r.height / 2), t.__data__.x];})"
    )
    ticks = sorted((t for t in ticks if t[0]), key=lambda t: t[1] if axis == "x" else t[2])
    reading = []
    for label, _, _, position in ticks:
        number = as_number(label)
        if kind == "log" and len(label) == 1:
            number *= 10 ** math.floor(position + 1e-9)
            assert math.isclose(math.log10(number), position, abs_tol=1e-6), (label, position)
        reading.append((label, number))
    return reading


def tick_labels(driver, graph: str, axis: str) -> list[str]:
    """The tick labels plotly drew on one axis of a dashboard graph (SVG text)."""
    texts = driver.find_elements("css selector", f"#{graph} .{axis}tick text")
    return [t.text for t in texts if t.text]


def as_number(label: str) -> float:
    """A plotly tick label as a number (``1k`` → 1000; its minus sign is U+2212)."""
    label = label.replace("\u2212", "-")
    return float(label[:-1]) * 1000 if label.endswith("k") else float(label)


GRAPHS = ("graph-contour", "graph-rank")  # the dashboard's two interaction plots


def open_contour(driver, page: str):
    """optuna-dashboard's Analytics page, its contour and rank plots of units_1 × units_2 drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{page}/analytics")
    wait_for_plots(driver, "#graph-contour", 1)
    WebDriverWait(driver, 60).until(
        lambda d: all(tick_labels(d, g, a) for g in GRAPHS for a in "xy")
    )
    for graph in GRAPHS:
        titles = [t.text for t in driver.find_elements("css selector", f"#{graph} .g-xtitle")]
        titles += [t.text for t in driver.find_elements("css selector", f"#{graph} .g-ytitle")]
        assert titles == ["units_1", "units_2"], (graph, titles)


def test_browser_contour_of_a_width_grid_reads_in_numeric_order(width_grids, browser):
    """The issue's check: a units grid's contour in the dashboard reads 16 → 512 on both axes."""
    study, url, _ = width_grids
    with serving(study, url) as (page, _, _, printed):
        assert "note:" not in printed
        open_contour(browser, page)
        path = screenshot(browser, "dashboard-contour-ordinal.png")
        print(f"screenshot: {path}")
        for graph, axis in itertools.product(GRAPHS, "xy"):
            reading = tick_reading(browser, graph, axis)
            numbers = [number for _, number in reading]
            assert all(a < b for a, b in itertools.pairwise(numbers)), (graph, axis, reading)
            # from below 32 to above 256: the axis spans 16 → 512 (ticks fall on round numbers)
            assert numbers[0] < 32 and numbers[-1] > 256, (graph, axis, reading)


def test_browser_contour_of_an_old_categorical_grid_reads_as_text_and_hpo_says_why(
    width_grids, browser
):
    """The same grid as hpo stored it before lists had a kind: the dashboard orders the widths
    as text, which is what the numeric check above would catch, and ``hpo dashboard`` says why."""
    study, _, old = width_grids
    with serving(study, old) as (page, _, _, printed):
        assert "created before lists of numbers became ordinal" in printed
        open_contour(browser, page)
        screenshot(browser, "dashboard-contour-categorical.png")
        for graph, axis in itertools.product(GRAPHS, "xy"):
            reading = tick_reading(browser, graph, axis)
            assert [label for label, _ in reading] == sorted(map(str, WIDTHS))  # 128 before 16
