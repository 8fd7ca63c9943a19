"""deploy/slurm/hpo-workers.sbatch on a real single-node Slurm cluster started by the test.

munged, slurmctld and slurmd (Debian's slurm-wlm and munge) run by hand from a slurm.conf in a
temporary directory: no systemd, cgroups or accounting, ports of their own. Jobs run the
sbatch script exactly as a user submits it, against a fresh PostgreSQL database and the real
Fashion-MNIST; the assertions read the study back from PostgreSQL and the tasks' own logs.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.coord.recovery import FAILURE_ATTR, RETRY_OF_ATTR
from tests.conftest import REPO
from tests.processes import alive, free_port, require, stop_pid, wait_for

pytestmark = pytest.mark.slow

SBATCH = REPO / "deploy" / "slurm" / "hpo-workers.sbatch"
GIVEN_BACK = "interrupted by SIGTERM; queued again"

SLURM_CONF = """\
ClusterName=hpotest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/sock
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=5
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} \
ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN
# OverSubscribe: up to 4 tasks share a core, so a 4-task array runs at once on 2 cores (a node
# that claims more CPUs than it has is refused as INVALID).
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


class Slurm:
    """A running single-node cluster: its config, and sbatch/squeue/scontrol against it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = {**os.environ, "SLURM_CONF": str(base / "etc" / "slurm.conf")}

    def run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env)
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")[:-1]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, RunTime, ...)."""
        out = self.run("scontrol", "-o", "show", "job", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_idle(self, timeout: float = 300) -> None:
        wait_for(lambda: not self.queue(), timeout, "the queue to empty", every=0.5)

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted((self.base / "log").glob("*")))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Slurm:
    """munged + slurmctld + slurmd on this machine, stopped by their PIDs afterwards."""
    require("munged", "mungekey", "slurmctld", "slurmd", "sbatch")
    base = tmp_path_factory.mktemp("slurm")
    for sub in ("etc", "state", "spool", "log", "munge"):
        (base / sub).mkdir()
    (base / "munge").chmod(0o700)
    conf = SLURM_CONF.format(
        base=base, cpus=os.cpu_count(), ctld_port=free_port(), slurmd_port=free_port()
    )
    (base / "etc" / "slurm.conf").write_text(conf)
    cluster = Slurm(base)
    key, munge_pid = base / "munge" / "munge.key", base / "munge" / "munged.pid"
    daemons: list[tuple[int, subprocess.Popen | None]] = []
    try:
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        key.chmod(0o400)
        munge_args = [
            f"--key-file={key}", f"--socket={base}/munge/sock", f"--pid-file={munge_pid}",
            f"--log-file={base}/munge/munged.log", f"--seed-file={base}/munge/seed",
        ]  # fmt: skip
        # -f: run as root; munged forks into the background and writes its PID file.
        subprocess.run(["munged", "-f", *munge_args], check=True, capture_output=True)
        daemons.append((int(wait_for(munge_pid.read_text, 10, "munged's PID file")), None))
        for argv in (["slurmctld", "-D"], ["slurmd", "-D", "-N", "localhost"]):
            out = open(base / "log" / f"{argv[0]}.out", "w")  # noqa: SIM115
            proc = subprocess.Popen(
                argv, env=cluster.env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            daemons.append((proc.pid, proc))
        idle = lambda: cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"  # noqa: E731
        try:
            wait_for(idle, 30, "the node to be idle", every=0.3)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{cluster.log()[-3000:]}") from None
        yield cluster
    finally:
        # Jobs first, and only then the daemons: killing slurmd while a step is still being
        # torn down leaves slurmstepd retrying forever.
        if any(proc is not None and proc.poll() is None for _, proc in daemons):
            cluster.run("scancel", "--user", "root")
            with contextlib.suppress(AssertionError):
                cluster.wait_idle(timeout=120)
        for pid, proc in reversed(daemons):  # slurmd, slurmctld, munged
            stop_pid(pid, proc=proc)
        assert not [pid for pid, _ in daemons if alive(pid)], "a Slurm daemon outlived its test"


@pytest.fixture
def job_env(pg_url, fmnist_dir, slurm) -> dict[str, str]:
    """The submitting shell's environment, which sbatch hands to every task: this checkout's
    hpo first on PATH, the storage URL only in HPO_STORAGE."""
    return {
        **slurm.env,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "HPO_STORAGE": pg_url,
        "HPO_DATA_DIR": str(fmnist_dir),
    }


def hpo_create(study_file: Path | str, env: dict[str, str], cwd: Path, *args: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hpo", "create", str(study_file), *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def sbatch(slurm: Slurm, env: dict[str, str], cwd: Path, *args: str) -> str:
    out = slurm.run("sbatch", "--parsable", *args, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def task_logs(cwd: Path, job: str) -> dict[int, str]:
    """Each array task's log (the script's ``--output=hpo-worker-%A_%a.out``), by task id."""
    found = {}
    for path in cwd.glob(f"hpo-worker-{job}_*.out"):
        found[int(path.stem.rsplit("_", 1)[1])] = path.read_text()
    return found


def started(logs: dict[int, str]) -> collections.Counter:
    """How often each trial number was started, over the given logs."""
    return collections.Counter(
        int(n) for text in logs.values() for n in re.findall(r"trial #(\d+) started", text)
    )


@pytest.fixture
def workdir(tmp_path) -> Path:
    """Where jobs are submitted from: the tasks run there, find ``studies/`` there (a copy of
    the shipped ones) and write their logs there (the script's ``hpo-worker-%A_%a.out``)."""
    shutil.copytree(REPO / "studies", tmp_path / "studies")
    return tmp_path


def test_four_array_tasks_run_grid_smoke_exactly_once(slurm, job_env, workdir):
    hpo_create("studies/grid_smoke.toml", job_env, workdir)
    job = sbatch(slurm, job_env, workdir, "--array=1-4", str(SBATCH), "studies/grid_smoke.toml")
    slurm.wait_idle(timeout=300)
    logs = task_logs(workdir, job)
    assert sorted(logs) == [1, 2, 3, 4], slurm.log()[-2000:]
    for task, text in logs.items():
        assert slurm.job(f"{job}_{task}")["JobState"] == "COMPLETED", text
        assert "1 thread(s)" in text and text.rstrip().endswith("exited with status 0"), text

    study = optuna.load_study(study_name="grid_smoke", storage=job_env["HPO_STORAGE"])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 36, logs
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 36
    assert started(logs) == dict.fromkeys(range(36), 1)  # each point trained once, in all
    assert sum(1 for text in logs.values() if " started" in text) >= 2  # shared out
    assert {t.user_attrs["threads"] for t in trials} == {1}  # one per CPU given (-c 1)


# Trials long enough (several seconds) to be caught mid-training by scancel or the warning.
SLOW_GRID = """
[study]
name = "{name}"
metric = "val_accuracy"
[sampler]
name = "grid"
[pruner]
name = "none"
[data]
validation_size = 1000
train_size = 3000
[space]
depth = 2
units_1 = {units_1}
units_2 = [64, 128]
epochs = {epochs}
batch_size = 100
"""


def running_trial(study: optuna.Study, logs: Callable[[], dict[int, str]]):
    """(trial, array task) of a trial that is mid-training (it has reported an epoch), or
    None."""
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        if trial.intermediate_values:
            for task, text in logs().items():
                if f"trial #{trial.number} started" in text:
                    return trial, task
    return None


def test_scancel_mid_trial_gives_the_trial_back_and_the_study_stays_exact(slurm, job_env, workdir):
    study_file = workdir / "slow.toml"
    study_file.write_text(SLOW_GRID.format(name="slow", units_1="[64, 128, 256]", epochs=8))
    # Heartbeats every 2 s: should the worker die instead of giving the trial back, it is retried
    # after 8 s instead of 40.
    hpo_create(study_file.name, job_env, workdir, "--heartbeat", "2")
    job = sbatch(slurm, job_env, workdir, "--array=1-2", "--cpus-per-task=2", str(SBATCH),
                 study_file.name)  # fmt: skip
    study = optuna.load_study(study_name="slow", storage=job_env["HPO_STORAGE"])
    # After the task's script has started and its worker is training (scancel before the
    # script starts kills it unsignalled), cancel that task alone.
    trial, task = wait_for(lambda: running_trial(study, lambda: task_logs(workdir, job)), 120,
                           "a trial to be training")  # fmt: skip
    assert slurm.run("scancel", f"{job}_{task}").returncode == 0
    slurm.wait_idle(timeout=300)

    logs = task_logs(workdir, job)
    cancelled, other = logs[task], logs[3 - task]
    assert slurm.job(f"{job}_{task}")["JobState"] == "CANCELLED", cancelled
    assert slurm.job(f"{job}_{3 - task}")["JobState"] == "COMPLETED", other
    assert "2 thread(s)" in other

    # Exact whichever way the trial came back: the six points, and the one interrupted.
    trials = study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == 6 and len({tuple(sorted(t.params.items())) for t in done}) == 6
    assert len(trials) == 7, [(t.number, t.state.name, t.user_attrs) for t in trials]
    back = trials[trial.number]
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == trial.number)
    assert retry.state == TrialState.COMPLETE and retry.params == back.params  # retried
    assert {t.user_attrs["threads"] for t in done} == {2}  # one per CPU given (-c 2)
    counts = started(logs)
    assert counts == dict.fromkeys((t.number for t in trials), 1)  # no point trained twice...
    assert sum(counts.values()) == 7  # ... but the interrupted one, once more

    # ... and it came back because the worker gave it back, not by its heartbeat going stale.
    assert f"trial #{trial.number} interrupted by SIGTERM; given back" in cancelled, cancelled
    assert "worker stopped by SIGTERM:" in cancelled and "1 given back" in cancelled
    # The give-back is done once the worker logs it; the batch script's last line ("exited with
    # status 0") can be cut off by Slurm's SIGKILL after KillWait when the interpreter's exit is
    # slow on a loaded machine (seen in CI at load ~15), so it is not asserted here.
    assert back.state == TrialState.FAIL and back.user_attrs[FAILURE_ATTR] == GIVEN_BACK


def test_a_task_at_its_time_limit_gives_its_trial_back(slurm, job_env, workdir):
    study_file = workdir / "long.toml"
    study_file.write_text(SLOW_GRID.format(name="long", units_1="[64]", epochs=10_000))
    hpo_create(study_file.name, job_env, workdir)
    # A two-minute limit, warned 30 s before it. Slurm may warn up to a minute early (here it
    # was 12-15 s early), so the warning comes at least 30 s in, when the worker is training.
    job = sbatch(slurm, job_env, workdir, "--array=1", "--time=2", "--signal=B:USR1@30",
                 str(SBATCH), study_file.name)  # fmt: skip
    study = optuna.load_study(study_name="long", storage=job_env["HPO_STORAGE"])
    wait_for(lambda: running_trial(study, lambda: task_logs(workdir, job)), 60, "the trial")
    slurm.wait_idle(timeout=240)

    log = task_logs(workdir, job)[1]
    info = slurm.job(f"{job}_1")
    # It ended by itself, before the limit: COMPLETED with status 0, not TIMEOUT.
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), (info, log)
    minutes, seconds = map(int, info["RunTime"].split(":")[-2:])
    assert minutes * 60 + seconds < 120, info
    assert "trial #0 interrupted by SIGTERM; given back" in log, log
    assert "worker stopped by SIGTERM: 0 complete, 0 pruned, 0 failed, 1 given back" in log
    (back, *queued) = study.get_trials()
    assert back.state == TrialState.FAIL and back.user_attrs[FAILURE_ATTR] == GIVEN_BACK
    assert [t.state for t in queued] == [TrialState.WAITING] * 2  # its point and the other one
