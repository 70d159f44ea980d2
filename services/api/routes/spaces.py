"""/api/v1/spaces: the shipped spaces, and validation of a space text."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from nas.space import SpaceError, list_shipped_spaces, load_space_text
from services.api import crud
from services.api.deps import PrincipalDep, SettingsDep
from services.api.schemas import (
    AUTH_REQUIRED,
    BODY_ERRORS,
    ErrorBody,
    SpaceErrorItem,
    SpacePublic,
    SpacesPublic,
    SpaceValidate,
    ValidationResult,
)

router = APIRouter(prefix="/spaces", tags=["spaces"], responses=AUTH_REQUIRED)


@router.get("", response_model=SpacesPublic)
def list_spaces(principal: PrincipalDep) -> SpacesPublic:
    summaries = []
    for path in list_shipped_spaces():
        try:
            summaries.append(crud.shipped_summary(path))
        except SpaceError:
            continue  # a broken file on disk is not the caller's problem; `nas spaces list` shows it
    return SpacesPublic(data=summaries, count=len(summaries))


@router.get("/{name}", response_model=SpacePublic, responses={404: {"model": ErrorBody}})
def get_space(name: str, principal: PrincipalDep) -> SpacePublic:
    for path in list_shipped_spaces():
        if path.stem == name:
            return SpacePublic(**crud.shipped_summary(path).model_dump(), yaml=path.read_text())
    raise HTTPException(status_code=404, detail=f"no shipped space named {name!r}")


@router.post("/validate", response_model=ValidationResult, responses=BODY_ERRORS)
def validate_space(body: SpaceValidate, principal: PrincipalDep, settings: SettingsDep) -> ValidationResult:
    """Always 200: ``valid`` says whether the space can be submitted, ``errors`` list every problem."""
    try:
        space = load_space_text(body.yaml, body.overrides, data_roots=settings.data_root_paths)
    except SpaceError as error:
        return ValidationResult(valid=False, errors=[SpaceErrorItem(path=p, message=m) for p, m in error.errors])
    return ValidationResult(valid=True, summary=crud.summary(space))
