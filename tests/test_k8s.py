"""deploy/k8s checked offline: no cluster can run here.

Every manifest, and what ``kubectl kustomize`` builds from each kustomization, validates with
``kubernetes-validate --strict`` (it ships the API schemas; strict rejects unknown fields)
against the oldest and the newest Kubernetes it knows. The worker Job runs the very command
that docker-compose.yml's worker and each Slurm array task run, which tests/test_docker.py and
tests/test_slurm.py run for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.processes import require

try:
    from kubernetes_validate.utils import all_versions
except ImportError:  # a dev extra: in CI its absence fails the run, elsewhere it skips
    if os.environ.get("CI"):
        raise
    pytest.skip("kubernetes-validate is not installed: pip install -e '.[dev]'",
                allow_module_level=True)  # fmt: skip

K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")
# What the Slurm and compose tests run (tests/test_slurm.py submits grid_smoke with -c 1).
WORKER = ["hpo", "worker", "studies/grid_smoke.toml", "--threads", "1"]


def _versions() -> list[str]:
    versions = sorted(set(all_versions()), key=lambda v: tuple(map(int, v.split("."))))
    return [versions[0], versions[-1]]


def validate(paths: list[Path], version: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, "--quiet",
         *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def kustomize(folder: Path) -> str:
    require("kubectl")
    out = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    """Each kustomization folder (relative to deploy/k8s) → the documents it builds."""
    return {str(f.relative_to(K8S)): documents(kustomize(f)) for f in KUSTOMIZATIONS}


def test_the_kustomizations_and_manifests_are_the_expected_ones(built):
    assert [str(f.relative_to(K8S)) for f in KUSTOMIZATIONS] == [".", "postgres"]
    assert set(by_kind(built["."])) == {
        ("Secret", "hpo-storage"),
        ("Job", "hpo-create"),
        ("Job", "hpo-worker"),
        ("Deployment", "hpo-dashboard"),
        ("Service", "hpo-dashboard"),
    }
    assert set(by_kind(built["postgres"])) == {
        ("Secret", "hpo-postgres"),
        ("Service", "hpo-postgres"),
        ("StatefulSet", "hpo-postgres"),
    }
    # Every manifest file is in a kustomization (nothing shipped that nothing applies).
    listed = {
        (folder / name).resolve()
        for folder in KUSTOMIZATIONS
        for name in yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    }
    assert listed == {p.resolve() for p in MANIFESTS}


@pytest.mark.parametrize("version", _versions())
def test_every_manifest_validates_strictly(version):
    out = validate(MANIFESTS, version)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("version", _versions())
def test_the_kustomize_output_validates_strictly(version, built, tmp_path):
    for name, docs in built.items():
        path = tmp_path / f"{name.replace('.', 'base')}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        out = validate([path], version)
        assert out.returncode == 0, (name, out.stdout + out.stderr)


def test_strict_validation_catches_a_misspelled_field(tmp_path):
    """So that the two tests above could fail: a typo in the worker Job is an error."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((K8S / "worker-job.yaml").read_text().replace("parallelism:", "paralelism:"))
    out = validate([bad], _versions()[-1])
    assert out.returncode != 0 and "paralelism" in out.stdout + out.stderr


def _slurm_worker_argv(tmp_path: Path) -> list[str]:
    """The command a Slurm array task runs, read off the sbatch script by running it with a
    stand-in ``hpo`` that records its arguments (as tests/test_slurm.py submits it, -c 1)."""
    fake = tmp_path / "bin" / "hpo"
    fake.parent.mkdir()
    record = tmp_path / "argv"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "HPO_STORAGE": "postgresql+psycopg://hpo@db/hpo",
        "SLURM_CPUS_PER_TASK": "1",
    }
    script = REPO / "deploy" / "slurm" / "hpo-workers.sbatch"
    out = subprocess.run(
        ["bash", str(script), "studies/grid_smoke.toml"], env=env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return ["hpo", *record.read_text().splitlines()]


def test_the_worker_job_runs_the_compose_and_slurm_worker_command(built, compose_config, tmp_path):
    objects = by_kind(built["."])
    pod = objects[("Job", "hpo-worker")]["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    compose = compose_config["services"]["worker"]
    assert worker["command"] == WORKER
    assert [*compose["entrypoint"], *compose["command"]] == WORKER
    assert _slurm_worker_argv(tmp_path) == WORKER
    create = objects[("Job", "hpo-create")]["spec"]["template"]["spec"]["containers"][0]
    service = compose_config["services"]["create"]
    assert create["command"] == [*service["entrypoint"], *service["command"]]
    assert worker["image"] == create["image"] == "hpo:local"  # compose's image name


def test_the_worker_job_restarts_gives_back_and_reads_the_url_from_the_secret(built):
    objects = by_kind(built["."])
    job = objects[("Job", "hpo-worker")]["spec"]
    pod = job["template"]["spec"]
    (worker,) = pod["containers"]
    assert job["parallelism"] >= 2 and "completions" not in job  # a work-queue Job
    assert pod["restartPolicy"] == "OnFailure"
    # A worker gives its trial back within 15 s of SIGTERM (tests/test_workers.py's bound).
    assert pod["terminationGracePeriodSeconds"] > 15
    threads = worker["command"][worker["command"].index("--threads") + 1]
    assert worker["resources"]["requests"]["cpu"] == threads  # one torch thread per CPU
    containers = [c for kind in ("Job", "Deployment") for o in objects.values()
                  if o["kind"] == kind for c in _containers(o)]  # fmt: skip
    for container in containers:
        (url,) = [e for e in container["env"] if e["name"] == "HPO_STORAGE"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "hpo-storage", "key": "HPO_STORAGE"}
        assert "postgresql" not in " ".join(container.get("command", []))  # never on argv
    dashboard = _containers(objects[("Deployment", "hpo-dashboard")])[0]
    assert "$(HPO_STORAGE)" in dashboard["command"]  # expanded by Kubernetes, not a shell
    service = objects[("Service", "hpo-dashboard")]["spec"]
    assert service["ports"][0]["port"] == 8080


def test_the_trial_postgres_keeps_its_data_on_a_volume_and_matches_the_url(built):
    objects = by_kind(built["postgres"])
    spec = objects[("StatefulSet", "hpo-postgres")]["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    assert [m["name"] for m in container["volumeMounts"]] == [claim["metadata"]["name"]]
    password = objects[("Secret", "hpo-postgres")]["stringData"]["POSTGRES_PASSWORD"]
    url = by_kind(built["."])[("Secret", "hpo-storage")]["stringData"]["HPO_STORAGE"]
    assert url == f"postgresql+psycopg://hpo:{password}@hpo-postgres:5432/hpo"
    assert spec["serviceName"] == "hpo-postgres"


def _containers(obj: dict) -> list[dict]:
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]
