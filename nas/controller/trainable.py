"""The Ray Tune function that runs on a worker: the candidate from its JSON record, trained on the space the
driver validated (it arrives pickled through Ray's object store; the worker never parses YAML again)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from nas.space.spec import Candidate
from nas.store.trials import CUDA_VISIBLE_DEVICES, DEVICE, NODE_ID

if TYPE_CHECKING:
    from nas.space.spec import SearchSpace

log = logging.getLogger(__name__)


def train_candidate(config: dict[str, Any], space: SearchSpace, data: Any) -> None:
    from ray import tune

    from nas.proxies.loop import run_proxy

    candidate = Candidate.from_json(config["candidate"])
    where = placement()

    def report(metrics: dict[str, Any], model: Any = None) -> None:
        metrics = {**metrics, **where}
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


def placement() -> dict[str, str]:
    """Where the trial runs, stored with its figures: the Ray node, the GPUs Ray gave it (``CUDA_VISIBLE_DEVICES``)
    and the device torch trains on. A trial given a GPU that torch cannot see trains on the CPU, with a warning."""
    import ray

    from nas.proxies.loop import pick_device

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    device = pick_device().type
    if ray.get_gpu_ids() and device != "cuda":
        log.warning("the trial was given GPU %s but torch sees no CUDA device; it trains on the CPU", gpus)
    return {NODE_ID: ray.get_runtime_context().get_node_id(), CUDA_VISIBLE_DEVICES: gpus, DEVICE: device}
