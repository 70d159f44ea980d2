"""docker-compose.yml and the Dockerfile are checked statically (no Docker engine on CI machines)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from nas.cli import build_parser
from tests.conftest import REPO


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def with_defaults(value: object) -> str:
    """A compose value with its ``${VAR:-default}`` interpolations replaced by their defaults."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def nas_environment() -> dict[str, str]:
    """The settings the compose file gives every ssl-nas service (its ``x-nas`` block), defaults filled in."""
    return {key: with_defaults(value) for key, value in compose()["x-nas"]["environment"].items()}


def test_compose__validates_against_the_compose_specification_schema():
    checker = Path(sys.executable).with_name("check-jsonschema")
    command = str(checker) if checker.exists() else shutil.which("check-jsonschema")
    assert command, "check-jsonschema is a test dependency"
    result = subprocess.run(
        [command, "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose__dependencies_wait_for_health_and_every_long_running_service_reports_it():
    services = compose()["services"]
    for name, service in services.items():
        for needed, condition in (service.get("depends_on") or {}).items():
            assert needed in services, (name, needed)
            expected = "service_completed_successfully" if needed == "minio-bucket" else "service_healthy"
            assert condition["condition"] == expected, (name, needed)
    for name in ("postgres", "minio", "ray-head", "api"):
        assert services[name]["healthcheck"]["test"], name


def test_compose__has_the_services_of_the_design():
    services = compose()["services"]
    assert {
        "postgres",
        "minio",
        "ray-head",
        "ray-gpu-worker",
        "api",
        "runner",
        "optuna-dashboard",
    } <= services.keys()
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]


def test_compose__nas_commands_parse_with_the_real_cli():
    parser = build_parser()
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, str) and command.startswith("nas "):
            args = parser.parse_args(shlex.split(command)[1:])  # exits (fails the test) on an unknown flag
            assert args.func is not None, name


def test_compose__every_nas_service_points_at_postgres_ray_and_the_object_store():
    for name, service in compose()["services"].items():
        if str(service.get("command", "")).startswith("nas "):
            environment = {key: with_defaults(value) for key, value in service["environment"].items()}
            assert environment["NAS_DATABASE_URL"].startswith("postgresql+psycopg://"), name
            assert environment["NAS_DATABASE_URL"].endswith("@postgres:5432/nas"), name
            assert environment["RAY_ADDRESS"] == "ray-head:6379", name
            assert environment["NAS_STORAGE_URI"].startswith("s3://nas-artifacts/"), name
            assert environment["NAS_STORAGE_ENDPOINT"] == "http://minio:9000", name


def test_dockerfile__installs_the_package_with_its_service_extras():
    text = (REPO / "Dockerfile").read_text()
    assert "pip install" in text and "postgres" in text and "COPY nas" in text and "COPY services" in text
