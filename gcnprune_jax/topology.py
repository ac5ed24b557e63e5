"""Topological consistency of crisp masks (SPEC §3): which kept entries lie on an input→output
path, and how many are dangling.

Everything here works on crisp boolean masks with numpy, at export time (never traced). Units
that are replicated over graph nodes (the GCN shares its block weights over nodes) are reduced
by "any" over the nodes, as the hard form of SPEC §3's max reduction.

- `consistent_masks`: a plain chain of bipartite layers, M_l of shape (d_l, d_{l+1}).
- `gcn_live`: the same "on some input→output path" predicate for every prunable tensor of the
  GCN of `models/gcn.py` (attention heads, per-head convolutions, flatten, FC layers).
- `dangling_connections`: the number of kept entries that are not live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from gcnprune_jax.models.gcn import GCNConfig


def consistent_masks(masks: Sequence[ArrayLike]) -> list[np.ndarray]:
    """Keep exactly the entries of a chain of masks that lie on some input→output path.

    masks: L masks, mask l of shape (d_l, d_{l+1}) mapping the d_l units of layer l to the
      d_{l+1} units of layer l+1 (nonzero = kept). Consecutive shapes must agree.
    Returns L boolean arrays of the same shapes: entry (i, o) of layer l is kept iff it is kept
    in `masks[l]`, unit i is accessible (acc_0 = 1, acc_{l+1}[o] = any_i acc_l[i] & M_l[i, o])
    and unit o is co-accessible (co_L = 1, co_l[i] = any_o M_l[i, o] & co_{l+1}[o]).
    """
    mats = [np.asarray(m).astype(bool) for m in masks]
    for layer, m in enumerate(mats):
        if m.ndim != 2:
            raise ValueError(f"mask of layer {layer} must be 2-D (d_in, d_out), got {m.shape}")
        if layer > 0 and mats[layer - 1].shape[1] != m.shape[0]:
            raise ValueError(
                f"mask of layer {layer} has {m.shape[0]} input units but layer {layer - 1} "
                f"has {mats[layer - 1].shape[1]} output units"
            )
    if not mats:
        return []
    acc = [np.ones(mats[0].shape[0], dtype=bool)]
    for m in mats:
        acc.append((acc[-1][:, None] & m).any(axis=0))
    co = [np.ones(mats[-1].shape[1], dtype=bool)]
    for m in reversed(mats):
        co.append((m & co[-1][None, :]).any(axis=1))
    co.reverse()  # co[l] is the co-accessibility of the units entering layer l
    return [m & acc[k][:, None] & co[k + 1][None, :] for k, m in enumerate(mats)]


def gcn_mask_shapes(
    cfg: GCNConfig, *, n_nodes: int, n_features: int, n_classes: int
) -> dict[str, tuple[int, ...]]:
    """{path: shape} of the GCN's prunable tensors, as `models.gcn.prunable_parameters` names
    them: `block{b}/query`, `block{b}/key` (H, s_b, d) unless attention is "adjacency",
    `block{b}/conv` (H, s_b, C_b), `fc{i}/kernel` (I, O) and `classifier/kernel` (I, n_classes).
    """
    h, d = cfg.heads, cfg.attention_dim
    shapes: dict[str, tuple[int, ...]] = {}
    width = n_features
    for b, filters in enumerate(cfg.filters):
        if cfg.attention != "adjacency":
            shapes[f"block{b}/query"] = (h, width, d)
            shapes[f"block{b}/key"] = (h, width, d)
        shapes[f"block{b}/conv"] = (h, width, filters)
        width = h * filters
    width *= n_nodes
    for i, hidden in enumerate(cfg.fc):
        shapes[f"fc{i}/kernel"] = (width, hidden)
        width = hidden
    shapes["classifier/kernel"] = (width, n_classes)
    return shapes


def check_gcn_masks(
    masks: Mapping[str, ArrayLike],
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int | None = None,
    n_classes: int | None = None,
) -> dict[str, np.ndarray]:
    """Validate a GCN mask dict against `cfg` and return it as boolean numpy arrays.

    n_features / n_classes default to the widths read off `block0/conv` and
    `classifier/kernel`. Raises ValueError on missing or unexpected keys or on any shape that
    disagrees with `gcn_mask_shapes`.
    """
    for name in ("block0/conv", "classifier/kernel"):
        if name not in masks:
            raise ValueError(f"GCN masks lack {name!r}; got keys {sorted(masks)}")
    out = {name: np.asarray(m).astype(bool) for name, m in masks.items()}
    conv0, classifier = out["block0/conv"], out["classifier/kernel"]
    if conv0.ndim != 3 or classifier.ndim != 2:
        raise ValueError(
            f"block0/conv must be (H, F, C) and classifier/kernel (I, n_classes), got "
            f"{conv0.shape} and {classifier.shape}"
        )
    expected = gcn_mask_shapes(
        cfg,
        n_nodes=n_nodes,
        n_features=conv0.shape[1] if n_features is None else n_features,
        n_classes=classifier.shape[1] if n_classes is None else n_classes,
    )
    missing = sorted(set(expected) - set(out))
    extra = sorted(set(out) - set(expected))
    if missing or extra:
        raise ValueError(
            f"GCN masks do not match the config: missing {missing}, unexpected {extra}"
        )
    for name, shape in expected.items():
        if out[name].shape != shape:
            raise ValueError(
                f"mask {name!r} has shape {out[name].shape}, the config implies {shape}"
            )
    return out


def gcn_live(
    masks: Mapping[str, ArrayLike], cfg: GCNConfig, *, n_nodes: int
) -> dict[str, np.ndarray]:
    """The kept entries of every GCN prunable tensor that lie on some input→output path.

    masks: {path: array of the parameter's shape} with exactly the keys of
      `models.gcn.prunable_parameters` (see `gcn_mask_shapes`); nonzero = kept.
    Returns {path: bool array of the same shape}, computed by hard boolean propagation with
    block units reduced over the n_nodes graph nodes:
      forward: acc_0 = 1 over the F features; conv output (h, c) is accessible iff it has a kept
        entry from an accessible input; attention dim j of head h is live iff both its query
        and its key column have a kept entry from an accessible input; the flattened layer
        replicates the last block's accessibility over nodes (flat index v * H*C + j);
      backward: co = 1 over the classes; the flatten reduces co over nodes; a head is live iff
        one of its conv outputs is accessible and co-accessible; a block input is
        co-accessible iff it feeds a co-accessible conv output or a live dim of a live head.
    Entry liveness: conv[h, i, c] = kept & acc_in[i] & co_out[h, c]; query/key[h, i, j] =
    kept & acc_in[i] & head_live[h] & dim_live[h, j]; kernel[i, o] = kept & acc_in[i] & co_out[o].
    """
    m = check_gcn_masks(masks, cfg, n_nodes=n_nodes)
    n_blocks, n_fc = len(cfg.filters), len(cfg.fc)
    attention = cfg.attention != "adjacency"
    kernels = [f"fc{i}/kernel" for i in range(n_fc)] + ["classifier/kernel"]

    # Forward: accessibility of every layer's input units.
    acc_in: dict[str, np.ndarray] = {}
    dim_live: dict[int, np.ndarray] = {}
    acc = np.ones(m["block0/conv"].shape[1], dtype=bool)
    for b in range(n_blocks):
        conv = m[f"block{b}/conv"]  # (H, s, C)
        acc_in[f"block{b}"] = acc
        if attention:
            q_on = (acc[None, :, None] & m[f"block{b}/query"]).any(axis=1)  # (H, d)
            k_on = (acc[None, :, None] & m[f"block{b}/key"]).any(axis=1)
            dim_live[b] = q_on & k_on
        acc = (acc[None, :, None] & conv).any(axis=1).reshape(-1)  # (H*C,), index h*C + c
    acc = np.tile(acc, n_nodes)  # flat index v * (H*C) + j
    for name in kernels:
        acc_in[name] = acc
        acc = (acc[:, None] & m[name]).any(axis=0)

    # Backward: co-accessibility of every layer's output units, and the live entries.
    live: dict[str, np.ndarray] = {}
    co = np.ones(m["classifier/kernel"].shape[1], dtype=bool)
    for name in reversed(kernels):
        kernel = m[name]
        live[name] = kernel & acc_in[name][:, None] & co[None, :]
        co = (kernel & co[None, :]).any(axis=1)
    co = co.reshape(n_nodes, -1).any(axis=0)  # reduce the flatten over nodes: (H*C,)
    for b in reversed(range(n_blocks)):
        conv = m[f"block{b}/conv"]
        heads, _, filters = conv.shape
        a_in = acc_in[f"block{b}"]
        co_out = co.reshape(heads, filters)  # (H, C)
        acc_out = (a_in[None, :, None] & conv).any(axis=1)  # (H, C)
        head_live = (acc_out & co_out).any(axis=1)  # (H,)
        live[f"block{b}/conv"] = conv & a_in[None, :, None] & co_out[:, None, :]
        co = (conv & co_out[:, None, :]).any(axis=(0, 2))  # (s,)
        if attention:
            used = head_live[:, None] & dim_live[b]  # (H, d)
            query, key = m[f"block{b}/query"], m[f"block{b}/key"]
            co = co | ((query | key) & used[:, None, :]).any(axis=(0, 2))
            entry_live = a_in[None, :, None] & used[:, None, :]
            live[f"block{b}/query"] = query & entry_live
            live[f"block{b}/key"] = key & entry_live
    return {name: live[name] for name in masks}


def dangling_connections(masks: Mapping[str, ArrayLike], cfg: GCNConfig, *, n_nodes: int) -> int:
    """Number of kept entries that lie on no input→output path: Σ (mask & ~gcn_live)."""
    live = gcn_live(masks, cfg, n_nodes=n_nodes)
    kept = {name: np.asarray(m).astype(bool) for name, m in masks.items()}
    return int(sum(np.count_nonzero(kept[name] & ~alive) for name, alive in live.items()))
