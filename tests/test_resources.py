"""Resources that run out or break under hpo: each is one ``Error:`` line naming the resource
and the fix, nothing already written is lost, and no trial is left RUNNING.

A full disk and a read-only folder are real: a small ``tmpfs`` mounted for the test (root only,
as CI runs; unmounted in the fixture's finalizer, whatever the test did). The processes are
real ``hpo`` commands, so what reaches the terminal is what a user sees.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, small_study


def hpo(*args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    base = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    return subprocess.run(
        [sys.executable, "-m", "hpo", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, "PYTHONPATH": str(REPO), **(env or {})},
    )


def error_lines(out: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    return [line for line in out.stderr.splitlines() if line.startswith("Error: ")]


def states(db: Path) -> dict[int, tuple[str, float | None]]:
    """Trial number → (state, value), read with sqlite3 alone (no hpo, no Optuna)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT t.number, t.state, v.value FROM trials t "
            "LEFT JOIN trial_values v ON v.trial_id = t.trial_id"
        ).fetchall()
    return {number: (state, value) for number, state, value in rows}


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 3 MiB tmpfs at ``tmp_path/disk``; unmounted afterwards (lazily if still busy)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs (the tests run as root in CI): {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the disk under ``folder`` until ``leave`` bytes are free; returns the filler."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(bytes(max(0, free - leave)))
    return filler


@pytest.mark.slow
def test_full_disk_gives_trials_back_and_the_same_command_resumes(small_disk, tmp_path, fmnist_dir):
    study = tmp_path / "s.toml"
    study.write_text(small_study(name="full", n_trials=8))
    db = small_disk / "s.db"
    args = ["run", study, "--storage", f"sqlite:///{db}", "--data-dir", fmnist_dir]
    assert hpo("create", study, "--storage", f"sqlite:///{db}", cwd=tmp_path).returncode == 0
    filler = fill(small_disk, leave=300_000)  # a few trials' writes, then the disk is full

    out = hpo(*args, "--workers", "2", cwd=tmp_path)
    errors = error_lines(out)
    assert out.returncode == 2, out.stderr
    *workers, last = errors
    assert workers and all("is full" in e and "free some space" in e for e in workers), errors
    assert "the same command resumes" in last
    after_failure = states(db)
    assert "RUNNING" not in {state for state, _ in after_failure.values()}, after_failure
    kept = {n: v for n, v in after_failure.items() if v[0] == "COMPLETE"}

    filler.unlink()
    out = hpo(*args, "--workers", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    final = states(db)
    assert all(final[n] == v for n, v in kept.items()), "a trial finished before was lost"
    done = [s for s, _ in final.values() if s in ("COMPLETE", "PRUNED")]
    assert len(done) == 8 and "RUNNING" not in {s for s, _ in final.values()}


def test_full_disk_before_the_study_exists(small_disk, tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(small_study(name="full"))
    fill(small_disk, leave=100_000)
    out = hpo("create", study, "--storage", f"sqlite:///{small_disk}/s.db", cwd=tmp_path)
    assert out.returncode == 2
    assert len(error_lines(out)) == 1 and "is full" in error_lines(out)[0]
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # nothing written


def test_read_only_storage_folder(small_disk, tmp_path, fmnist_dir):
    study = tmp_path / "s.toml"
    study.write_text(small_study(name="ro"))
    url = f"sqlite:///{small_disk}/s.db"
    assert hpo("create", study, "--storage", url, cwd=tmp_path).returncode == 0
    before = states(small_disk / "s.db")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for command in (["create"], ["run", "--data-dir", fmnist_dir]):
        out = hpo(command[0], study, "--storage", url, *command[1:], cwd=tmp_path)
        assert out.returncode == 2, (command, out.stderr)
        (line,) = error_lines(out)
        assert "s.db" in line and "writable" in line, line
    # Reading may work (SQLite reads a closed WAL database from read-only media) or not; if
    # not, it is one line too.
    out = hpo("status", study, "--storage", url, cwd=tmp_path)
    assert out.returncode == 0 or len(error_lines(out)) == 1, out.stderr
    out = hpo("create", study, "--storage", f"sqlite:///{small_disk}/new/s.db", cwd=tmp_path)
    assert out.returncode == 2 and "Read-only file system" in error_lines(out)[0]
    assert states(small_disk / "s.db") == before


def _study_with_trials(db: Path, n: int) -> None:
    """A study of ``n`` finished trials, written without training (Optuna directly)."""
    code = f"""
import optuna
from hpo.config.spec import parse_spec
from hpo.coord.runner import create
from tests.conftest import small_study
import tomllib
spec = parse_spec(tomllib.loads(small_study(name="c")))
study = create(spec, "sqlite:///{db}", n_trials={n})
for _ in range({n}):
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-2, log=True)
    trial.set_user_attr("pad", "x" * 500)
    study.tell(trial, 0.5)
"""
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": "."}
    )
    with contextlib.closing(sqlite3.connect(db)) as conn:  # the journal into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_sqlite_file_corrupted_mid_file(tmp_path):
    db = tmp_path / "s.db"
    _study_with_trials(db, 200)
    size = db.stat().st_size
    with open(db, "r+b") as f:  # a disk error in the middle: the trials' pages
        f.seek(size // 2)
        f.write(bytes(range(256)) * 32)
    study = tmp_path / "s.toml"
    study.write_text(small_study(name="c"))
    for command in ("status", "export"):
        extra = ["-o", tmp_path / "t.csv"] if command == "export" else []
        out = hpo(command, study, "--storage", f"sqlite:///{db}", *extra, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        (line,) = error_lines(out)
        assert "s.db is damaged" in line and "restore it from a backup" in line
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.slow
def test_database_deleted_while_workers_run(tmp_path, fmnist_dir):
    """SQLite would write on into the deleted file and lose it all at the end; the workers
    stop at their next write instead, each with one line, and create no new file."""
    study = tmp_path / "s.toml"
    text = small_study(name="del", n_trials=60).replace("epochs = 2", "epochs = 4")
    study.write_text(text.replace("train_size = 2000", "train_size = 10000"))
    db = tmp_path / "s.db"
    base = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    args = ["run", str(study), "--storage", f"sqlite:///{db}", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpo", *args, "--data-dir", str(fmnist_dir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**base, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the first finished trial
            with contextlib.suppress(sqlite3.Error):  # not yet there, or its tables not yet
                if "COMPLETE" in {s for s, _ in states(db).values()}:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("no trial finished in 120 s")
        db.unlink()
        deleted_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - deleted_at < 30, "the workers went on writing"
    assert proc.returncode == 2, stderr
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    errors = error_lines(out)
    assert errors and all("was deleted while" in e or "resumes" in e for e in errors), errors
    assert not db.exists()  # no empty database in its place
    out = hpo("status", study, "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert out.returncode == 2 and "s.db" in error_lines(out)[0]


def _data_copy(fmnist_dir: Path, tmp_path: Path) -> Path:
    """The real data, linked file by file into a folder of our own (so one can be damaged)."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (fmnist_dir / "FashionMNIST" / "raw").iterdir():
        if path.suffix != ".gz":
            (raw / path.name).symlink_to(path)
    return raw


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()[:keep]
    path.unlink()
    path.write_bytes(data)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda raw: _truncate(raw / "t10k-labels-idx1-ubyte", 5000), "is truncated"),
        (lambda raw: _truncate(raw / "train-images-idx3-ubyte", 3), "not an IDX file"),
        (lambda raw: _truncate(raw / "train-labels-idx1-ubyte", 0), "not an IDX file"),
    ],
    ids=["truncated labels", "cut in the header", "empty"],
)
def test_damaged_data_is_found_before_the_study_is_created(tmp_path, fmnist_dir, damage, message):
    raw = _data_copy(fmnist_dir, tmp_path)
    damage(raw)
    study = tmp_path / "s.toml"
    study.write_text(small_study())
    out = hpo("run", study, "--storage", "sqlite:///s.db", "--data-dir", "data", cwd=tmp_path)
    assert out.returncode == 2
    (line,) = error_lines(out)
    assert message in line and "delete it" in line
    assert not (tmp_path / "s.db").exists()


def test_bad_labels_are_found_before_the_study_is_created(tmp_path, fmnist_dir):
    raw = _data_copy(fmnist_dir, tmp_path)
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[100] = 77
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    study = tmp_path / "s.toml"
    study.write_text(small_study())
    out = hpo("run", study, "--storage", "sqlite:///s.db", "--data-dir", "data", cwd=tmp_path)
    assert out.returncode == 2 and "label 77" in error_lines(out)[0]
    assert not (tmp_path / "s.db").exists()
