"""Objectives a space may optimise, with their directions. Every trial reports all of them."""

OBJECTIVES: dict[str, str] = {
    "val_loss": "minimize",
    "predicted_loss": "minimize",  # needs proxy.predict; the fitted learning curve at the reference length
    "params": "minimize",
    "non_embedding_params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
    "peak_memory_mb": "minimize",
    "throughput": "maximize",
    "knn_accuracy": "maximize",
}

# Objectives that are a proxy loss: what early-stopping schedulers compare and what `nas audit` checks.
LOSS_OBJECTIVES = ("val_loss", "predicted_loss")
