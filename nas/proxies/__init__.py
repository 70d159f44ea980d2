"""Self-supervised proxy tasks, built from small parts: losses, heads, masking and augmentation each in their own
module, composed by the short training loop in ``loop.py``. A task's class is found by name (``get_proxy``)."""

from nas.proxies.registry import TASKS, get_proxy

__all__ = ["TASKS", "get_proxy"]
