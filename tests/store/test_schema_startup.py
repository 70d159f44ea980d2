"""Schema upgrades at start-up: the full upgrade on a new or old database, a one-row check on a current one for
commands that read only the service's tables (``nas studies list`` starts without Optuna or Alembic)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import text

from nas.store.db import MIGRATIONS_DIR, SCHEMA_HEAD, VERSION_TABLE, ensure_service_schema, get_engine


def test_schema_head__is_the_newest_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def version_of(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def test_ensure_service_schema__upgrades_a_new_or_old_database_and_only_reads_a_current_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    ensure_service_schema(url)  # a new file: the whole upgrade, Optuna's tables included
    assert version_of(url) == SCHEMA_HEAD
    with get_engine(url).begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM version_info")).scalar() == 1
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0005'"))  # as if made by an older nas
    ensure_service_schema(url)
    assert version_of(url) == SCHEMA_HEAD
    # Current: a fresh process lists studies without importing Optuna or Alembic.
    probe = (
        "import sys; from nas.store.db import ensure_service_schema; from nas.store import list_study_rows; "
        f"ensure_service_schema({url!r}); list_study_rows({url!r}); "
        "print(sorted(m for m in ('optuna', 'alembic') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


UPGRADE_AT_THE_SIGNAL = """
import sys, time
from pathlib import Path
import alembic.command, optuna  # imported before the signal, so the processes reach upgrade() together
from nas.store.db import upgrade
url, folder = sys.argv[1], Path(sys.argv[2])
(folder / f"ready-{sys.argv[3]}").touch()
deadline = time.monotonic() + 60
while not (folder / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.001)
upgrade(url)
"""


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrade__processes_started_together_on_a_new_database_all_succeed(database, tmp_path, request):
    """docker-compose starts the API and a runner at once on an empty database: both upgrade the schema. Without a
    lock the second died creating Alembic's version table (duplicate key); four processes released at one signal."""
    url = f"sqlite:///{tmp_path / 'nas.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_AT_THE_SIGNAL, url, str(tmp_path), str(index)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < len(processes) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), [p.communicate()[0] for p in processes]
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        for process in processes:
            process.kill()
    assert [p.returncode for p in processes] == [0] * len(processes), "\n".join(o[-3000:] for o in outputs)
    assert version_of(url) == SCHEMA_HEAD
    with get_engine(url).connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM version_info")).scalar() == 1
