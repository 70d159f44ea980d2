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
from pathlib import Path
from typing import Any, cast

import yaml
from sqlalchemy import CursorResult, or_, select, update

from nas.audit.run import AuditPlan, run_audit
from nas.controller.cluster import ensure_ray
from nas.controller.run import run_study
from nas.controller.stopping import CANCELLED, CLAIM_LOST, StopFlag
from nas.errors import first_line
from nas.space import SpaceError, apply_overrides, parse_space
from nas.store.db import session_scope, upgrade
from nas.store.models import Runner as RunnerRow
from nas.store.models import Study, utcnow
from nas.store.outage import LONGEST_PAUSE_S, DatabaseUnavailable, call_with_retry, is_outage
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
        data_roots: tuple[Path, ...] = (),
    ):
        """``data_roots``: NAS_DATA_ROOTS, checked again when a study starts (the files a study submitted over REST
        names may have changed, a link been swapped, since its submission was checked)."""
        if heartbeat_s >= lease_s:
            raise ValueError("the heartbeat must come more often than the lease expires")
        self.url = url
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.data_roots = data_roots
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
        """Claim and run studies until stopped (or ``max_studies`` ran, or, if asked, nothing is queued). A database
        outage pauses the loop (logged, with backoff) instead of ending the runner."""
        upgrade(self.url)
        ensure_ray()  # before any claim: a Ray that cannot start stops this runner, not a user's study
        done = 0
        pause = self.poll_s
        try:
            while not self._stop.is_set() and (max_studies is None or done < max_studies):
                try:
                    self._beat(None)  # registers this runner on the first pass
                    study = self.claim()
                except Exception as error:
                    if not is_outage(error):
                        raise
                    pause = min(max(pause * 2, 1.0), LONGEST_PAUSE_S)
                    log.warning("database unreachable (%s); next look in %.0f s", first_line(error), pause)
                    self._stop.wait(pause)
                    continue
                pause = self.poll_s
                if study is None:
                    if exit_when_idle:
                        break
                    self._stop.wait(self.poll_s)
                    continue
                self.run_claimed(study)
                done += 1
        finally:
            self._unregister()
        return done

    def stop(self) -> None:
        self._stop.set()

    def run_claimed(self, study: Study) -> str:
        """Run one claimed study to its end; returns its final status (``queued`` when a database outage handed
        it back, ``running`` when another runner took it over)."""
        stop = StopFlag()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(study.id, stop), daemon=True, name=f"heartbeat-{study.id}"
        )
        heartbeat.start()
        status = "interrupted"
        try:
            status = self._run(study, stop)
        except KeyboardInterrupt:  # the runner is shutting down: hand the study to the next runner
            if not stop.claim_lost:
                set_status(self.url, study.name, "queued", "its runner stopped; queued to resume")
            raise
        finally:
            stop.set()  # ends the heartbeat loop (a no-op when a cancel or a lost claim set it)
            heartbeat.join(timeout=self.heartbeat_s * 2)
            self._finish(study.id, requeue=status == "queued")
        return status

    def _run(self, study: Study, stop: StopFlag) -> str:
        """The study's stored space through run_study (which records its own outcome) or run_audit."""
        try:
            raw = apply_overrides(yaml.safe_load(study.spec), {"search.trials": study.trials})
            space = parse_space(
                raw, study.space_name, check_data=True, check_satisfiable=False, data_roots=self.data_roots
            )
        except SpaceError as error:
            set_status(self.url, study.name, "failed", f"the stored space is no longer valid: {error}")
            return "failed"
        try:
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
        except DatabaseUnavailable as error:  # run_study handed the study back (or its lease will)
            log.warning("study %s: %s", study.name, error)
            return "queued"
        except Exception:  # run_study recorded the failure (logged with its reference); the runner lives on
            return "failed"
        return outcome.status

    # --- heartbeats ----------------------------------------------------------------------------
    def _heartbeat_loop(self, study_id: int, stop: StopFlag) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                held = self._beat(study_id)
            except Exception as error:  # a database hiccup must not kill the heartbeat; the next beat retries
                log.warning("heartbeat failed (%s); the lease holds %.0f s", first_line(error), self.lease_s)
                continue
            if held == CLAIM_LOST:
                log.warning(
                    "study %s was claimed by another runner (this one's lease expired); stopping here", study_id
                )
                stop.set(CLAIM_LOST)
            elif held == CANCELLED:
                stop.set(CANCELLED)

    def _beat(self, study_id: int | None) -> str | None:
        """Record this runner's heartbeat and extend its study's lease. Returns None while the claim holds, else why
        it does not: CANCELLED (a cancel was requested, or the study is gone) or CLAIM_LOST (another runner has it)."""
        now = utcnow()
        with session_scope(self.url) as session:
            runner = session.get(RunnerRow, self.id)
            if runner is None:
                runner = RunnerRow(id=self.id, hostname=socket.gethostname(), pid=os.getpid(), started_at=now)
                session.add(runner)
            runner.heartbeat_at = now
            runner.study_id = study_id
            if study_id is None:
                return None
            study = session.get(Study, study_id)
            if study is not None and (study.runner_id != self.id or study.status != "running"):
                return CLAIM_LOST if study.runner_id != self.id else CANCELLED
            if study is None or study.cancel_requested:
                return CANCELLED
            study.lease_expires_at = now + timedelta(seconds=self.lease_s)
            return None

    def _finish(self, study_id: int, requeue: bool) -> None:
        """Release the claim (if still this runner's); a database still out leaves it to the lease's expiry. A study
        still marked running goes back to the queue after an outage (``requeue``), else it ends interrupted."""

        def release() -> None:
            with session_scope(self.url) as session:
                study = session.get(Study, study_id)
                if study is not None and study.runner_id == self.id:
                    study.lease_expires_at = None
                    study.cancel_requested = False
                    if study.status == "running":  # run_study leaves a final status unless the database was out
                        study.status = "queued" if requeue else "interrupted"

        try:
            call_with_retry(release, "releasing the study")
        except DatabaseUnavailable as error:
            log.warning("study %s: %s; its lease will expire", study_id, error)

    def _unregister(self) -> None:
        try:
            with session_scope(self.url) as session:
                row = session.get(RunnerRow, self.id)
                if row is not None:
                    session.delete(row)
        except Exception as error:  # a runner that cannot say goodbye is dropped from /healthz when its beat ages
            if not is_outage(error):
                raise
            log.warning("could not unregister runner %s: %s", self.id, first_line(error))


def main(
    url: str, lease_s: float = 30.0, heartbeat_s: float = 5.0, poll_s: float = 2.0, data_roots: tuple[Path, ...] = ()
) -> None:
    """Entry point of ``nas worker``: run until SIGTERM / Ctrl-C."""
    runner = StudyRunner(url, lease_s=lease_s, heartbeat_s=heartbeat_s, poll_s=poll_s, data_roots=data_roots)

    def _terminate(signum, frame):
        runner.stop()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    log.info("runner %s on %s", runner.id, url)
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        pass
