"""/api/v1/studies: submit, list, read, trials, best, cancel, resume, extend the budget, export, plots, audits."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from nas.plots import PlotKind
from nas.space import SpaceError
from nas.store.studies import latest_audit_report, newest_audit
from nas.store.trials import StudyStatus, TrialStateName
from services.api import crud, queries
from services.api.deps import PrincipalDep, SessionDep, SettingsDep
from services.api.schemas import (
    AUTH_REQUIRED,
    BODY_ERRORS,
    AuditCreate,
    AuditPublic,
    BestPublic,
    ErrorBody,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    StudyUpdate,
    TrialsPublic,
    ValidationErrorBody,
)

router = APIRouter(prefix="/studies", tags=["studies"], responses=AUTH_REQUIRED)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no such study for this token"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the study's status does not allow this"}
}
# Bounded to the 64-bit integers a database can compare with (past them SQLite raised OverflowError: a 500).
StudyId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="a study's id, as POST /studies answered it")]


def _space_error(error: SpaceError) -> HTTPException:
    return HTTPException(
        status_code=422,
        detail={"detail": "the space is invalid", "errors": [{"path": p, "message": m} for p, m in error.errors]},
    )


def _study_or_404(session, principal, study_id: int):
    row = crud.get_study(session, principal, study_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no study {study_id} for this token")
    return row


@router.post(
    "",
    status_code=201,
    response_model=StudyPublic,
    responses={
        422: {
            "model": ValidationErrorBody,
            "description": "an invalid request, or an invalid space: every error with its path",
        },
        **CONFLICT,
        **BODY_ERRORS,
    },
)
def submit_study(body: StudyCreate, session: SessionDep, principal: PrincipalDep, settings: SettingsDep) -> StudyPublic:
    try:
        space = crud.space_from_request(body, settings.max_trials, settings.data_root_paths)
        row = crud.create_study(session, body, space, principal)
    except SpaceError as error:
        raise _space_error(error) from None
    except crud.Conflict as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    return crud.study_public(session, row)


@router.get("", response_model=StudiesPublic)
def list_studies(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    status: StudyStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> StudiesPublic:
    rows, total = crud.list_studies(session, principal, status, min(limit, settings.max_page_size), offset)
    return StudiesPublic(data=crud.study_publics(session, rows), count=total)


@router.get("/{study_id}", response_model=StudyPublic, responses=NOT_FOUND)
def get_study(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> StudyPublic:
    return crud.study_public(session, _study_or_404(session, principal, study_id))


@router.get("/{study_id}/trials", response_model=TrialsPublic, responses=NOT_FOUND)
def list_trials(
    study_id: StudyId,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    state: Annotated[list[TrialStateName] | None, Query()] = None,
    sort: Literal["number", "value"] = "number",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> TrialsPublic:
    row = _study_or_404(session, principal, study_id)
    study = queries.optuna_study(session, row.name)
    if study is None:
        return TrialsPublic(data=[], count=0)
    trials, total = queries.trials_page(
        session, study.id, list(state or []), sort, order == "desc", min(limit, settings.max_page_size), offset
    )
    return TrialsPublic(data=trials, count=total)


@router.get("/{study_id}/best", response_model=BestPublic, responses=NOT_FOUND)
def best(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> BestPublic:
    return crud.best_public(session, _study_or_404(session, principal, study_id))


def _transition(session, principal, study_id: int, change) -> StudyPublic:
    row = _study_or_404(session, principal, study_id)
    try:
        change(row)
    except crud.Conflict as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    session.flush()
    return crud.study_public(session, row)


@router.post("/{study_id}/cancel", response_model=StudyPublic, responses={**NOT_FOUND, **CONFLICT})
def cancel_study(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> StudyPublic:
    """Queued studies are cancelled at once; running ones stop their trials within seconds."""
    return _transition(session, principal, study_id, crud.cancel)


@router.post("/{study_id}/resume", response_model=StudyPublic, responses={**NOT_FOUND, **CONFLICT})
def resume_study(study_id: StudyId, session: SessionDep, principal: PrincipalDep) -> StudyPublic:
    """An interrupted, failed or cancelled study is queued again; its finished trials are kept."""
    return _transition(session, principal, study_id, crud.resume)


@router.patch("/{study_id}", response_model=StudyPublic, responses={**NOT_FOUND, **CONFLICT, **BODY_ERRORS})
def update_study(
    study_id: StudyId, body: StudyUpdate, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> StudyPublic:
    """Raise (or lower, not below the finished trials) the trial budget; a finished study is resumed."""
    return _transition(
        session, principal, study_id, lambda row: crud.extend_budget(session, row, body.trials, settings.max_trials)
    )


@router.get(
    "/{study_id}/export",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "the `nas export` folder as a zip"},
        **NOT_FOUND,
        **CONFLICT,
    },
)
def export_study(
    study_id: StudyId,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    trial: Annotated[int | None, Query(ge=0, le=10_000_000, description="default: the best trial")] = None,
    weights: Literal["proxy", "init"] = "proxy",
) -> FileResponse:
    """The same folder as ``nas export``, zipped: save_pretrained output, provenance and pretraining recipe."""
    from nas.export import ExportError, TrialNotFound, export_trial, load_trial

    row = _study_or_404(session, principal, study_id)
    work = Path(tempfile.mkdtemp(prefix="nas-export-"))
    background.add_task(shutil.rmtree, work, True)
    try:
        record = load_trial(settings.database_url, row.name, trial, space_yaml=row.spec)
        folder = export_trial(record, work / f"{row.name}-trial{record.number}", weights=weights)
    except TrialNotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except ExportError as error:  # nothing finished yet, a failed trial, weights gone: the study's state
        raise HTTPException(status_code=409, detail=str(error)) from None
    archive = shutil.make_archive(str(work / folder.name), "zip", root_dir=folder)
    return FileResponse(archive, media_type="application/zip", filename=f"{folder.name}.zip")


@router.get(
    "/{study_id}/plots/{kind}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "text/html": {}}, "description": "the plot, as a PNG or an HTML page"},
        404: {"model": ErrorBody, "description": "no such study for this token, or no such plot for it (yet)"},
    },
)
def study_plot(
    study_id: StudyId,
    kind: PlotKind,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    format: Literal["png", "html"] = "png",
) -> Response:
    """One of the study's plots, the same as ``nas studies show --plots`` writes: ``history``, ``pareto`` (several
    objectives), ``importances``, ``loss_vs_params``, ``loss_vs_flops``, ``audit``; a PNG, or with
    ``format=html`` an interactive page (plotly, self-contained)."""
    import optuna

    from nas.plots import PlotUnavailable, render_html, render_png
    from nas.store.db import optuna_storage

    row = _study_or_404(session, principal, study_id)
    try:
        study = optuna.load_study(study_name=row.name, storage=optuna_storage(settings.database_url))
    except KeyError:
        raise HTTPException(status_code=404, detail=f"study {study_id} has no trials yet") from None
    audit = latest_audit_report(settings.database_url, row) if kind == "audit" else None
    try:
        if format == "html":
            return Response(render_html(kind, study, audit), media_type="text/html")
        return Response(render_png(kind, study, audit), media_type="image/png")
    except PlotUnavailable as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


@router.post(
    "/{study_id}/audit", status_code=201, response_model=AuditPublic, responses={**NOT_FOUND, **CONFLICT, **BODY_ERRORS}
)
def start_audit(
    study_id: StudyId,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    body: AuditCreate | None = None,
) -> AuditPublic:
    """Queue an audit: the study's top and some random finished architectures retrained at ``factor`` x the
    proxy's steps, as trials of a linked audit study that a runner picks up; its report says how well the proxy
    (and the free baselines) ranked them."""
    row = _study_or_404(session, principal, study_id)
    try:
        audit = crud.create_audit(session, settings.database_url, row, body or AuditCreate())
    except crud.Conflict as error:
        raise HTTPException(status_code=409, detail=str(error)) from None
    return crud.audit_public(session, settings.database_url, audit)


@router.get("/{study_id}/audit", response_model=AuditPublic, responses=NOT_FOUND)
def get_audit(study_id: StudyId, session: SessionDep, principal: PrincipalDep, settings: SettingsDep) -> AuditPublic:
    """The study's newest audit: its status, progress and report (partial while it runs)."""
    row = _study_or_404(session, principal, study_id)
    audit = newest_audit(session, row.id)
    if audit is None:
        raise HTTPException(
            status_code=404, detail=f"study {study_id} has no audit; POST /studies/{study_id}/audit starts one"
        )
    return crud.audit_public(session, settings.database_url, audit)
