"""Proxy fidelity: does the short proxy rank architectures the way longer training does?"""

from nas.audit.stats import kendall_tau, spearman, top_k_overlap

__all__ = ["kendall_tau", "spearman", "top_k_overlap"]
