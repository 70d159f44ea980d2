"""A study's figures, each as a PNG (matplotlib) and as interactive HTML (plotly, through optuna.visualization).

One list of kinds serves ``nas studies show --plots DIR`` and ``GET /api/v1/studies/{id}/plots/{kind}``:

- ``history``: the first objective per trial, with the best so far;
- ``pareto``: the Pareto front of a multi-objective study;
- ``importances``: how much each searched parameter mattered to the first objective (fANOVA, seeded);
- ``loss_vs_params`` and ``loss_vs_flops``: the first objective against model size and compute;
- ``audit``: the proxy score against the long-run loss of the study's latest finished audit.

A kind that does not apply (a Pareto front of one objective, importances of one trial) raises PlotUnavailable
with the reason. Drawing goes through pyplot, which is not thread-safe, so one lock serialises it (the API
draws in worker threads).
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.errors import UserError
from nas.store.trials import DUPLICATE_OF, FLOPS, PARAMS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PlotKind = Literal["history", "pareto", "importances", "loss_vs_params", "loss_vs_flops", "audit"]
PLOT_KINDS: tuple[str, ...] = get_args(PlotKind)
_DRAWING = threading.Lock()


class PlotUnavailable(UserError, ValueError):
    """This kind of plot cannot be drawn for this study (yet); the message says why."""


def write_plots(study: optuna.Study, out: Path, audit: dict[str, Any] | None = None) -> list[Path]:
    """Every kind that applies to the study, as ``KIND.png`` and ``KIND.html`` in ``out`` (the HTML files share
    one ``plotly.min.js`` beside them, so they open offline)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in PLOT_KINDS:
        try:
            png = render_png(kind, study, audit)
            figure = _plotly(kind, study, audit)
        except PlotUnavailable:
            continue
        (out / f"{kind}.png").write_bytes(png)
        figure.write_html(out / f"{kind}.html", include_plotlyjs="directory", full_html=True)
        written += [out / f"{kind}.png", out / f"{kind}.html"]
    return written


def render_png(kind: str, study: optuna.Study | None, audit: dict[str, Any] | None = None) -> bytes:
    """One figure as PNG bytes (``study`` may be None for the audit scatter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with _DRAWING, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        figure = _matplotlib(kind, study, audit)
        try:
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
            return buffer.getvalue()
        finally:
            plt.close(figure)


def render_html(kind: str, study: optuna.Study | None, audit: dict[str, Any] | None = None) -> str:
    """One figure as a self-contained interactive HTML page."""
    return cast(str, _plotly(kind, study, audit).to_html(include_plotlyjs=True, full_html=True))


def write_audit_plot(report: dict[str, Any], path: Path) -> Path:
    """The audit scatter alone (``nas audit --plots``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_png("audit", None, report))
    return path


# --- the figures ---------------------------------------------------------------------------------------------


def _objective(study: optuna.Study) -> tuple[str, Any]:
    """The first objective's name and, for a multi-objective study, the target that picks it."""
    name = (study.user_attrs.get("objectives") or ["val_loss"])[0]
    return name, (lambda t: t.values[0]) if len(study.directions) > 1 else None


def _trained(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials that trained (a duplicate repeats its original's point)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in trials if DUPLICATE_OF not in t.user_attrs]
    if not complete:
        raise PlotUnavailable(f"study {study.study_name!r} has no finished trials to plot yet")
    return complete


def _check(kind: str, study: optuna.Study | None, audit: dict[str, Any] | None) -> None:
    if kind not in PLOT_KINDS:
        raise PlotUnavailable(f"unknown plot {kind!r}; known: {', '.join(PLOT_KINDS)}")
    if kind == "audit":
        if audit is None or not audit.get("finished"):
            raise PlotUnavailable("the study has no finished audit; `nas audit` or POST .../audit runs one")
        return
    if study is None:
        raise PlotUnavailable(f"the {kind} plot needs a study")
    complete = _trained(study)
    if kind == "pareto" and len(study.directions) < 2:
        raise PlotUnavailable(f"study {study.study_name!r} has one objective: it has no Pareto front")
    if kind == "importances":
        varied = {name for name in complete[0].params if len({repr(t.params.get(name)) for t in complete}) > 1}
        if len(complete) < 2 or not varied:
            raise PlotUnavailable("parameter importances need two finished trials that differ in a parameter")


def _importances(study: optuna.Study, module: Any) -> Any:
    from optuna.importance import FanovaImportanceEvaluator

    name, target = _objective(study)
    return module.plot_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0), target=target, target_name=name
    )


def _matplotlib(kind: str, study: optuna.Study | None, audit: dict[str, Any] | None) -> Figure:
    from optuna.visualization import matplotlib as optuna_plots

    _check(kind, study, audit)
    if kind == "audit":
        return _audit_figure(cast(dict[str, Any], audit))
    assert study is not None  # _check: every kind but the audit needs the study
    name, target = _objective(study)
    if kind == "history":
        axes = optuna_plots.plot_optimization_history(study, target=target, target_name=name)
    elif kind == "pareto":
        axes = optuna_plots.plot_pareto_front(study, target_names=study.user_attrs.get("objectives"))
    elif kind == "importances":
        axes = _importances(study, optuna_plots)
    else:
        return _size_figure(study, PARAMS if kind == "loss_vs_params" else FLOPS)
    return cast("Figure", axes.figure)  # Optuna draws on a top-level figure, never a SubFigure


def _plotly(kind: str, study: optuna.Study | None, audit: dict[str, Any] | None) -> Any:
    import plotly.graph_objects as go
    from optuna import visualization

    _check(kind, study, audit)
    if kind == "audit":
        report = cast(dict[str, Any], audit)
        figure = go.Figure()
        for selected in ("top", "random"):
            rows = [r for r in report["trials"] if r["selected_as"] == selected]
            figure.add_scatter(
                x=[r["proxy"] for r in rows],
                y=[r["long_run"] for r in rows],
                mode="markers",
                name=f"{selected} trials",
                text=[f"trial #{r['parent_trial']}" for r in rows],
            )
        return figure.update_layout(
            title=_audit_title(report), xaxis_title="proxy score", yaxis_title=_audit_y_label(report)
        )
    assert study is not None  # _check: every kind but the audit needs the study
    name, target = _objective(study)
    if kind == "history":
        return visualization.plot_optimization_history(study, target=target, target_name=name)
    if kind == "pareto":
        return visualization.plot_pareto_front(study, target_names=study.user_attrs.get("objectives"))
    if kind == "importances":
        return _importances(study, visualization)
    key = PARAMS if kind == "loss_vs_params" else FLOPS
    points = _size_points(study, key)
    figure = go.Figure(
        go.Scatter(
            x=[x for x, _, _ in points],
            y=[y for _, y, _ in points],
            mode="markers",
            text=[f"trial #{number}" for _, _, number in points],
        )
    )
    return figure.update_layout(
        title=_size_title(study, key), xaxis_title=_size_label(key), yaxis_title=name, xaxis_type="log"
    )


def _size_points(study: optuna.Study, key: str) -> list[tuple[float, float, int]]:
    points = [(t.user_attrs[key], t.values[0], t.number) for t in _trained(study) if t.user_attrs.get(key)]
    if not points:
        raise PlotUnavailable(f"no finished trial of {study.study_name!r} records {key}")
    return points


def _size_label(key: str) -> str:
    return "parameters" if key == PARAMS else "forward FLOPs per sample"


def _size_title(study: optuna.Study, key: str) -> str:
    return f"{study.study_name}: loss against {'size' if key == PARAMS else 'compute'}"


def _size_figure(study: optuna.Study, key: str) -> Figure:
    import matplotlib.pyplot as plt

    points = _size_points(study, key)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter([x for x, _, _ in points], [y for _, y, _ in points])
    axis.set_xscale("log")
    axis.set_xlabel(_size_label(key))
    axis.set_ylabel(_objective(study)[0])
    axis.set_title(_size_title(study, key))
    return figure


def _audit_title(report: dict[str, Any]) -> str:
    tau = report["proxy"]["kendall_tau"]
    return f"audit of {report['parent']}: Kendall tau {'-' if tau is None else f'{tau:.2f}'}"


def _audit_y_label(report: dict[str, Any]) -> str:
    return f"val_loss after {report['factor']:g}x longer training"


def _audit_figure(report: dict[str, Any]) -> Figure:
    """Proxy score against long-run loss, one point per audited architecture (top and random marked apart)."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for selected, marker in (("top", "o"), ("random", "s")):
        rows = [r for r in report["trials"] if r["selected_as"] == selected]
        axis.scatter(
            [r["proxy"] for r in rows], [r["long_run"] for r in rows], marker=marker, label=f"{selected} trials"
        )
        for r in rows:
            axis.annotate(
                f"#{r['parent_trial']}",
                (r["proxy"], r["long_run"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    axis.set_xlabel("proxy score (the study's objective)")
    axis.set_ylabel(_audit_y_label(report))
    axis.set_title(_audit_title(report))
    axis.legend()
    return figure
