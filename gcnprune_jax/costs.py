"""Forward-pass cost of the GCN (SPEC §8), counted analytically per sample.

FLOPs count 2 per multiply-add of every matrix product the forward pass performs, in the
order `models/gcn.py` computes them; softmax, relu, bias additions and the adjacency bias are
elementwise and left out (they are O(V² H) and O(V H C), negligible next to the products).
"""

from __future__ import annotations

from gcnprune_jax.models.gcn import GCNConfig


def dense_flops(cfg: GCNConfig, *, n_nodes: int, n_features: int, n_classes: int) -> int:
    """FLOPs of one dense forward pass for one sample."""
    v, h, d = n_nodes, cfg.heads, cfg.attention_dim
    total = 0
    width = n_features
    for filters in cfg.filters:
        if cfg.attention != "adjacency":
            total += 2 * (2 * v * width * d * h)  # X Q_h and X K_h
            total += 2 * v * v * d * h  # (X Q_h)(X K_h)^T
        total += 2 * v * width * filters * h  # X W_h
        total += 2 * v * v * filters * h  # A_h (X W_h)
        width = h * filters
    width *= n_nodes
    for hidden in (*cfg.fc, n_classes):
        total += 2 * width * hidden
        width = hidden
    return total
