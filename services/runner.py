"""The study runner: claims queued studies from the database and runs them through the core controller.

Claiming is one conditional UPDATE (compare-and-set on status and lease), so several runners on PostgreSQL
never run the same study. While it runs a study, a heartbeat thread extends the lease, records the runner's
heartbeat and watches for a cancel request. A runner that dies stops extending its lease; once the lease has
expired another runner claims the study and resumes it (finished trials kept, RUNNING ones marked failed).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any, cast

import yaml
from sqlalchemy import CursorResult, or_, select, update

from nas.audit.run import AuditPlan, run_audit
from nas.controller.run import ensure_ray, run_study
from nas.controller.stopping import StopFlag
from nas.space import SpaceError, apply_overrides, parse_space
from nas.store.db import session_scope, upgrade
from nas.store.models import Runner as RunnerRow
from nas.store.models import Study, utcnow
from nas.store.studies import set_status

log = logging.getLogger("nas.runner")


class StudyRunner:
    def __init__(
        self,
        url: str,
        lease_s: float = 30.0,
        heartbeat_s: float = 5.0,
        poll_s: float = 2.0,
        runner_id: str | None = None,
    ):
        if heartbeat_s >= lease_s:
            raise ValueError("the heartbeat must come more often than the lease expires")
        self.url = url
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.id = runner_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()

    # --- claiming ------------------------------------------------------------------------------
    def claim(self) -> Study | None:
        """Atomically take the oldest queued study, or a running one whose runner's lease has expired."""
        now = utcnow()
        claimable = or_(Study.status == "queued", (Study.status == "running") & (Study.lease_expires_at < now))
        with session_scope(self.url) as session:
            candidates = session.scalars(
                select(Study.id).where(claimable).order_by(Study.created_at, Study.id).limit(5)
            ).all()
        for study_id in candidates:
            with session_scope(self.url) as session:
                result = session.execute(
                    update(Study)
                    .where(Study.id == study_id, claimable)
                    .values(
                        status="running",
                        runner_id=self.id,
                        lease_expires_at=now + timedelta(seconds=self.lease_s),
                        started_at=now,
                        finished_at=None,
                        error=None,
                        attempts=Study.attempts + 1,
                    )
                )
                # An UPDATE's result is a CursorResult (it has rowcount); Session.execute is typed as Result.
                claimed = cast(CursorResult[Any], result).rowcount
            if claimed == 1:
                with session_scope(self.url) as session:
                    return session.get(Study, study_id)
        return None

    # --- the loop ------------------------------------------------------------------------------
    def run_forever(self, max_studies: int | None = None, exit_when_idle: bool = False) -> int:
        """Claim and run studies until stopped (or ``max_studies`` ran, or, if asked, nothing is queued)."""
        upgrade(self.url)
        ensure_ray()  # before any claim: a Ray that cannot start stops this runner, not a user's study
        self._beat(None)  # register this runner
        done = 0
        try:
            while not self._stop.is_set() and (max_studies is None or done < max_studies):
                self._beat(None)
                study = self.claim()
                if study is None:
                    if exit_when_idle:
                        break
                    self._stop.wait(self.poll_s)
                    continue
                self.run_claimed(study)
                done += 1
        finally:
            with session_scope(self.url) as session:
                row = session.get(RunnerRow, self.id)
                if row is not None:
                    session.delete(row)
        return done

    def stop(self) -> None:
        self._stop.set()

    def run_claimed(self, study: Study) -> str:
        """Run one claimed study to its end; returns its final status."""
        stop = StopFlag()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(study.id, stop), daemon=True, name=f"heartbeat-{study.id}"
        )
        heartbeat.start()
        try:
            raw = apply_overrides(yaml.safe_load(study.spec), {"search.trials": study.trials})
            space = parse_space(raw, study.space_name, check_data=True, check_satisfiable=False)
            if study.kind == "audit":
                assert study.audit_plan is not None  # every audit row is created with its plan
                outcome = run_audit(
                    self.url,
                    study.name,
                    AuditPlan.from_json(study.audit_plan),
                    space,
                    progress=False,
                    create_row=False,
                    stop_event=stop,
                )
            else:
                outcome = run_study(space, study.name, self.url, progress=False, create_row=False, stop_event=stop)
            status = outcome.status
        except KeyboardInterrupt:  # the runner is shutting down: hand the study to the next runner
            set_status(self.url, study.name, "queued", "its runner stopped; queued to resume")
            raise
        except SpaceError as error:
            status = "failed"
            set_status(self.url, study.name, status, f"the stored space is no longer valid: {error}")
        except Exception as error:  # the study failed; the runner lives on for the next one
            log.exception("study %s failed", study.name)
            status = "failed"
            set_status(self.url, study.name, status, f"{type(error).__name__}: {error}")
        finally:
            self._finish(study.id)
            stop.set()  # ends the heartbeat loop
            heartbeat.join(timeout=self.heartbeat_s * 2)
        return status

    # --- heartbeats ----------------------------------------------------------------------------
    def _heartbeat_loop(self, study_id: int, stop: StopFlag) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                if not self._beat(study_id):
                    log.warning("lost the lease on study %s; stopping it", study_id)
                    stop.set()
            except Exception:  # a database hiccup must not kill the heartbeat; the next beat retries
                log.exception("heartbeat failed")

    def _beat(self, study_id: int | None) -> bool:
        """Record this runner's heartbeat; extend the study's lease. False if the study is cancelled or lost."""
        now = utcnow()
        with session_scope(self.url) as session:
            runner = session.get(RunnerRow, self.id)
            if runner is None:
                runner = RunnerRow(id=self.id, hostname=socket.gethostname(), pid=os.getpid(), started_at=now)
                session.add(runner)
            runner.heartbeat_at = now
            runner.study_id = study_id
            if study_id is None:
                return True
            study = session.get(Study, study_id)
            if study is None or study.runner_id != self.id or study.status != "running" or study.cancel_requested:
                return False
            study.lease_expires_at = now + timedelta(seconds=self.lease_s)
            return True

    def _finish(self, study_id: int) -> None:
        with session_scope(self.url) as session:
            study = session.get(Study, study_id)
            if study is not None and study.runner_id == self.id:
                study.lease_expires_at = None
                study.cancel_requested = False
                if study.status == "running":  # run_study always leaves a final status; this is a guard
                    study.status = "interrupted"


def main(url: str, lease_s: float = 30.0, heartbeat_s: float = 5.0, poll_s: float = 2.0) -> None:
    """Entry point of ``nas worker``: run until SIGTERM / Ctrl-C."""
    runner = StudyRunner(url, lease_s=lease_s, heartbeat_s=heartbeat_s, poll_s=poll_s)

    def _terminate(signum, frame):
        runner.stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    log.info("runner %s on %s", runner.id, url)
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        pass
