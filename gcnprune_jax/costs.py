"""Forward-pass cost of the GCN (docs/methods.md#costs-and-compaction), counted analytically per
sample.

FLOPs count 2 per multiply-add of every matrix product the forward pass performs, in the
order `models/gcn.py` computes them; softmax, relu, bias additions and the adjacency bias are
elementwise and left out (they are O(V² H) and O(V H C), negligible next to the products).

Three counts (docs/methods.md#costs-and-compaction), all per sample:
- `dense_flops`: the unpruned network;
- `flops_unstructured`: weight products count only kept entries; activation-activation products
  (attention logits, A_h (X W_h)) count dense over the dims that still carry anything;
- `flops_structured`: the dense FLOPs of the compacted network, after physically removing
  everything that lies on no input→output path (`topology.gcn_live`).
All three agree for all-ones masks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from gcnprune_jax.models.gcn import GCNConfig
from gcnprune_jax.topology import check_gcn_masks, gcn_live


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


def _kernel_names(cfg: GCNConfig) -> list[str]:
    return [f"fc{i}/kernel" for i in range(len(cfg.fc))] + ["classifier/kernel"]


def flops_unstructured(
    masks: Mapping[str, ArrayLike],
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int,
    n_classes: int,
) -> int:
    """FLOPs of one forward pass for one sample when only kept entries are multiplied.

    masks: {path: bool array of the parameter's shape}, the keys of
      `models.gcn.prunable_parameters` (query/key/conv (H, s, ·), kernels (I, O)).
    Weight products: 2 * V * nnz for each block tensor (query, key, conv, applied at V nodes),
    2 * nnz for each FC/classifier kernel. Activation-activation products stay dense over the
    dims that carry anything: per head, (X Q_h)(X K_h)^T costs 2 * V² * (#dims j whose query
    and key columns both have a kept entry) and A_h (X W_h) costs 2 * V² * (#conv columns with
    a kept entry).
    """
    m = check_gcn_masks(masks, cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes)
    v = n_nodes
    total = 0
    for b in range(len(cfg.filters)):
        conv = m[f"block{b}/conv"]  # (H, s, C)
        if cfg.attention != "adjacency":
            query, key = m[f"block{b}/query"], m[f"block{b}/key"]  # (H, s, d)
            total += 2 * v * (int(query.sum()) + int(key.sum()))
            dims = query.any(axis=1) & key.any(axis=1)  # (H, d)
            total += 2 * v * v * int(dims.sum())
        total += 2 * v * int(conv.sum())
        total += 2 * v * v * int(conv.any(axis=1).sum())
    for name in _kernel_names(cfg):
        total += 2 * int(m[name].sum())
    return total


def flops_structured(
    masks: Mapping[str, ArrayLike],
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int,
    n_classes: int,
) -> int:
    """Dense FLOPs of one forward pass for one sample of the compacted network.

    masks: as in `flops_unstructured`. Everything that lies on no input→output path
    (`topology.gcn_live`) is removed first. Then, per block and head h, with n_c(h) the conv
    columns and n_r(h) the conv rows holding a live entry: 2 V n_r n_c + 2 V² n_c; if the model
    has query/key tensors and the head has n_d(h) > 0 live attention dims (a live query and a
    live key entry each), with rows_q(h), rows_k(h) the query/key rows holding a live entry:
    2 V rows_q n_d + 2 V rows_k n_d + 2 V² n_d. Each FC/classifier kernel costs
    2 * (#rows with a live entry) * (#columns with a live entry).
    """
    check_gcn_masks(masks, cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes)
    live = gcn_live(masks, cfg, n_nodes=n_nodes)
    v = n_nodes
    total = 0
    for b in range(len(cfg.filters)):
        conv = live[f"block{b}/conv"]  # (H, s, C)
        n_c = conv.any(axis=1).sum(axis=1)  # (H,)
        n_r = conv.any(axis=2).sum(axis=1)
        total += int(np.sum(2 * v * n_r * n_c + 2 * v * v * n_c))
        if cfg.attention != "adjacency":
            query, key = live[f"block{b}/query"], live[f"block{b}/key"]  # (H, s, d)
            n_d = (query.any(axis=1) & key.any(axis=1)).sum(axis=1)  # (H,)
            rows_q = query.any(axis=2).sum(axis=1)
            rows_k = key.any(axis=2).sum(axis=1)
            total += int(np.sum(2 * v * (rows_q + rows_k) * n_d + 2 * v * v * n_d))
    for name in _kernel_names(cfg):
        kernel = live[name]
        total += 2 * int(kernel.any(axis=1).sum()) * int(kernel.any(axis=0).sum())
    return total
