"""The Ray cluster a study runs on: join ``RAY_ADDRESS`` (or start a local Ray on loopback), and check before the
first trial that some node can hold one, so a study that asks for what the cluster lacks fails at once with the
reason instead of waiting in Tune's queue forever."""

from __future__ import annotations

import logging
import os
import socket
import time

from nas.errors import UserError
from nas.settings import ray_address

# On a cluster whose autoscaler adds nodes on demand, a trial nobody can hold yet is expected to wait.
WAIT_FOR_RESOURCES_ENV = "NAS_WAIT_FOR_RESOURCES"


class RayUnreachable(UserError, ConnectionError):
    pass


class TrialDoesNotFit(UserError, RuntimeError):
    """No live node of the cluster has the CPUs and GPUs one trial asks for."""


def gcs_unreachable(address: str) -> str | None:
    """Why a TCP connection to the Ray cluster at ``address`` (host:port, ``ray://`` allowed) fails; None if it opens."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=1.0):
            return None
    except (OSError, ValueError) as error:
        return str(error)


def _wait_for_cluster(address: str, wait_s: float) -> None:
    """``ray.init`` retries an unreachable address for minutes with nothing but C++ warnings; wait a bounded time
    (a head may still be starting) and then say which address failed."""
    if address in ("auto", "local"):
        return
    deadline = time.monotonic() + wait_s
    while (error := gcs_unreachable(address)) is not None:
        if time.monotonic() >= deadline:
            raise RayUnreachable(
                f"cannot reach the Ray cluster at RAY_ADDRESS={address} within {wait_s:.0f} s: {error}"
            )
        time.sleep(1.0)


def ensure_ray(num_cpus: int | None = None, wait_s: float = 30.0) -> None:
    """Join ``RAY_ADDRESS`` when set (waiting up to ``wait_s`` for it), else start a local Ray on loopback
    (unless one is already up)."""
    import ray

    if ray.is_initialized():
        return
    address = ray_address()
    if address:
        _wait_for_cluster(address, wait_s)
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            _node_ip_address="127.0.0.1",
        )


def check_trial_fits(cpu: float, gpu: float) -> None:
    """TrialDoesNotFit unless a live node has ``cpu`` CPUs and ``gpu`` GPUs (``resources_per_trial``) in all; not
    checked where ``NAS_WAIT_FOR_RESOURCES`` is set (an autoscaler will add the node)."""
    import ray

    if os.environ.get(WAIT_FOR_RESOURCES_ENV):
        return
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    sizes = [(node.get("CPU", 0.0), node.get("GPU", 0.0)) for node in nodes]
    if any(cpus >= cpu and gpus >= gpu for cpus, gpus in sizes):
        return
    have = "; ".join(f"{cpus:g} CPU and {gpus:g} GPU" for cpus, gpus in sizes) or "no live node"
    if gpu > 0 and not any(gpus > 0 for _, gpus in sizes):
        reason = f"resources_per_trial.gpu is {gpu:g}, but the Ray cluster has no GPU (its nodes: {have})"
    else:
        reason = f"resources_per_trial asks {cpu:g} CPU and {gpu:g} GPU, more than any node has (its nodes: {have})"
    raise TrialDoesNotFit(
        f"no trial could start: {reason}. Ask for less, join a cluster that has it (RAY_ADDRESS), or set "
        f"{WAIT_FOR_RESOURCES_ENV}=1 where an autoscaler adds such nodes"
    )
