"""Objectives a space may optimise, with their directions. Every trial reports all of them."""

OBJECTIVES: dict[str, str] = {
    "val_loss": "minimize",
    "params": "minimize",
    "non_embedding_params": "minimize",
    "flops": "minimize",
    "latency_ms": "minimize",
    "peak_memory_mb": "minimize",
    "throughput": "maximize",
    "knn_accuracy": "maximize",
}
