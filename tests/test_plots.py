"""nas.plots on planted studies: every kind that applies is drawn as PNG and HTML, the others say why not."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nas.plots import PLOT_KINDS, PlotUnavailable, render_html, render_png, write_plots

DISTRIBUTIONS = {"num_layers": IntDistribution(1, 4), "hidden_size": CategoricalDistribution([32, 64])}


def planted(directions: list[str], objectives: list[str]) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=directions, study_name="planted")
    study.set_user_attr("objectives", objectives)
    for layers, hidden in [(1, 32), (2, 32), (3, 64), (4, 64), (2, 64)]:
        params = layers * hidden * 10_000
        values = [3.0 - 0.3 * layers - hidden / 200, params][: len(directions)]
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=values,
                params={"num_layers": layers, "hidden_size": hidden},
                distributions=DISTRIBUTIONS,
                user_attrs={"params": params, "flops": 40 * params, "val_loss": values[0]},
            )
        )
    study.add_trial(
        create_trial(state=TrialState.PRUNED, params={"num_layers": 1, "hidden_size": 32}, distributions=DISTRIBUTIONS)
    )
    return study


AUDIT = {
    "finished": True,
    "parent": "planted",
    "factor": 10.0,
    "proxy": {"kendall_tau": 0.6},
    "trials": [
        {"selected_as": "top", "proxy": 2.0, "long_run": 1.5, "parent_trial": 3},
        {"selected_as": "random", "proxy": 2.5, "long_run": 1.9, "parent_trial": 1},
    ],
}


def test_write_plots__single_objective_writes_every_kind_but_the_pareto_front(tmp_path):
    written = write_plots(planted(["minimize"], ["val_loss"]), tmp_path, AUDIT)
    kinds = {path.stem for path in written}
    assert kinds == set(PLOT_KINDS) - {"pareto"}
    for kind in kinds:
        assert (tmp_path / f"{kind}.png").read_bytes().startswith(b"\x89PNG")
        html = (tmp_path / f"{kind}.html").read_text()
        assert "plotly.min.js" in html and "<html>" in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 100_000  # the HTML pages open offline


def test_write_plots__multi_objective_draws_the_pareto_front(tmp_path):
    study = planted(["minimize", "minimize"], ["val_loss", "params"])
    written = {path.name for path in write_plots(study, tmp_path)}
    assert {"pareto.png", "pareto.html", "history.png", "importances.png"} <= written
    assert "audit.png" not in written  # no audit given
    assert "Pareto" in render_html("pareto", study)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("pareto", "one objective"), ("audit", "no finished audit"), ("nope", "unknown plot 'nope'")],
)
def test_render__a_kind_that_does_not_apply_says_why(kind, reason):
    with pytest.raises(PlotUnavailable, match=reason):
        render_png(kind, planted(["minimize"], ["val_loss"]))


def test_render__nothing_finished_yet_and_too_little_for_importances():
    study = optuna.create_study(study_name="empty")
    with pytest.raises(PlotUnavailable, match="no finished trials"):
        render_png("history", study)
    study.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=1.0,
            params={"num_layers": 1},
            distributions={"num_layers": DISTRIBUTIONS["num_layers"]},
        )
    )
    assert render_png("history", study).startswith(b"\x89PNG")
    with pytest.raises(PlotUnavailable, match="two finished trials"):
        render_png("importances", study)
    with pytest.raises(PlotUnavailable, match="records flops"):
        render_png("loss_vs_flops", study)
