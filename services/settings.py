"""Service settings, read from the environment (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from nas.settings import DEFAULT_DATABASE_URL


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NAS_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    ray_address: str | None = Field(default=None, validation_alias=AliasChoices("RAY_ADDRESS", "NAS_RAY_ADDRESS"))
    admin_token: str | None = None  # a bootstrap admin token (NAS_ADMIN_TOKEN); never stored
    max_body_bytes: int = 256 * 1024
    max_trials: int = 10_000  # the largest trial budget one study may ask for
    max_page_size: int = 500
    # optuna-dashboard loads every trial of a study it shows, in the API's process: at 100,000 trials 120 s of CPU and
    # gigabytes (benchmarks/api_load.py). Larger studies are refused there, with the REST API named instead.
    dashboard_max_trials: int = 20_000
    runner_lease_s: float = 30.0
    runner_heartbeat_s: float = 5.0
    # Folders whose files a study submitted over REST may read, separated by os.pathsep (NAS_DATA_ROOTS); empty:
    # only the built-in data sets. The CLI on one's own machine reads what its user can.
    data_roots: str = ""

    @property
    def data_root_paths(self) -> tuple[Path, ...]:
        return tuple(Path(os.path.realpath(part)) for part in self.data_roots.split(os.pathsep) if part.strip())
