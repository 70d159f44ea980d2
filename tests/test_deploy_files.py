"""docker-compose.yml and the Dockerfile are checked statically (no Docker engine on CI machines)."""

from __future__ import annotations

import shlex

import yaml

from nas.cli import build_parser
from tests.conftest import REPO


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose__has_the_services_of_the_design():
    services = compose()["services"]
    assert {"postgres", "ray-head", "ray-gpu-worker", "api", "runner", "optuna-dashboard"} <= services.keys()
    gpu = services["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]


def test_compose__nas_commands_parse_with_the_real_cli():
    parser = build_parser()
    for name, service in compose()["services"].items():
        command = service.get("command")
        if isinstance(command, str) and command.startswith("nas "):
            args = parser.parse_args(shlex.split(command)[1:])  # exits (fails the test) on an unknown flag
            assert args.func is not None, name


def test_compose__every_nas_service_points_at_postgres_and_ray():
    for name, service in compose()["services"].items():
        environment = service.get("environment") or {}
        if str(service.get("command", "")).startswith("nas "):
            assert environment["NAS_DATABASE_URL"].startswith("postgresql"), name
            assert environment["RAY_ADDRESS"], name


def test_dockerfile__installs_the_package_with_its_service_extras():
    text = (REPO / "Dockerfile").read_text()
    assert "pip install" in text and "postgres" in text and "COPY nas" in text and "COPY services" in text
