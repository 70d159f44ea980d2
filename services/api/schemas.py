"""Request and response bodies, one family per entity (Create / Public / sPublic with data and count)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from nas.store.trials import StudyStatus


def _as_utc(value: datetime) -> datetime:
    """Times are stored in UTC; SQLite hands them back without their zone, so say it (RFC 3339 needs one)."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class StudyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: str | None = Field(default=None, max_length=200, description="name of a shipped space, e.g. text-mlm-tiny")
    space_yaml: str | None = Field(default=None, max_length=100_000, description="an inline space, as YAML text")
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    overrides: dict[str, Any] = Field(default_factory=dict, description='e.g. {"search.trials": 4}')
    warm_start: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        max_length=50,
        description="names of your earlier studies of the same space whose finished trials seed this one "
        "(search.warm_start; replaces the space's own list)",
    )

    @model_validator(mode="after")
    def _one_space(self) -> StudyCreate:
        if (self.space is None) == (self.space_yaml is None):
            raise ValueError("give exactly one of 'space' (a shipped space's name) or 'space_yaml' (YAML text)")
        return self


class StudyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, description="the new trial budget; at least the trials already finished")


class TrialCounts(BaseModel):
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    infeasible: int = 0
    lost: int = 0  # cut short by a cancel or a dead runner; they do not use up the budget
    duplicate: int = 0  # samples the study had trained already: the earlier result reused, no budget used
    prescreened: int = 0  # samples search.prescreen scored at initialisation and did not train; no budget used
    warm_started: int = 0  # finished trials copied from earlier studies by search.warm_start; no budget used
    finished: int = 0
    budget: int = 0


class TrialPublic(BaseModel):
    number: int
    state: str
    values: list[float | None] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    architecture: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int


class StudyPublic(BaseModel):
    id: int
    name: str
    space_name: str
    family: str
    task: str
    status: StudyStatus
    owner: str | None = None
    counts: TrialCounts
    best: TrialPublic | None = None
    objectives: list[str] = Field(default_factory=list)
    created_at: UtcDateTime
    started_at: UtcDateTime | None = None
    finished_at: UtcDateTime | None = None
    error: str | None = None
    cancel_requested: bool = False
    kind: Literal["search", "audit"] = "search"
    parent_id: int | None = Field(default=None, description="for an audit: the study it checks")


class AuditCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: int = Field(default=4, ge=1, le=100, description="how many of the study's best finished trials to retrain")
    random: int = Field(default=4, ge=0, le=100, description="how many other finished trials, drawn at random")
    factor: float = Field(
        default=10.0, ge=1.0, le=100.0, description="the long run's steps as a multiple of the proxy's"
    )


class AuditRanking(BaseModel):
    kendall_tau: float | None = None
    spearman: float | None = None
    top_k_overlap: float | None = None


class AuditTrial(BaseModel):
    parent_trial: int
    audit_trial: int
    selected_as: Literal["top", "random"]
    proxy: float = Field(description="the study's objective for this trial (its proxy score)")
    long_run: float = Field(description="val_loss after the long run")
    proxy_val_loss: float | None = None
    params: int | None = Field(default=None, description="non-embedding parameters")
    zero_cost: float | None = None


class AuditResult(BaseModel):
    parent: str
    factor: float
    planned: int
    finished: int
    k: int
    proxy: AuditRanking = Field(description="rank agreement of the study's proxy with the long runs")
    params: AuditRanking = Field(description="the same for ranking by parameter count (a free baseline)")
    zero_cost: AuditRanking = Field(description="the same for ranking by the zero-cost score (a free baseline)")
    trials: list[AuditTrial]


class AuditPublic(BaseModel):
    study: StudyPublic = Field(description="the audit's own study: status, progress counts, times")
    top: int
    random: int
    factor: float
    trials: list[int] = Field(description="the parent's trial numbers it retrains")
    result: AuditResult | None = Field(
        default=None, description="final once the audit has ended; partial while it runs"
    )


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class BestPublic(BaseModel):
    multi_objective: bool
    objectives: list[str]
    directions: list[str]
    trials: list[TrialPublic] = Field(description="the best trial, or the Pareto front for several objectives")


class SpaceSummary(BaseModel):
    name: str
    family: str
    task: str
    description: str = ""
    trials: int
    objectives: list[str]
    size: str


class SpacesPublic(BaseModel):
    data: list[SpaceSummary]
    count: int


class SpacePublic(SpaceSummary):
    yaml: str


class SpaceValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(max_length=100_000)
    overrides: dict[str, Any] = Field(default_factory=dict)


class SpaceErrorItem(BaseModel):
    path: str
    message: str


class ValidationResult(BaseModel):
    valid: bool
    errors: list[SpaceErrorItem] = Field(default_factory=list)
    summary: SpaceSummary | None = None


class ErrorBody(BaseModel):
    detail: str | list[Any]
    errors: list[SpaceErrorItem] | None = None


class ValidationErrorBody(BaseModel):
    """Every 422: a one-line summary, then each problem with its path (body.overrides, query.limit, ...)."""

    detail: str
    errors: list[SpaceErrorItem]


# `responses=` shared by routes: every route behind a bearer token, every route that reads a body.
AUTH_REQUIRED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no bearer token, or one that is unknown or revoked"}
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body could not be read at all (e.g. it is not UTF-8 text)"},
    413: {"model": ErrorBody, "description": "the body is over this service's limit (NAS_MAX_BODY_BYTES)"},
}


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    ray: str
    runners: int
