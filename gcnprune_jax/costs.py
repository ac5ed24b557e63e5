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

from numpy.typing import ArrayLike

from gcnprune_jax import chain
from gcnprune_jax.models.gcn import GCNConfig, gcn_chain
from gcnprune_jax.topology import check_gcn_masks


def _chain(cfg: GCNConfig, n_nodes: int, n_features: int, n_classes: int) -> chain.Chain:
    return gcn_chain(cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes)


def dense_flops(cfg: GCNConfig, *, n_nodes: int, n_features: int, n_classes: int) -> int:
    """FLOPs of one dense forward pass for one sample (`chain.dense_flops` of the GCN's chain):
    per block 2·(2 V s d H) for X Q_h and X K_h, 2 V² d H for the logits, 2 V s C H for X W_h,
    2 V² C H for A_h (X W_h); 2 I O per FC/classifier kernel."""
    return chain.dense_flops(_chain(cfg, n_nodes, n_features, n_classes))


def flops_unstructured(
    masks: Mapping[str, ArrayLike],
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int,
    n_classes: int,
) -> int:
    """FLOPs of one forward pass for one sample when only kept entries are multiplied
    (`chain.flops_unstructured` of the GCN's chain).

    masks: {path: bool array of the parameter's shape}, the keys of
      `models.gcn.prunable_parameters` (query/key/conv (H, s, ·), kernels (I, O)).
    Weight products: 2 * V * nnz for each block tensor (query, key, conv, applied at V nodes),
    2 * nnz for each FC/classifier kernel. Activation-activation products stay dense over the
    dims that carry anything: per head, (X Q_h)(X K_h)^T costs 2 * V² * (#dims j whose query
    and key columns both have a kept entry) and A_h (X W_h) costs 2 * V² * (#conv columns with
    a kept entry).
    """
    m = check_gcn_masks(masks, cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes)
    return chain.flops_unstructured(_chain(cfg, n_nodes, n_features, n_classes), m)


def flops_structured(
    masks: Mapping[str, ArrayLike],
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int,
    n_classes: int,
) -> int:
    """Dense FLOPs of one forward pass for one sample of the compacted network
    (`chain.flops_structured` of the GCN's chain).

    masks: as in `flops_unstructured`. Everything that lies on no input→output path
    (`topology.gcn_live`) is removed first. Then, per block and head h, with n_c(h) the conv
    columns and n_r(h) the conv rows holding a live entry: 2 V n_r n_c + 2 V² n_c; if the model
    has query/key tensors and the head has n_d(h) > 0 live attention dims (a live query and a
    live key entry each), with rows_q(h), rows_k(h) the query/key rows holding a live entry:
    2 V rows_q n_d + 2 V rows_k n_d + 2 V² n_d. Each FC/classifier kernel costs
    2 * (#rows with a live entry) * (#columns with a live entry).
    """
    m = check_gcn_masks(masks, cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes)
    return chain.flops_structured(_chain(cfg, n_nodes, n_features, n_classes), m)
