"""Models: the skeleton GCN of docs/methods.md#the-gcn."""

from gcnprune_jax.models.gcn import (
    GCN,
    GCNConfig,
    build_gcn,
    count_prunable,
    is_prunable,
    path_name,
    prunable_parameters,
)

__all__ = [
    "GCN",
    "GCNConfig",
    "build_gcn",
    "count_prunable",
    "is_prunable",
    "path_name",
    "prunable_parameters",
]
