"""Compaction (docs/methods.md#costs-and-compaction): a pruned GCN rebuilt as a smaller dense
network, same outputs.

`compact(params, masks, model, adjacency=…)` takes one network's latent parameters and crisp
masks and returns a `CompactGCN`: plain arrays (`params`) plus the static structure (`spec`)
that `apply_compact` runs. What is removed, all exactly (outputs equal the masked network's
up to float rounding):

- constant units: a unit whose incoming weights are all pruned outputs relu(bias), the same
  for every sample (a block's conv column: for every node too, since A_h · 0 = 0); FC layers
  fold such inputs into their bias (b' = b + Σ_const value · K[const, :]) and drop them;
- dead units: a unit none of whose outgoing weights is kept (after folding), back from the
  classifier's outputs through the FC layers, the flattened node features, the conv columns,
  whole heads, attention dims with no kept query or no kept key weight (they add 0 to the
  logits), and block inputs no kept weight reads. Unread inputs of the first block and
  unread flattened features of the first FC layer (e.g. a padded head column, or a node
  whose rows were all pruned) keep zero rows instead of being gathered out: on CPU a gather
  of (1024, 3840) activations took longer (15 ms) than the 3840 x 256 product it feeds (8 ms).

A block keeps only its kept heads, each padded with zero weights to the widest kept head's
conv columns and attention dims, so it runs as the same three batched einsums as the
original module (instead of one small matmul per head).
The entry-wise zeros left inside kept rows and columns stay as zeros here; `layouts`
chooses per FC layer between a dense kernel and a BCOO sparse one (`jax.experimental.sparse`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from gcnprune_jax.models.gcn import GCNConfig

LAYOUTS = ("dense", "bcoo")


@dataclasses.dataclass(frozen=True)
class HeadGroup:
    """Kept heads of one block that run together: same attention dims, same conv width
    (the fixed-adjacency model: every kept head, one product over all their columns)."""

    heads: tuple[int, ...]  # original head indices
    dims: int  # attention dims per head (0: no query/key, the logits are 0)
    widths: tuple[int, ...]  # conv columns per head
    query: tuple[tuple[int, int], ...]  # per head: (projection, column offset) of its dims
    key: tuple[tuple[int, int], ...]
    conv: tuple[tuple[int, int], ...]  # projection -1: reads nothing (zeros)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """Static structure of one compacted attention block."""

    in_index: tuple[int, ...] | None  # unused (None); kept for compact.json readers
    conv_widths: tuple[int, ...]  # kept conv columns per kept head
    attention_dims: tuple[int, ...]  # kept query/key dims per kept head
    heads: tuple[int, ...]  # original indices of the kept heads
    projections: tuple[tuple[int, ...] | None, ...] = ()  # input rows of each proj matmul
    groups: tuple[HeadGroup, ...] = ()


@dataclasses.dataclass(frozen=True)
class CompactSpec:
    """Static structure of a compacted GCN (hashable: `apply_compact` is jitted on it)."""

    attention: str
    attention_dim: int  # the original d, for the 1/sqrt(d) scale
    blocks: tuple[BlockSpec, ...]
    fc_in_index: tuple[int, ...] | None  # unused (None); kept for compact.json readers
    layouts: tuple[str, ...]  # per FC layer and the classifier: "dense" or "bcoo"
    n_nodes: int = 0
    # per head group of the last block: the flattened features the first FC layer reads
    # (indices into the group's (n, V, c) output, or None: all)
    fc_gather: tuple[tuple[int, ...] | None, ...] = ()
    # the logits the classifier computes (None: all); the others are their bias
    logit_index: tuple[int, ...] | None = None
    batch_chunk: int = 64  # `apply_compact` runs larger batches in chunks of this size (0: never)
    # the attention's key axis is padded to a multiple of this with exact zeros (1: never)
    key_multiple: int = 8

    def shapes(self, params: Mapping[str, Any]) -> dict[str, list[int]]:
        """{name: shape} of the compacted parameters (the JSON `gcnprune export` writes)."""
        return {name: list(np.shape(_dense(p))) for name, p in _flat(params).items()}


@dataclasses.dataclass(frozen=True)
class CompactGCN:
    spec: CompactSpec
    params: dict[str, Any]


def _dense(p: Any) -> Any:
    return p.todense() if isinstance(p, sparse.BCOO) else p


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "/"))
        else:
            out[name] = value
    return out


def effective_weights(
    params: Mapping[str, Any], masks: Mapping[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """W = Ŵ ⊙ m as nested numpy dicts (float64 for exact folding arithmetic)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for module, leaves in params.items():
        out[module] = {}
        for leaf, value in leaves.items():
            arr = np.asarray(value, np.float64)
            name = f"{module}/{leaf}"
            if name in masks:
                arr = arr * np.asarray(masks[name], bool)
            out[module][leaf] = arr
    return out


def compact(
    params: Mapping[str, Any],
    masks: Mapping[str, Any],
    model: GCNConfig,
    *,
    adjacency: np.ndarray,
    layouts: tuple[str, ...] | None = None,
    remove: bool = True,
) -> CompactGCN:
    """The compacted network of one pruned GCN (see the module docstring).

    params: one network's latent pytree (`models.gcn.build_gcn`); masks: {path: bool array}
    over its prunable tensors (`masks.npz`). layouts: per FC layer + classifier, default all
    "dense". The compacted network reads the same (B, V, F) inputs and returns the same logits.
    remove=False keeps every unit (the masked network in this module's form, e.g. to run its
    FC kernels as BCOO without compaction).
    """
    w = effective_weights(params, masks)
    n_blocks, n_fc = len(model.filters), len(model.fc)
    has_qk = model.attention != "adjacency"
    n_nodes = int(np.shape(adjacency)[0])
    fc_names = [f"fc{i}" for i in range(n_fc)] + ["classifier"]
    layouts = layouts or ("dense",) * len(fc_names)
    if len(layouts) != len(fc_names) or any(lay not in LAYOUTS for lay in layouts):
        raise ValueError(f"layouts must be {len(fc_names)} values among {LAYOUTS}, got {layouts}")

    # Forward: a conv column with no kept weight outputs relu(bias) at every node.
    last = w[f"block{n_blocks - 1}"]
    conv_last = last["conv"]  # (H, s, C)
    heads, _, filters = conv_last.shape
    constant_feature = ~conv_last.any(axis=1) & remove  # (H, C)
    feature_value = np.maximum(last["bias"], 0.0)  # (H, C)
    flat_constant = np.tile(constant_feature.reshape(-1), n_nodes)  # (V*H*C,)
    flat_value = np.tile(feature_value.reshape(-1), n_nodes)

    # FC chain: fold constant inputs into the bias, find constant outputs.
    kernels = [w[name]["kernel"] for name in fc_names]
    biases = [w[name]["bias"].copy() for name in fc_names]
    in_constant, in_value = flat_constant, flat_value
    out_constant = []
    for i, kernel in enumerate(kernels):
        biases[i] = biases[i] + in_value[in_constant] @ kernel[in_constant]
        live_rows = ~in_constant
        constant = ~kernel[live_rows].any(axis=0)
        if not remove:
            constant = np.zeros_like(constant)  # (a constant logit is its bias, see below)
        out_constant.append(constant)
        in_constant, in_value = constant, np.maximum(biases[i], 0.0)

    # Backward: which units are needed.
    needed_out = np.ones(kernels[-1].shape[1], bool)
    kept_rows, kept_cols = [None] * len(kernels), [None] * len(kernels)
    for i in range(len(kernels) - 1, -1, -1):
        kernel = kernels[i]
        row_constant = flat_constant if i == 0 else out_constant[i - 1]
        cols = needed_out & ~out_constant[i]
        rows = ~row_constant & (kernel[:, cols].any(axis=1) | (not remove))
        kept_rows[i], kept_cols[i] = rows, cols
        needed_out = rows
    needed_flat = kept_rows[0]  # (V*H*C,)

    # Blocks, backward from the flattened features: what each block must keep.
    needed_features = needed_flat.reshape(n_nodes, heads * filters).any(axis=0)
    keep: list[dict[str, np.ndarray]] = [{} for _ in range(n_blocks)]
    for b in range(n_blocks - 1, -1, -1):
        blk = w[f"block{b}"]
        conv = blk["conv"]
        n_heads, s_in, n_filters = conv.shape
        cols = needed_features.reshape(n_heads, n_filters).copy()
        if b == n_blocks - 1:
            cols &= ~constant_feature  # folded into the first FC layer's bias
        # (an earlier block keeps its constant features: the next block reads them)
        head_kept = cols.any(axis=1)
        if has_qk:
            dims = blk["query"].any(axis=1) & blk["key"].any(axis=1)  # (H, d)
            dims |= not remove
            dims &= head_kept[:, None]
        else:
            dims = np.zeros((n_heads, 0), bool)
        rows = np.full(s_in, not remove)
        for h in np.flatnonzero(head_kept):
            rows |= conv[h][:, cols[h]].any(axis=1)
            if has_qk:
                rows |= blk["query"][h][:, dims[h]].any(axis=1)
                rows |= blk["key"][h][:, dims[h]].any(axis=1)
        keep[b] = {"cols": cols, "dims": dims, "rows": rows, "heads": np.flatnonzero(head_kept)}
        needed_features = rows  # the previous block's needed output features

    # Forward: lay out each block for speed, keeping every product exactly the size the
    # structured FLOP count (`costs.flops_structured`) gives it.
    # - Projections: each (tensor, head) unit (a head's query, key or conv columns) reads only
    #   its own rows; units reading the same input rows share one matmul `x[..., R] @ proj_r`
    #   (usually one: all heads read all rows), instead of three batched einsums.
    # - Heads: kept heads with the same (attention dims, conv width) form a group that runs as
    #   one batched product each for the logits and the aggregation; no padded head or column.
    # - Softmax: 1/sqrt(d) and log2(e) are folded into the query weights (and the adjacency
    #   gains), so the attention is exp2(z - max z) and the normalization is applied to the
    #   (B, h, V, c) aggregate instead of the (B, h, V, V) attention. The key axis is padded
    #   to a multiple of 8 with logits of -inf (exact zeros after exp2): on SBU's 30 nodes
    #   the attention of SSP at 0.95 went from 15.9 to 13.6 ms per 1024 samples.
    # - The first FC layer reads only the flattened features it needs (a static gather of the
    #   last block's outputs, laid out head-major), with no zero rows.
    block_specs: list[BlockSpec] = []
    block_params: list[dict[str, Any]] = []
    merged = model.attention == "adjacency"
    # block b > 0: original input feature -> position in the previous block's compact output
    in_position = np.zeros(0, np.int64)
    last_flat: list[np.ndarray] = []  # last block: per group, (n, V, c) -> original flat index
    for b in range(n_blocks):
        blk, k = w[f"block{b}"], keep[b]
        conv = blk["conv"]
        n_heads, s_in, n_filters = conv.shape
        kept_heads, cols, dims = k["heads"], k["cols"], k["dims"]
        position = np.arange(s_in) if b == 0 else in_position
        width_in = s_in if b == 0 else int(in_position.max(initial=-1)) + 1

        def unit(weights: np.ndarray, position: np.ndarray = position) -> tuple:
            """(input positions read, their weight rows) of one unit's (s_in, m) weights."""
            rows = np.flatnonzero(weights.any(axis=1))
            if np.any(position[rows] < 0):
                raise AssertionError("a kept unit reads an input the previous block dropped")
            order = np.argsort(position[rows], kind="stable")
            return tuple(int(i) for i in position[rows][order]), weights[rows[order]]

        c_idx = {h: np.flatnonzero(cols[h]) for h in kept_heads}
        d_idx = {h: np.flatnonzero(dims[h]) if has_qk else np.zeros(0, int) for h in kept_heads}
        if merged:
            groups_heads = [list(kept_heads)] if kept_heads.size else []
        else:
            sizes = sorted({(d_idx[h].size, c_idx[h].size) for h in kept_heads})
            groups_heads = [
                [h for h in kept_heads if (d_idx[h].size, c_idx[h].size) == size] for size in sizes
            ]
        proj_rows: list[tuple[int, ...]] = []
        proj_cols: list[list[np.ndarray]] = []

        def place(
            rows_weights: tuple, proj_rows: list = proj_rows, proj_cols: list = proj_cols
        ) -> tuple[int, int]:
            """Append a unit's columns to the projection over its rows: (projection, offset)."""
            rows, weights = rows_weights
            if not rows:
                return (-1, 0)  # reads nothing: zeros (e.g. a bias-only conv column)
            if rows not in proj_rows:
                proj_rows.append(rows)
                proj_cols.append([])
            r = proj_rows.index(rows)
            offset = sum(c.shape[1] for c in proj_cols[r])
            proj_cols[r].append(weights)
            return (r, offset)

        scale = 1.0 / (math.log(2.0) * math.sqrt(model.attention_dim))
        p: dict[str, Any] = {}
        group_specs = []
        out_position = -np.ones(n_heads * n_filters, np.int64)
        offset_out = 0
        flat = []
        # all queries, then all keys, then all conv columns: the queries (keys) of groups with
        # equal attention dims are one slice, so their attention is computed together
        with_qk = [has_qk and d_idx[hs[0]].size > 0 for hs in groups_heads]
        queries = [
            [place(unit(blk["query"][h][:, d_idx[h]] * scale)) for h in hs] if on else []
            for hs, on in zip(groups_heads, with_qk, strict=True)
        ]
        keys = [
            [place(unit(blk["key"][h][:, d_idx[h]])) for h in hs] if on else []
            for hs, on in zip(groups_heads, with_qk, strict=True)
        ]
        convs = [[place(unit(conv[h][:, c_idx[h]])) for h in hs] for hs in groups_heads]
        for g, heads_g in enumerate(groups_heads):
            query, key, conv_src = queries[g], keys[g], convs[g]
            widths = [int(c_idx[h].size) for h in heads_g]
            group_specs.append(
                HeadGroup(
                    heads=tuple(int(h) for h in heads_g),
                    dims=int(d_idx[heads_g[0]].size),
                    widths=tuple(widths),
                    query=tuple(query),
                    key=tuple(key),
                    conv=tuple(conv_src),
                )
            )
            bias = [blk["bias"][h][c_idx[h]] for h in heads_g]
            p[f"bias{g}"] = np.concatenate(bias) if merged else np.stack(bias)
            if model.attention == "softmax+adjacency":
                p[f"gain{g}"] = blk["adjacency_gain"][heads_g] / math.log(2.0)
            # where each original (h, c) lands in this block's output (B, V, features), and
            # in the last block's flattened group output: (n, V, c) head-major, or (V, N)
            width_g = sum(widths)
            index = np.zeros((n_nodes, width_g), np.int64) if merged else None
            column = 0
            for i, h in enumerate(heads_g):
                originals = h * n_filters + c_idx[h]
                if merged:
                    out_position[originals] = offset_out + column + np.arange(widths[i])
                    index[:, column : column + widths[i]] = (
                        np.arange(n_nodes)[:, None] * (n_heads * n_filters) + originals
                    )
                else:
                    out_position[originals] = offset_out + i * widths[i] + np.arange(widths[i])
                column += widths[i]
            if not merged:
                c_g = widths[0]
                index = np.zeros((len(heads_g), n_nodes, c_g), np.int64)
                for i, h in enumerate(heads_g):
                    index[i] = np.arange(n_nodes)[:, None] * (n_heads * n_filters) + (
                        h * n_filters + c_idx[h]
                    )
            flat.append(index.reshape(-1))
            offset_out += width_g
        for r in range(len(proj_rows)):
            p[f"proj{r}"] = np.concatenate(proj_cols[r], axis=1)
        block_specs.append(
            BlockSpec(
                in_index=None,
                conv_widths=tuple(int(cols[h].sum()) for h in kept_heads),
                attention_dims=tuple(int(dims[h].sum()) for h in kept_heads),
                heads=tuple(int(h) for h in kept_heads),
                projections=tuple(
                    None if rows == tuple(range(width_in)) else rows for rows in proj_rows
                ),
                groups=tuple(group_specs),
            )
        )
        block_params.append(p)
        in_position, last_flat = out_position, flat

    # The first FC layer reads, per group of the last block, the needed flattened features
    # (original flat index v * H*C + h*C + c) in the group's own flattened order.
    needed_index = np.flatnonzero(needed_flat)
    if np.any(in_position[needed_index % (heads * filters)] < 0):
        raise AssertionError("a needed flattened feature has no kept conv column")
    fc_gather, fc0_rows = [], []
    for index in last_flat:
        take = np.flatnonzero(needed_flat[index])
        fc_gather.append(None if take.size == index.size else tuple(int(t) for t in take))
        fc0_rows.append(index[take])
    fc0_rows = np.concatenate(fc0_rows) if fc0_rows else np.zeros(0, np.int64)
    if sorted(fc0_rows.tolist()) != needed_index.tolist():
        raise AssertionError("the first FC layer's rows do not cover the needed features")

    fc_params = []
    for i in range(len(kernels)):
        rows = fc0_rows if i == 0 else np.flatnonzero(kept_rows[i])
        kernel = kernels[i][rows][:, kept_cols[i]]
        # the classifier keeps every bias: a logit no kept weight reaches is its bias alone
        bias = biases[i] if i == len(kernels) - 1 else biases[i][kept_cols[i]]
        fc_params.append({"kernel": kernel, "bias": bias})
    logits_kept = kept_cols[-1]
    logit_index = None if logits_kept.all() else tuple(int(i) for i in np.flatnonzero(logits_kept))

    out_params: dict[str, Any] = {}
    for b, p in enumerate(block_params):
        out_params[f"block{b}"] = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    for name, p, layout in zip(fc_names, fc_params, layouts, strict=True):
        kernel = jnp.asarray(p["kernel"], jnp.float32)
        out_params[name] = {
            "kernel": to_bcoo(kernel) if layout == "bcoo" else kernel,
            "bias": jnp.asarray(p["bias"], jnp.float32),
        }
    spec = CompactSpec(
        attention=model.attention,
        attention_dim=model.attention_dim,
        blocks=tuple(block_specs),
        fc_in_index=None,
        layouts=tuple(layouts),
        n_nodes=n_nodes,
        fc_gather=tuple(fc_gather),
        logit_index=logit_index,
    )
    return CompactGCN(spec=spec, params=out_params)


def to_bcoo(kernel: Any) -> sparse.BCOO:
    """A concrete 2-D kernel as a BCOO matrix: the same value as `sparse.BCOO.fromdense` (the
    nonzeros in row-major order, int32 indices), built with numpy instead of a chain of eager
    JAX operations that each compile for the kernel's shape."""
    dense = np.asarray(kernel, np.float32)
    indices = np.argwhere(dense != 0).astype(np.int32)
    return sparse.BCOO(
        (jnp.asarray(dense[tuple(indices.T)]), jnp.asarray(indices)),
        shape=dense.shape,
        indices_sorted=True,
        unique_indices=True,
    )


def with_layouts(net: CompactGCN, layouts: tuple[str, ...]) -> CompactGCN:
    """The same compacted network with its FC kernels stored in other layouts."""
    params = dict(net.params)
    names = [k for k in params if not k.startswith("block")]
    names = sorted((n for n in names if n != "classifier"), key=lambda n: int(n[2:])) + [
        "classifier"
    ]
    for name, layout in zip(names, layouts, strict=True):
        kernel = _dense(params[name]["kernel"])
        params[name] = {
            "kernel": to_bcoo(kernel) if layout == "bcoo" else kernel,
            "bias": params[name]["bias"],
        }
    return CompactGCN(dataclasses.replace(net.spec, layouts=tuple(layouts)), params)


def _units(outs: list, srcs: tuple, widths: tuple[int, ...], stacked: bool) -> jax.Array:
    """Columns of the units `srcs` ((projection, offset) each) of the projection outputs
    (B, V, N_r): stacked (B, n, V, c) for a head group, else concatenated (B, V, Σc)."""
    batch, v = outs[0].shape[:2] if outs else (0, 0)
    r0, o0 = srcs[0]
    consecutive = r0 >= 0 and all(src == (r0, o0 + sum(widths[:i])) for i, src in enumerate(srcs))
    if consecutive:  # one slice (the usual case: units laid out in order)
        cols = outs[r0][..., o0 : o0 + sum(widths)]
        if not stacked:
            return cols
        return cols.reshape(batch, v, len(srcs), widths[0]).transpose(0, 2, 1, 3)
    parts = [
        outs[r][..., o : o + c] if r >= 0 else jnp.zeros((batch, v, c), jnp.float32)
        for (r, o), c in zip(srcs, widths, strict=True)
    ]
    return jnp.stack(parts, axis=1) if stacked else jnp.concatenate(parts, axis=-1)


def _stage_project(blk: BlockSpec, p: Mapping[str, Any], x: jax.Array) -> list:
    """The block's projections: x (B, V, s) -> [x[..., R_r] @ proj_r] (B, V, N_r)."""
    outs = []
    for r, rows in enumerate(blk.projections):
        xr = x if rows is None else x[..., np.asarray(rows, np.int32)]
        outs.append(xr @ p[f"proj{r}"])
    if not outs:  # nothing read: keep the batch and node sizes for zero units
        outs = [jnp.zeros((*x.shape[:2], 0), jnp.float32)]
    return outs


def _padded(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (8: the float32 vector width the CPU's softmax
    loops run best on; V = 30 key columns run slower than 32 aligned ones)."""
    return -(-n // max(multiple, 1)) * max(multiple, 1)


def _stage_attend(
    spec: CompactSpec, blk: BlockSpec, p: Mapping[str, Any], outs: list, adjacency: jax.Array
) -> list:
    """Per head group, the unnormalized attention e = exp2(z - max z) (B, n, V, V') and its row
    sums (B, n, V), the key axis padded to a multiple V' of `spec.key_multiple` with exact
    zeros; (None, None) for the fixed adjacency. Consecutive groups with the same
    attention dims (they differ in conv width) compute it together, then split by heads."""
    if spec.attention == "adjacency":
        return [(None, None)] * len(blk.groups)
    batch, v = outs[0].shape[:2]
    vp = _padded(v, spec.key_multiple)
    pad_keys = ((0, 0), (0, 0), (0, vp - v), (0, 0))
    # the padded key columns get logit -inf, so exp2 makes them exact zeros
    closed = jnp.asarray(np.r_[np.zeros(v), np.full(vp - v, -np.inf)], jnp.float32)
    wide = jnp.pad(adjacency, ((0, 0), (0, vp - v)))
    result: list = []
    start = 0
    while start < len(blk.groups):
        stop = start + 1
        while stop < len(blk.groups) and blk.groups[stop].dims == blk.groups[start].dims:
            stop += 1
        run = blk.groups[start:stop]
        sizes = [len(grp.heads) for grp in run]
        n, dims = sum(sizes), run[0].dims
        if dims:
            q = _units(outs, sum((grp.query for grp in run), ()), (dims,) * n, True)
            k = _units(outs, sum((grp.key for grp in run), ()), (dims,) * n, True)
            z = jnp.einsum("bhvd,bhwd->bhvw", q, jnp.pad(k, pad_keys))
            if vp > v and spec.attention != "neighbours":  # (neighbours: `near` closes them)
                z = z + closed
        else:  # no live attention dim: the logits are 0
            z = jnp.broadcast_to(closed, (batch, n, v, vp))
        if spec.attention == "softmax+adjacency":
            gain = jnp.concatenate([p[f"gain{g}"] for g in range(start, stop)])
            z = z + gain[None, :, None, None] * wide
        if spec.attention == "neighbours":
            near = wide > 0
            z = jnp.where(near, z, -jnp.inf)
            e = jnp.where(near, jnp.exp2(z - z.max(axis=-1, keepdims=True)), 0.0)
        else:
            e = jnp.exp2(z - z.max(axis=-1, keepdims=True))
        total = e.sum(axis=-1)
        offset = 0
        for size in sizes:
            if len(sizes) == 1:
                result.append((e, total))
            else:
                result.append((e[:, offset : offset + size], total[:, offset : offset + size]))
            offset += size
        start = stop
    return result


def _stage_aggregate(
    spec: CompactSpec,
    blk: BlockSpec,
    p: Mapping[str, Any],
    outs: list,
    attention: list,
    adjacency: jax.Array,
) -> list:
    """Per head group, relu(A · XW + bias): (B, n, V, c), or (B, V, Σc) for the adjacency."""
    ys = []
    for g, (grp, (e, total)) in enumerate(zip(blk.groups, attention, strict=True)):
        if spec.attention == "adjacency":
            xw = _units(outs, grp.conv, grp.widths, False)
            y = jnp.einsum("vw,bwn->bvn", adjacency, xw) + p[f"bias{g}"]
        else:
            xw = _units(outs, grp.conv, grp.widths, True)
            v = xw.shape[2]
            xw = jnp.pad(xw, ((0, 0), (0, 0), (0, e.shape[-1] - v), (0, 0)))
            if spec.attention == "mean":
                wide = jnp.pad(adjacency, ((0, 0), (0, e.shape[-1] - v)))
                attn = 0.5 * e / total[..., None] + 0.5 * wide
                y = jnp.einsum("bhvw,bhwc->bhvc", attn, xw)
            else:  # softmax normalization applied after the product (c <= V numbers per row)
                y = jnp.einsum("bhvw,bhwc->bhvc", e, xw) / total[..., None]
            y = y + p[f"bias{g}"][None, :, None, :]
        ys.append(jax.nn.relu(y))
    return ys


def _block_output(spec: CompactSpec, ys: list, x: jax.Array) -> jax.Array:
    """The next block's input (B, V, features): the groups' outputs node-major."""
    if spec.attention == "adjacency":
        parts = ys
    else:
        parts = [y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1) for y in ys]
    if not parts:
        return jnp.zeros((*x.shape[:2], 0), jnp.float32)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _fc_input(spec: CompactSpec, ys: list, batch: int) -> jax.Array:
    """The first FC layer's input: per group of the last block, its needed flattened
    features (static gather), concatenated."""
    parts = []
    for y, take in zip(ys, spec.fc_gather, strict=True):
        flat = y.reshape(batch, -1)
        if take is not None:
            index = np.asarray(take, np.int32)
            flat = flat.at[:, index].get(
                unique_indices=True, indices_are_sorted=True, mode="promise_in_bounds"
            )
        parts.append(flat)
    if not parts:
        return jnp.zeros((batch, 0), jnp.float32)
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def compact_stages(spec: CompactSpec, adjacency: Any) -> list[tuple[str, Any]]:
    """`apply_compact` as named stages `(name, fn(params, carry) -> carry)`, carry starting as
    the input x (B, V, F) and ending as the logits: what `stage_times` times one by one."""
    adjacency = jnp.asarray(adjacency, jnp.float32)
    stages: list[tuple[str, Any]] = []
    n_blocks = len(spec.blocks)
    for b, blk in enumerate(spec.blocks):
        last = b == n_blocks - 1

        def project(params, x, b=b, blk=blk):
            return x, _stage_project(blk, params[f"block{b}"], x)

        def attend(params, carry, b=b, blk=blk):
            x, outs = carry
            return x, outs, _stage_attend(spec, blk, params[f"block{b}"], outs, adjacency)

        def aggregate(params, carry, b=b, blk=blk, last=last):
            x, outs, attention = carry
            ys = _stage_aggregate(spec, blk, params[f"block{b}"], outs, attention, adjacency)
            if last:
                return jnp.zeros((x.shape[0], 0), jnp.float32), ys  # the batch size
            return _block_output(spec, ys, x)

        stages += [
            (f"block{b}/projection", project),
            (f"block{b}/attention", attend),
            (f"block{b}/aggregation", aggregate),
        ]

    def fc_input(params, carry):
        empty, ys = carry
        return _fc_input(spec, ys, empty.shape[0])

    stages.append(("fc_input", fc_input))
    n_fc = len(spec.layouts) - 1
    for i in range(n_fc + 1):
        name = "classifier" if i == n_fc else f"fc{i}"

        def layer(params, x, name=name, hidden=i < n_fc):
            kernel, bias = params[name]["kernel"], params[name]["bias"]
            if hidden:
                return jax.nn.relu(x @ kernel + bias)
            if spec.logit_index is None:
                return x @ kernel + bias
            index = np.asarray(spec.logit_index, np.int32)
            logits = jnp.broadcast_to(bias, (x.shape[0], bias.shape[0]))
            return logits.at[:, index].set(x @ kernel + bias[index])

        stages.append((name, layer))
    return stages


def apply_compact(
    spec: CompactSpec, params: Mapping[str, Any], x: jax.Array, adjacency: jax.Array
) -> jax.Array:
    """Logits of the compacted network: x (B, V, F) -> (B, n_classes). Pure; jit it with
    `spec` static (`jax.jit(apply_compact, static_argnums=0)`). Each block computes what
    `models.gcn.AttentionGraphConv` does over its kept heads, in the layout of `compact`.
    A batch larger than `spec.batch_chunk` runs as a loop over chunks of that many samples
    (padded to a multiple): each chunk's (chunk, h, V, V) attention stays in cache, where the
    whole batch's (30 MB at B = 1024) would be written to and read back from memory."""
    stages = compact_stages(spec, adjacency)

    def run(xb: jax.Array) -> jax.Array:
        carry = xb
        for _, fn in stages:
            carry = fn(params, carry)
        return carry

    chunk, batch = spec.batch_chunk, x.shape[0]
    if not chunk or batch <= chunk:
        return run(x)
    n_chunks = -(-batch // chunk)
    pad = n_chunks * chunk - batch
    xs = jnp.pad(x, ((0, pad), (0, 0), (0, 0))) if pad else x
    out = jax.lax.map(run, xs.reshape(n_chunks, chunk, *x.shape[1:]))
    return out.reshape(n_chunks * chunk, -1)[:batch]


def stage_times(
    stages: list[tuple[str, Any]], params: Any, x: jax.Array, repeats: int = 10
) -> dict[str, float]:
    """Median seconds of each stage run alone (jitted) on the previous stage's output: where
    the time of one forward pass goes. The stages' sum exceeds the whole pass somewhat (each
    stage writes its output to memory, which the whole pass may fuse away)."""
    times, carry = {}, x
    for name, fn in stages:
        step = jax.jit(fn)
        times[name] = time_call(step, params, carry, repeats=repeats)
        carry = step(params, carry)
    return times


def compact_flops(net: CompactGCN, n_nodes: int | None = None) -> int:
    """Dense FLOPs per sample of the compacted network as `apply_compact` runs it (2 per
    multiply-add of every matrix product; gathers and elementwise ops left out). Equals
    `costs.flops_structured` of the masks it was compacted from (one block; see the module
    docstring for several)."""
    v = net.spec.n_nodes if n_nodes is None else n_nodes
    total = 0
    for b, blk in enumerate(net.spec.blocks):
        p = net.params[f"block{b}"]
        for r in range(len(blk.projections)):
            rows, cols = np.shape(p[f"proj{r}"])
            total += 2 * v * rows * cols
        for grp in blk.groups:
            total += 2 * v * v * (grp.dims * len(grp.heads) + sum(grp.widths))
    for name, p in net.params.items():
        if not name.startswith("block"):
            rows, cols = np.shape(_dense(p["kernel"]))
            total += 2 * rows * cols
    return int(total)


def spec_to_json(spec: CompactSpec) -> dict[str, Any]:
    """A JSON-able dict of `spec` (inverse: `spec_from_json`)."""
    return dataclasses.asdict(spec)


def spec_from_json(data: Mapping[str, Any]) -> CompactSpec:
    def tup(x: Any) -> tuple[int, ...] | None:
        return None if x is None else tuple(int(v) for v in x)

    def pairs(x: Any) -> tuple[tuple[int, int], ...]:
        return tuple((int(r), int(o)) for r, o in x)

    blocks = tuple(
        BlockSpec(
            in_index=tup(b["in_index"]),
            conv_widths=tup(b["conv_widths"]),
            attention_dims=tup(b["attention_dims"]),
            heads=tup(b["heads"]),
            projections=tuple(tup(r) for r in b.get("projections", ())),
            groups=tuple(
                HeadGroup(
                    heads=tup(g["heads"]),
                    dims=int(g["dims"]),
                    widths=tup(g["widths"]),
                    query=pairs(g["query"]),
                    key=pairs(g["key"]),
                    conv=pairs(g["conv"]),
                )
                for g in b.get("groups", ())
            ),
        )
        for b in data["blocks"]
    )
    return CompactSpec(
        attention=data["attention"],
        attention_dim=int(data["attention_dim"]),
        blocks=blocks,
        fc_in_index=tup(data["fc_in_index"]),
        layouts=tuple(data["layouts"]),
        n_nodes=int(data.get("n_nodes", 0)),
        fc_gather=tuple(tup(t) for t in data.get("fc_gather", ())),
        logit_index=tup(data.get("logit_index")),
        batch_chunk=int(data.get("batch_chunk", 0)),
        key_multiple=int(data.get("key_multiple", 8)),
    )


def dense_params(net: CompactGCN) -> dict[str, Any]:
    """The parameters with every kernel dense (what `save_compact` stores)."""
    return jax.tree.map(_dense, net.params, is_leaf=lambda x: isinstance(x, sparse.BCOO))


def save_compact(
    directory: str | Path, net: CompactGCN, adjacency: np.ndarray, info: Mapping[str, Any]
) -> None:
    """Write a compacted network: `params/` (an Orbax checkpoint of its dense arrays and the
    adjacency) and `compact.json` (the structure, its shapes and `info`)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    tree = {"params": dense_params(net), "adjacency": jnp.asarray(adjacency, jnp.float32)}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "params", tree, force=True)
    checkpointer.wait_until_finished()
    meta = {"spec": spec_to_json(net.spec), "shapes": net.spec.shapes(net.params), **info}
    (directory / "compact.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_compact(directory: str | Path) -> tuple[CompactGCN, np.ndarray, dict[str, Any]]:
    """Read what `save_compact` wrote: (network in its saved layouts, adjacency, metadata)."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    meta_path = directory / "compact.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: no compact.json (not a `gcnprune export` output)")
    meta = json.loads(meta_path.read_text())
    spec = spec_from_json(meta["spec"])
    tree = ocp.StandardCheckpointer().restore(directory / "params")
    net = with_layouts(CompactGCN(spec, tree["params"]), spec.layouts)
    return net, np.asarray(tree["adjacency"]), meta


def time_call(fn: Any, *args: Any, repeats: int = 20, min_time: float = 0.05) -> float:
    """Median seconds per call of a jitted `fn(*args)` after a warm-up call (compilation
    excluded); each sample runs enough calls to last about `min_time`."""
    import time

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = max(time.perf_counter() - start, 1e-6)
    inner = max(1, int(min_time / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / inner)
    return float(np.median(samples))


def choose_layouts(
    net: CompactGCN, n_nodes: int, n_features: int, batch: int = 64, repeats: int = 10
) -> tuple[tuple[str, ...], dict[str, dict[str, float]]]:
    """Per FC layer and classifier, the kernel layout ("dense" or "bcoo") measured fastest
    for x @ K at `batch` rows on the current backend, and the times measured (seconds)."""
    del n_nodes, n_features
    names = [f"fc{i}" for i in range(len(net.spec.layouts) - 1)] + ["classifier"]
    chosen, times = [], {}
    key = jax.random.key(0)
    for name in names:
        kernel = jnp.asarray(_dense(net.params[name]["kernel"]))
        x = jax.random.normal(key, (batch, kernel.shape[0]), jnp.float32)
        t_dense = time_call(jax.jit(lambda a, k: a @ k), x, kernel, repeats=repeats)
        t_sparse = time_call(jax.jit(lambda a, k: a @ k), x, to_bcoo(kernel), repeats=repeats)
        times[name] = {"dense": t_dense, "bcoo": t_sparse}
        chosen.append("bcoo" if t_sparse < t_dense else "dense")
    return tuple(chosen), times
