"""docker-compose.yml and the Dockerfile, checked without Docker.

``docker-compose config`` (Debian's docker-compose) validates the file; these tests check what
it must promise. That its services' commands work is tested by running them, exactly, against
a local PostgreSQL (tests/test_workers.py::test_compose_grid_smoke_...), and the file itself
runs on a real dockerd in tests/test_docker.py.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess

import yaml

from hpo.config.spec import load_spec
from tests.conftest import PGBOUNCER_INI, REPO


def test_services_and_their_wiring(compose_config):
    services = compose_config["services"]
    assert set(services) == {"postgres", "pgbouncer", "create", "worker", "dashboard"}
    db = services["postgres"]
    assert db["image"].startswith("postgres:")
    assert any(v.startswith("pgdata:/var/lib/postgresql/data") for v in db["volumes"])
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert services["create"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["create"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["create"]["restart"] == "no"  # one-shot
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]
    url = "postgresql+psycopg://hpo:change-me-before-use@{}/hpo"
    # Workers go through PgBouncer; creating the study and the dashboard (plain Optuna, whose
    # psycopg prepares statements) go straight to PostgreSQL.
    assert services["worker"]["environment"]["HPO_STORAGE"] == url.format("pgbouncer:6432")
    for name in ("create", "dashboard"):
        assert services[name]["environment"]["HPO_STORAGE"] == url.format("postgres:5432")
    assert "optuna-dashboard" in services["dashboard"]["command"][0]
    assert "$$HPO_STORAGE" in services["dashboard"]["command"][0]  # the same database


def test_ports_are_published_on_localhost_only(compose_config):
    ports = {name: service.get("ports", []) for name, service in compose_config["services"].items()}
    assert ports["dashboard"] == ["127.0.0.1:8080:8080/tcp"]
    assert ports["postgres"] == ["127.0.0.1:5432:5432/tcp"]
    assert ports["pgbouncer"] == ["127.0.0.1:6432:6432/tcp"]
    assert all(p.startswith("127.0.0.1:") for published in ports.values() for p in published)


def test_the_password_comes_from_env_and_is_required(tmp_path):
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    (tmp_path / "empty.env").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "HPO_"))}
    compose = shutil.which("docker-compose") or "docker-compose"
    out = subprocess.run(
        [compose, "--env-file", str(tmp_path / "empty.env"), "-f", "docker-compose.yml", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode != 0 and "set POSTGRES_PASSWORD in .env" in out.stderr


def test_services_run_hpo_on_a_shipped_study(compose_commands):
    assert compose_commands["create"][3:] == ["create", "studies/grid_smoke.toml"]
    assert compose_commands["worker"][3:] == ["worker", "studies/grid_smoke.toml", "--threads", "1"]
    spec = load_spec(REPO / "studies" / "grid_smoke.toml")
    assert spec.is_grid and len(spec.grid()) == 36


def test_dockerfile_builds_hpo_with_data_and_no_root():
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hpo"]' in text
    # The base is a build argument (a local one where no registry is reachable).
    assert "\nARG BASE=python:3.11-slim-bookworm\nFROM ${BASE}\n" in text
    assert "dataset-fashion-mnist" in text and "HPO_DATA_DIR" in text
    assert "\nUSER hpo\n" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".env", "storage"} <= set(ignored)


def test_pgbouncer_pools_transactions_in_front_of_postgres(compose_config):
    """The pgbouncer service runs Debian's PgBouncer from the hpo image with the shipped
    settings: transaction pooling, a bounded pool, room for many workers, the password from
    .env; tests/test_workers.py runs every worker test through a PgBouncer set up alike."""
    service = compose_config["services"]["pgbouncer"]
    assert service["image"] == compose_config["services"]["worker"]["image"]
    assert "/usr/sbin/pgbouncer /etc/pgbouncer-hpo/pgbouncer.ini" in service["command"][0]
    assert "$$POSTGRES_PASSWORD" in service["command"][0]  # expanded by sh, never in the file
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(v.startswith(f"{REPO}/deploy/pgbouncer/pgbouncer.ini:") for v in service["volumes"])
    assert "pgbouncer" in (REPO / "Dockerfile").read_text()  # Debian's package, in the image
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(REPO / "deploy" / "pgbouncer" / "pgbouncer.ini")
    settings = ini["pgbouncer"]
    assert settings["pool_mode"] == "transaction"
    assert settings["listen_port"] == "6432" and settings["auth_type"] == "scram-sha-256"
    assert settings["auth_file"] == "/tmp/pgbouncer-users.txt"  # written by the command above
    assert 1 <= int(settings["default_pool_size"]) <= 50
    assert int(settings["max_client_conn"]) >= 256
    assert ini["databases"]["hpo"].split() == ["host=postgres", "port=5432", "dbname=hpo"]
    tested = configparser.ConfigParser(inline_comment_prefixes=(";",))
    tested.read_string(PGBOUNCER_INI)
    assert tested["pgbouncer"]["pool_mode"] == settings["pool_mode"]
