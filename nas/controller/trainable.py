"""The Ray Tune function that runs on a worker: rebuild the space and candidate from plain data, train."""

from __future__ import annotations

from typing import Any


def train_candidate(config: dict[str, Any], space_raw: dict[str, Any], data: Any) -> None:
    from ray import tune

    from nas.models.base import ParamCount
    from nas.proxies.loop import run_proxy
    from nas.space.spec import Candidate, parse_space

    space = parse_space(space_raw, check_data=False, check_satisfiable=False)
    spec = config["candidate"]
    candidate = Candidate(spec["architecture"], spec["hyperparameters"],
                          ParamCount(spec["params"], spec["non_embedding_params"]))

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
