from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hpo.cli import main
from tests.conftest import small_study

COMMANDS = [
    "run",
    "create",
    "worker",
    "status",
    "best",
    "export",
    "validate",
    "dashboard",
    "analyze",
    "report",
    "compare",
    "claims",
    "confirm",
]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example:" in result.output and f"hpo {command}" in result.output


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "hpo", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "hpo run" in out.stdout


BAD_FILES = {
    "unknown key": '[study]\nname = "x"\ncolour = "red"\n[budget]\nn_trials = 1',
    "inverted range": '[study]\nname = "x"\n[budget]\nn_trials = 1\n'
    "[space]\nlr = {low = 1, high = 0.1}",
    "grid over continuous": '[study]\nname = "x"\n[sampler]\nname = "grid"\n'
    "[space]\nlr = {low = 0.1, high = 1.0}",
    "malformed": "[study\n",
}


@pytest.mark.parametrize("text", BAD_FILES.values(), ids=list(BAD_FILES))
@pytest.mark.parametrize("command", ["run", "create", "worker", "validate", "confirm"])
def test_bad_study_file_fails_cleanly_and_writes_nothing(
    tmp_path, monkeypatch, write_study, text, command
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    path = write_study(text, "bad.toml")
    result = invoke(command, str(path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(path) in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "storage").exists()


def test_missing_dataset_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch, write_study):
    import torchvision

    from hpo.train import data

    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(
        torchvision.datasets,
        "FashionMNIST",
        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")),
    )
    db = tmp_path / "s.db"
    study = write_study(small_study())
    result = invoke(
        "run", str(study), "--storage", f"sqlite:///{db}", "--data-dir", str(tmp_path / "nodata")
    )
    assert result.exit_code == 2
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert len(result.output.strip().splitlines()) == 2  # "storage: ..." then the error
    assert not db.exists()


def test_bare_path_storage_gets_a_hint(write_study):
    result = invoke("status", str(write_study(small_study())), "--storage", "storage/x.db")
    assert result.exit_code == 2
    assert "sqlite:///storage/x.db" in result.output


def test_unreachable_database_fails_cleanly(write_study):
    url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/hpo"
    result = invoke("status", str(write_study(small_study())), "--storage", url)
    assert result.exit_code == 2
    assert result.output.startswith("Error: cannot open storage")
    assert "hunter2" not in result.output and "Traceback" not in result.output


def test_reading_a_study_that_does_not_exist(tmp_path, write_study):
    study = write_study(small_study())
    result = invoke("best", str(study), "--storage", f"sqlite:///{tmp_path}/nothing.db")
    assert result.exit_code == 2 and "no study database" in result.output
    assert not (tmp_path / "nothing.db").exists()


def test_validate_reports_grid_size(write_study):
    result = invoke("validate", str(write_study(small_study(sampler="grid"))))
    assert result.exit_code == 0 and "4 grid points" in result.output


def test_worker_needs_an_existing_study(tmp_path, write_study, fmnist_dir):
    study = write_study(small_study())
    db = tmp_path / "w.db"
    invoke("create", str(study), "--storage", f"sqlite:///{db}")
    other = write_study(small_study(name="other"), "other.toml")
    result = invoke(
        "worker", str(other), "--storage", f"sqlite:///{db}", "--data-dir", str(fmnist_dir)
    )
    assert result.exit_code == 2 and "no study 'other'" in result.output


def test_worker_refuses_a_changed_study_file(tmp_path, write_study, fmnist_dir):
    db = f"sqlite:///{tmp_path}/w.db"
    assert invoke("create", str(write_study(small_study())), "--storage", db).exit_code == 0
    changed = write_study(small_study(units="[16, 64]"), "changed.toml")
    result = invoke("worker", str(changed), "--storage", db, "--data-dir", str(fmnist_dir))
    assert result.exit_code == 2
    assert "created from a different study file" in result.output


@pytest.mark.slow  # trains on the real data
def test_status_best_export_on_a_finished_study(tmp_path, write_study, fmnist_dir):
    db = f"sqlite:///{tmp_path}/r.db"
    study = str(write_study(small_study(n_trials=3)))
    run = invoke("run", study, "--storage", db, "--data-dir", str(fmnist_dir))
    assert run.exit_code == 0, run.output
    assert "[3/3]" in run.output and run.output.count(" COMPLETE ") == 3

    status = invoke("status", study, "--storage", db, "--json")
    info = json.loads(status.output)
    assert (info["complete"], info["running"], info["budget_trials"]) == (3, 0, 3)
    top = f"best val_accuracy {info['best']['value']:.4f} (#{info['best']['number']})"
    line = f"study small: [3/3] complete 3 · pruned 0 · failed 0 · running 0 · {top}"
    assert line in invoke("status", study, "--storage", db).output.splitlines()

    data = ("--data-dir", str(fmnist_dir))
    best = json.loads(invoke("best", study, "--storage", db, "--json", *data).stdout)
    assert best["value"] == info["best"]["value"]
    assert 0.5 < best["metrics"]["test_accuracy"] <= 1
    assert best["metrics"]["n_params"] > 0
    # The best model is retrained with its seed and reproduces the trial exactly.
    ev = best["evaluation"]
    assert ev["trial"] == best["number"] and ev["reproduced"] is True
    assert ev["retrained_val_accuracy"] == best["metrics"]["val_accuracy"]
    assert ev["test_accuracy"] == best["metrics"]["test_accuracy"]
    assert sum(map(sum, ev["confusion"])) == 10_000 and len(ev["per_class"]) == 10
    assert [c["name"] for c in ev["per_class"]][:2] == ["T-shirt/top", "Trouser"]
    assert sum(c["support"] for c in ev["per_class"]) == 10_000
    text = invoke("best", study, "--storage", db)  # no --data-dir: the kept result is used
    assert text.exit_code == 0 and "reproduced its val_accuracy" in text.output
    assert "Ankle boot" in text.output and "confusion matrix" in text.output

    out = tmp_path / "t.csv"
    assert invoke("export", study, "--storage", db, "-o", str(out)).exit_code == 0
    rows = out.read_text().strip().splitlines()
    assert len(rows) == 4
    assert rows[0].startswith("number,state,value,") and "test_accuracy" in rows[0]

    more = invoke("run", study, "--storage", db, "--data-dir", str(fmnist_dir), "--n-trials", "4")
    assert more.exit_code == 0 and "[4/4]" in more.output


@pytest.mark.parametrize("command", ["analyze", "report", "dashboard", "best"])
def test_reading_commands_on_a_missing_study_fail_cleanly(tmp_path, write_study, command):
    study = write_study(small_study())
    db = tmp_path / "none.db"
    extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    result = invoke(command, str(study), "--storage", f"sqlite:///{db}", *extra)
    assert result.exit_code == 2 and result.output.startswith("Error: no study database")
    assert not db.exists() and not (tmp_path / "r.html").exists()


def test_dashboard_refuses_a_port_in_use(tmp_path, write_study):
    import socket

    study = str(write_study(small_study()))
    db = f"sqlite:///{tmp_path}/d.db"
    assert invoke("create", study, "--storage", db).exit_code == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = invoke("dashboard", study, "--storage", db, "--port", port)
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"Error: port {port} on 127.0.0.1 is in use; pick another with --port"
    )
