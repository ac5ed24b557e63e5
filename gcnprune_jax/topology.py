"""Topological consistency of crisp masks (docs/methods.md#tcmp): which kept entries lie on an
input→output path, and how many are dangling.

Everything here works on crisp boolean masks with numpy, at export time (never traced). Units
that are replicated over graph nodes (the GCN shares its block weights over nodes) are reduced
by "any" over the nodes, as the hard form of TCMP's max reduction.

- `consistent_masks`: a plain chain of bipartite layers, M_l of shape (d_l, d_{l+1}).
- `gcn_live`: the same "on some input→output path" predicate for every prunable tensor of the
  GCN of `models/gcn.py` (attention heads, per-head convolutions, flatten, FC layers), read off
  the GCN's chain (`models.gcn.gcn_chain`) by `chain.live`, the same function any declared
  model uses.
- `dangling_connections`: the number of kept entries that are not live.

The differentiable counterparts (TCMP's supervisory networks) are jnp and traceable under
jit / vmap / grad: "any" becomes a saturated sum h(Σ …) and "and" a product, with h either
`hard_saturation` (min(1, x): on 0/1 masks they reproduce the boolean functions exactly) or
`soft_saturation` (1 − exp(−x / τ_h), for training).

- `consistent_masks_soft`: the plain chain, soft counterpart of `consistent_masks`.
- `gcn_unit_states` / `gcn_consistent`: the GCN, soft counterparts of `gcn_live`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from gcnprune_jax import chain
from gcnprune_jax.chain import Chain
from gcnprune_jax.models.gcn import GCNConfig, gcn_chain


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
    return gcn_chain(cfg, n_nodes=n_nodes, n_features=n_features, n_classes=n_classes).shapes()


def _chain_of(masks: Mapping[str, ArrayLike], cfg: GCNConfig, n_nodes: int) -> Chain:
    """The GCN's chain for masks already checked by `check_gcn_masks` / `_check_gcn_shapes`."""
    return gcn_chain(
        cfg,
        n_nodes=n_nodes,
        n_features=jnp.shape(masks["block0/conv"])[1],
        n_classes=jnp.shape(masks["classifier/kernel"])[1],
    )


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
    return chain.live(_chain_of(m, cfg, n_nodes), m)


def dangling_connections(masks: Mapping[str, ArrayLike], cfg: GCNConfig, *, n_nodes: int) -> int:
    """Number of kept entries that lie on no input→output path: Σ (mask & ~gcn_live)."""
    live = gcn_live(masks, cfg, n_nodes=n_nodes)
    kept = {name: np.asarray(m).astype(bool) for name, m in masks.items()}
    return int(sum(np.count_nonzero(kept[name] & ~alive) for name, alive in live.items()))


# ---------------------------------------------------------------------------------------------
# Differentiable propagation (docs/methods.md#tcmp, supervisory networks)

Saturation = Callable[[jax.Array], jax.Array]


def hard_saturation(x: jax.Array) -> jax.Array:
    """h(x) = min(1, x) of docs/methods.md#tcmp: on counts of 0/1 masks, 1 iff the count is
    positive."""
    return jnp.minimum(1.0, x)


def soft_saturation(tau_h: float) -> Saturation:
    """h(x) = 1 − exp(−x / τ_h) of docs/methods.md#tcmp (training): smooth, h(0) = 0, → 1[x > 0] as
    τ_h → 0.

    Computed as −expm1(−x / τ_h), accurate for small x. x ≥ 0 (a sum of masks × states).
    """
    if not tau_h > 0:
        raise ValueError(f"tau_h must be > 0, got {tau_h}")
    return lambda x: -jnp.expm1(-x / tau_h)


def _as_float(mask: jax.typing.ArrayLike) -> jax.Array:
    mask = jnp.asarray(mask)
    return mask if jnp.issubdtype(mask.dtype, jnp.floating) else mask.astype(jnp.float32)


def consistent_masks_soft(masks: Sequence[jax.typing.ArrayLike], h: Saturation) -> list[jax.Array]:
    """Soft `consistent_masks` of a plain chain (docs/methods.md#tcmp): M̃_l = M_l ⊙ (acc_l
    co_{l+1}ᵀ).

    masks: L soft masks in [0, 1], mask l of shape (d_l, d_{l+1}). h: the saturation.
    Forward acc_0 = 1, acc_{l+1} = h(M_lᵀ acc_l); backward co_L = 1, co_l = h(M_l co_{l+1}).
    Returns L arrays of the same shapes. With 0/1 masks and `hard_saturation` it equals
    `consistent_masks` (as 0/1 floats). Traceable (jit, vmap, grad).
    """
    mats = [_as_float(m) for m in masks]
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
    acc = [jnp.ones(mats[0].shape[0], mats[0].dtype)]
    for m in mats:
        acc.append(h(acc[-1] @ m))
    co = [jnp.ones(mats[-1].shape[1], mats[-1].dtype)]
    for m in reversed(mats):
        co.append(h(m @ co[-1]))
    co.reverse()  # co[l] is the co-accessibility of the units entering layer l
    return [m * acc[k][:, None] * co[k + 1][None, :] for k, m in enumerate(mats)]


def _check_gcn_shapes(masks: Mapping[str, jax.typing.ArrayLike], cfg: GCNConfig, n_nodes: int):
    """`check_gcn_masks` on shapes only (static under jit): raises ValueError on a mismatch."""
    for name in ("block0/conv", "classifier/kernel"):
        if name not in masks:
            raise ValueError(f"GCN masks lack {name!r}; got keys {sorted(masks)}")
    conv0, classifier = jnp.shape(masks["block0/conv"]), jnp.shape(masks["classifier/kernel"])
    if len(conv0) != 3 or len(classifier) != 2:
        raise ValueError(
            f"block0/conv must be (H, F, C) and classifier/kernel (I, n_classes), got "
            f"{conv0} and {classifier}"
        )
    expected = gcn_mask_shapes(cfg, n_nodes=n_nodes, n_features=conv0[1], n_classes=classifier[1])
    missing = sorted(set(expected) - set(masks))
    extra = sorted(set(masks) - set(expected))
    if missing or extra:
        raise ValueError(
            f"GCN masks do not match the config: missing {missing}, unexpected {extra}"
        )
    for name, shape in expected.items():
        if tuple(jnp.shape(masks[name])) != shape:
            raise ValueError(
                f"mask {name!r} has shape {jnp.shape(masks[name])}, the config implies {shape}"
            )


def gcn_unit_states(
    masks: Mapping[str, jax.typing.ArrayLike], cfg: GCNConfig, *, n_nodes: int, h: Saturation
) -> dict[str, jax.Array]:
    """Accessibility and co-accessibility of the GCN's units: `gcn_live`'s propagation with
    "any" → h(Σ …) and "and" → product (TCMP's forward and backward supervisory networks).

    masks: {path: mask in [0, 1] of the parameter's shape} with exactly the keys of
      `gcn_mask_shapes`. h: the saturation (`hard_saturation`, `soft_saturation(τ_h)`).
    Returns, for every block b (s inputs, H heads, C filters, d attention dims):
      "block{b}/acc_in" (s,): acc of the block's inputs (acc_0 = 1 over the features);
      "block{b}/acc_out" (H, C): acc_out[h, c] = h(Σ_i acc_in[i] conv[h, i, c]);
      "block{b}/co_out" (H, C): co-accessibility of the block's outputs;
      "block{b}/head_live" (H,): h(Σ_c acc_out[h, c] co_out[h, c]);
      "block{b}/query_on", "block{b}/key_on" (H, d), unless attention is "adjacency":
        h(Σ_i acc_in[i] query[h, i, j]) and the same for key; dim_live = query_on · key_on;
    and for every kernel (`fc{i}/kernel`, `classifier/kernel`, (I, O)):
      "{path}/acc_in" (I,), "{path}/co_out" (O,): acc of its inputs (the first kernel's is the
      last block's acc_out replicated over nodes, flat index v·H·C + j, j = h·C + c) and co of
      its outputs (co = 1 over the classes, co_in = h(K co_out)).
    Backward through the flatten, co_B[j] = h(Σ_v co_flat[v·H·C + j]); into a block,
      co_in[i] = h(Σ_{h,c} conv[h,i,c] co_out[h,c] + Σ_{h,j} head_live[h] dim_live[h,j]
      (query[h,i,j] + key[h,i,j])).
    With 0/1 masks and `hard_saturation` every state is the 0/1 value of `gcn_live`'s boolean.
    With `soft_saturation(τ_h)` a dead unit leaks h(x) ≈ x / τ_h, and each later saturation
    it feeds through kept entries amplifies the leak by about fan-in / τ_h: near-binary masks
    give the hard states as τ_h → 0 only when their off values vanish faster than that.
    Traceable (jit, vmap, grad); cfg and n_nodes are static.
    """
    _check_gcn_shapes(masks, cfg, n_nodes)
    states = chain.unit_states(_chain_of(masks, cfg, n_nodes), masks, h=h)
    return {name.replace("/group_live", "/head_live"): state for name, state in states.items()}


def gcn_consistent(
    masks: Mapping[str, jax.typing.ArrayLike], cfg: GCNConfig, *, n_nodes: int, h: Saturation
) -> dict[str, jax.Array]:
    """Consistent masks M̃ of docs/methods.md#tcmp for every GCN prunable tensor: the differentiable
    `gcn_live`, mask ⊙ (source-unit accessibility) ⊙ (target co-accessibility).

    masks: {path: mask in [0, 1]} with exactly the keys of `gcn_mask_shapes`; h: the
    saturation. With the states of `gcn_unit_states`:
      conv[h, i, c]      → conv · acc_in[i] · co_out[h, c];
      query/key[h, i, j] → query/key · acc_in[i] · head_live[h] · query_on[h, j] · key_on[h, j];
      kernel[i, o]       → kernel · acc_in[i] · co_out[o].
    Returns {path: array of the mask's shape} in the order of `masks`. With 0/1 masks and
    `hard_saturation` it equals `gcn_live` (as 0/1 floats). Traceable (jit, vmap, grad).
    """
    _check_gcn_shapes(masks, cfg, n_nodes)
    return chain.consistent(_chain_of(masks, cfg, n_nodes), masks, h=h)
