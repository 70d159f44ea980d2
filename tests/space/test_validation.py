"""Every bad space is rejected before any training, with the YAML path of what is wrong."""

from __future__ import annotations

import pytest
import yaml

from nas.space import SpaceError, load_space
from tests.conftest import SPACES

BASE = (SPACES / "text-mlm-tiny.yaml").read_text()


def with_changes(**changes) -> str:
    raw = yaml.safe_load(BASE)
    for dotted, value in changes.items():
        node = raw
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return yaml.safe_dump(raw)


DELETE = object()


def errors_of(text: str) -> dict[str, str]:
    with pytest.raises(SpaceError) as info:
        load_space(text)
    return dict(info.value.errors)


def test_shipped_spaces_are_valid():
    for path in sorted(SPACES.glob("*.yaml")):
        space = load_space(path)
        assert space.name == path.stem


@pytest.mark.parametrize(
    ("changes", "path", "fragment"),
    [
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"proxy__stepz": 3}, "proxy.stepz", "unknown key"),
        ({"architecture__depthh": 3}, "architecture.depthh", "unknown key for family"),
        ({"family": "rnn"}, "family", "unknown family 'rnn'"),
        ({"task": "jigsaw"}, "task", "unknown task 'jigsaw'"),
        ({"task": "mae"}, "task", "supports mlm"),
        ({"architecture__hidden_size": {"choice": []}}, "architecture.hidden_size.choice", "non-empty"),
        ({"architecture__num_layers": {"int": [6, 2]}}, "architecture.num_layers.int", "greater than high"),
        ({"hyperparameters__lr": {"float": [0.1, 0.01]}}, "hyperparameters.lr.float", "greater than high"),
        ({"hyperparameters__lr": {"float": [0, 0.01], "log": True}}, "hyperparameters.lr.float", "log range"),
        ({"architecture__activation": {"choice": ["gelu", "tanhh"]}}, "architecture.activation", "not one of"),
        ({"constraints": ["params <= "]}, "constraints[0]", "cannot parse"),
        ({"constraints": ["__import__('os').system('true')"]}, "constraints[0]", "only these functions"),
        ({"constraints": ["hidden_size.real > 2"]}, "constraints[0]", "Attribute is not allowed"),
        ({"constraints": ["[x for x in (1,)]"]}, "constraints[0]", "not allowed"),
        ({"constraints": ["2 ** 100000 > params"]}, "constraints[0]", None),
        ({"constraints": ["widht > 3"]}, "constraints[0]", "unknown name 'widht'"),
        (
            {"architecture__hidden_size": 64, "architecture__num_heads": 6, "architecture__block": "bert"},
            "architecture.num_heads",
            "does not divide",
        ),
        ({"constraints": ["hidden_size % num_heads == 0", "params <= 10"]}, "constraints[1]", None),
        ({"objectives": ["val_loss", "accuracy"]}, "objectives[1]", "unknown objective"),
        ({"search__sampler": "cmaes"}, "search.sampler", "unknown sampler"),
        ({"search__trials": 0}, "search.trials", "must lie in"),
        ({"search__trials": "many"}, "search.trials", "expected int"),
        ({"resources_per_trial__gpu": 1.5}, "resources_per_trial.gpu", "whole number"),
        ({"data__source": "builtin:imagenet"}, "data.source", "unknown built-in"),
        ({"data__source": "/no/such/corpus/*.txt"}, "data.source", "no file or folder"),
        ({"data__source": "builtin:digits"}, "data.source", "needs text data"),
        ({"name": DELETE}, "name", "required"),
        ({"architecture": DELETE}, "architecture", "required"),
        ({"proxy__eval_every": 500}, "proxy.eval_every", "larger than proxy.steps"),
        ({"search__prescreen": {"score": "synflow"}}, "search.prescreen.score", "unknown score 'synflow'"),
        ({"search__prescreen": {"keep": 1.0}}, "search.prescreen.keep", "must lie in (0, 1)"),
        ({"search__prescreen": {"pool": 1}}, "search.prescreen.pool", "must lie in [2, 100000]"),
        ({"search__prescreen": {"pools": 8}}, "search.prescreen.pools", "unknown key"),
        ({"search__warm_start": {"study": "a"}}, "search.warm_start", "expected a list of strings"),
        ({"search__warm_start": ["a", 3]}, "search.warm_start", "expected a list of strings"),
        ({"search__warm_start": ["a", "a"]}, "search.warm_start", "names a study twice"),
        ({"proxy__steps": 10**12}, "proxy.steps", "1,000,000,000,000 is over the largest allowed, 1,000,000"),
        ({"data__seq_len": 10**9}, "data.seq_len", "over the largest allowed"),
        ({"proxy__batch_size": 10**9}, "proxy.batch_size", "over the largest allowed"),
        ({"data__max_samples": 10**12}, "data.max_samples", "over the largest allowed"),
        ({"proxy__lr": 1e308}, "proxy.lr", "over the largest allowed"),
        ({"resources_per_trial__cpu": 1e12}, "resources_per_trial.cpu", "over the largest allowed"),
    ],
)
def test_bad_space__is_rejected_with_its_yaml_path(changes, path, fragment):
    errors = errors_of(with_changes(**changes))
    assert path in errors, errors
    if fragment:
        assert fragment in errors[path]


def test_every_error_is_reported_not_only_the_first():
    errors = errors_of(with_changes(family="rnn", search__trials=0, proxy__stepz=1))
    assert {"family", "search.trials", "proxy.stepz"} <= errors.keys()


def test_unsatisfiable_constraints__are_rejected_naming_the_rule():
    errors = errors_of(with_changes(constraints=["params <= 1000"]))
    assert "constraints[0]" in errors
    assert "no sample among" in errors["constraints[0]"] and "params <= 1000" in errors["constraints[0]"]


def test_non_yaml_input__is_rejected_with_line_and_column():
    errors = errors_of("name: x\narchitecture: [1, 2\n")
    assert "line" in errors["<yaml>"] and "not valid YAML" in errors["<yaml>"]


def test_yaml_that_is_not_a_mapping__is_rejected():
    assert "<root>" in errors_of("- just\n- a list\n")


def test_missing_file__is_a_space_error(tmp_path):
    with pytest.raises(SpaceError, match="no such file"):
        load_space(tmp_path / "nope.yaml")


def test_searching_the_contrastive_method__is_rejected_while_ranking_by_val_loss():
    text = (SPACES / "cnn-contrastive-tiny.yaml").read_text()
    with pytest.raises(SpaceError) as info:
        load_space(text, ["architecture.method={choice: [simclr, simsiam]}"])
    assert "architecture.method" in dict(info.value.errors)
    space = load_space(
        text, ["architecture.method={choice: [simclr, simsiam]}", "objectives=[knn_accuracy]", "search.scheduler=none"]
    )
    assert space.objectives == ("knn_accuracy",)


def test_overrides__set_nested_values_and_report_bad_ones():
    space = load_space(BASE, ["search.trials=3", "architecture.num_layers={int: [1, 2]}", "proxy.steps=40"])
    assert space.search.trials == 3 and space.proxy.steps == 40
    with pytest.raises(SpaceError) as info:
        load_space(BASE, ["search.trials.x=3"])
    assert "search.trials" in dict(info.value.errors)
    with pytest.raises(SpaceError):
        load_space(BASE, ["no-equals-sign"])


def test_hyperparameter_written_as_yaml_text__is_rejected_with_a_hint():
    errors = errors_of(with_changes(hyperparameters__lr={"choice": [1e-3, "1e-4"]}))
    assert "write 1.0e-3" in errors["hyperparameters.lr"]
    errors = errors_of(with_changes(hyperparameters__momentum=0.9))
    assert "unknown key" in errors["hyperparameters.momentum"]


def test_proxy_levers__unknown_values_and_a_predicted_loss_without_a_predictor_are_rejected():
    errors = errors_of(
        with_changes(proxy={"schedule": "linear", "lr_scaling": "depth", "predict": "spline", "predict_factor": 0.5})
    )
    assert "cosine, constant" in errors["proxy.schedule"] and "none, width" in errors["proxy.lr_scaling"]
    assert "power_law" in errors["proxy.predict"] and "at least 1" in errors["proxy.predict_factor"]
    errors = errors_of(with_changes(objectives=["predicted_loss"], proxy={"predict": "none"}))
    assert "proxy.predict: power_law" in errors["objectives"]
    errors = errors_of(with_changes(objectives=["params", "val_loss"]))
    assert "val_loss, predicted_loss" in errors["objectives"]  # ASHA needs a loss first


def test_hostile_yaml__too_deep_too_large_or_with_aliases_is_a_clear_error_not_a_crash(tmp_path):
    deep = BASE + "\nextra: " + "[" * 5000 + "]" * 5000 + "\n"
    assert "nested deeper than 32 levels" in errors_of(deep)["<yaml>"]
    assert "aliases (*name) are not allowed" in errors_of(BASE + "\nx: &a [1]\ny: *a\n")["<yaml>"]
    large = BASE + "\n# " + "x" * (1 << 20) + "\n"
    assert "over the 1,048,576 a space may have" in errors_of(large)["<yaml>"]
    (tmp_path / "large.yaml").write_text(large)
    with pytest.raises(SpaceError, match="over the 1,048,576"):
        load_space(tmp_path / "large.yaml")
    (tmp_path / "latin1.yaml").write_bytes(BASE.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpaceError, match=r"cannot read .*utf-8"):
        load_space(tmp_path / "latin1.yaml")


def test_a_float_written_1e_3__is_the_number_a_person_means():
    """PyYAML (YAML 1.1) reads 1e-3 as a string; the space takes it as the float."""
    assert load_space(with_changes(proxy__lr="1e-3")).proxy.lr == 0.001
    assert load_space(SPACES / "text-mlm-tiny.yaml", ["proxy.lr=2.5E-4"]).proxy.lr == 0.00025
    assert "expected float" in errors_of(with_changes(proxy__lr="1e-3x"))["proxy.lr"]
