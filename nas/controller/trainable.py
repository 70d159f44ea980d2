"""The Ray Tune function that runs on a worker: the candidate from its JSON record, trained on the space the
driver validated (it arrives pickled through Ray's object store; the worker never parses YAML again)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.space.spec import Candidate

if TYPE_CHECKING:
    from nas.space.spec import SearchSpace


def train_candidate(config: dict[str, Any], space: SearchSpace, data: Any) -> None:
    from ray import tune

    from nas.proxies.loop import run_proxy

    candidate = Candidate.from_json(config["candidate"])

    def report(metrics: dict[str, Any], model: Any = None) -> None:
        if model is None:
            tune.report(metrics)
            return
        # The last report carries the proxy-trained weights as a Tune checkpoint (what `nas export` loads).
        import tempfile

        from nas.models.weights import save_weights

        with tempfile.TemporaryDirectory() as folder:
            save_weights(model, folder)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    # One seed for every trial of a study: the same batch order, so differences come from the architecture.
    run_proxy(space, candidate, data, report=report, seed=space.search.seed)
