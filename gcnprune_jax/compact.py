"""Compaction (SPEC §8): a pruned GCN rebuilt as a smaller dense network, same outputs.

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
class BlockSpec:
    """Static structure of one compacted attention block."""

    in_index: tuple[int, ...] | None  # first block: gather of the input features (None: all)
    conv_widths: tuple[int, ...]  # kept conv columns per kept head
    attention_dims: tuple[int, ...]  # kept query/key dims per kept head
    heads: tuple[int, ...]  # original indices of the kept heads


@dataclasses.dataclass(frozen=True)
class CompactSpec:
    """Static structure of a compacted GCN (hashable: `apply_compact` is jitted on it)."""

    attention: str
    attention_dim: int  # the original d, for the 1/sqrt(d) scale
    blocks: tuple[BlockSpec, ...]
    fc_in_index: tuple[int, ...] | None  # gather of the flattened node features
    layouts: tuple[str, ...]  # per FC layer and the classifier: "dense" or "bcoo"

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
        is_classifier = i == len(kernels) - 1
        if is_classifier or not remove:
            constant = np.zeros_like(constant)  # logits are never dropped
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

    # Forward: build each block with its kept heads, each padded to the widest kept head's
    # width (zero weights and biases: padded outputs are relu(0) = 0 and nobody reads them),
    # so a block stays three batched einsums like the original module.
    block_specs: list[BlockSpec] = []
    block_params: list[dict[str, Any]] = []
    # block b > 0: original input feature -> position in the previous block's padded layout
    in_position, prev_width = np.zeros(0, np.int64), 0
    for b in range(n_blocks):
        blk, k = w[f"block{b}"], keep[b]
        conv = blk["conv"]
        n_heads, s_in, n_filters = conv.shape
        kept_heads, cols, dims, rows = k["heads"], k["cols"], k["dims"], k["rows"]
        row_idx = np.flatnonzero(rows)
        if b == 0:  # unread input features get zero rows: no gather (see the module doc)
            width_in = s_in
            positions = row_idx
        else:
            width_in = prev_width
            positions = in_position[row_idx]
        c_max = int(cols[kept_heads].sum(axis=1).max(initial=0))
        d_max = int(dims[kept_heads].sum(axis=1).max(initial=0)) if has_qk else 0
        n_kept = kept_heads.size
        p: dict[str, Any] = {
            "conv": np.zeros((n_kept, width_in, c_max)),
            "bias": np.zeros((n_kept, c_max)),
        }
        if has_qk:
            p["query"] = np.zeros((n_kept, width_in, d_max))
            p["key"] = np.zeros((n_kept, width_in, d_max))
        out_position = -np.ones(n_heads * n_filters, np.int64)
        for j, h in enumerate(kept_heads):
            c_idx = np.flatnonzero(cols[h])
            p["conv"][j][np.ix_(positions, np.arange(c_idx.size))] = conv[h][np.ix_(row_idx, c_idx)]
            p["bias"][j, : c_idx.size] = blk["bias"][h][c_idx]
            out_position[h * n_filters + c_idx] = j * c_max + np.arange(c_idx.size)
            if has_qk:
                d_idx = np.flatnonzero(dims[h])
                grid = np.ix_(positions, np.arange(d_idx.size))
                p["query"][j][grid] = blk["query"][h][np.ix_(row_idx, d_idx)]
                p["key"][j][grid] = blk["key"][h][np.ix_(row_idx, d_idx)]
        if "adjacency_gain" in blk:
            p["adjacency_gain"] = blk["adjacency_gain"][kept_heads]
        block_specs.append(
            BlockSpec(
                in_index=None,
                conv_widths=tuple(int(cols[h].sum()) for h in kept_heads),
                attention_dims=tuple(int(dims[h].sum()) for h in kept_heads),
                heads=tuple(int(h) for h in kept_heads),
            )
        )
        block_params.append(p)
        in_position, prev_width = out_position, n_kept * c_max

    # The flattened compact features are (v, padded (h', c')); map the needed original flat
    # indices (v, h, c) to their positions there.
    v_idx, f_idx = np.divmod(np.flatnonzero(needed_flat), heads * filters)
    if np.any(in_position[f_idx] < 0):
        raise AssertionError("a needed flattened feature has no kept conv column")
    fc_in = v_idx * prev_width + in_position[f_idx]
    fc_in_index = None  # unread flattened features get zero rows instead of a gather

    fc_params = []
    for i in range(len(kernels)):
        kernel = kernels[i][kept_rows[i]][:, kept_cols[i]]
        if i == 0:
            full = np.zeros((n_nodes * prev_width, kernel.shape[1]))
            full[fc_in] = kernel
            kernel = full
        fc_params.append({"kernel": kernel, "bias": biases[i][kept_cols[i]]})

    out_params: dict[str, Any] = {}
    for b, p in enumerate(block_params):
        out_params[f"block{b}"] = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    for name, p, layout in zip(fc_names, fc_params, layouts, strict=True):
        kernel = jnp.asarray(p["kernel"], jnp.float32)
        out_params[name] = {
            "kernel": sparse.BCOO.fromdense(kernel) if layout == "bcoo" else kernel,
            "bias": jnp.asarray(p["bias"], jnp.float32),
        }
    spec = CompactSpec(
        attention=model.attention,
        attention_dim=model.attention_dim,
        blocks=tuple(block_specs),
        fc_in_index=fc_in_index,
        layouts=tuple(layouts),
    )
    return CompactGCN(spec=spec, params=out_params)


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
            "kernel": sparse.BCOO.fromdense(kernel) if layout == "bcoo" else kernel,
            "bias": params[name]["bias"],
        }
    return CompactGCN(dataclasses.replace(net.spec, layouts=tuple(layouts)), params)


def apply_compact(
    spec: CompactSpec, params: Mapping[str, Any], x: jax.Array, adjacency: jax.Array
) -> jax.Array:
    """Logits of the compacted network: x (B, V, F) -> (B, n_classes). Pure; jit it with
    `spec` static (`jax.jit(apply_compact, static_argnums=0)`). Each block computes as
    `models.gcn.AttentionGraphConv` does, over its kept heads (H', padded widths)."""
    adjacency = jnp.asarray(adjacency, jnp.float32)
    for b, blk in enumerate(spec.blocks):
        p = params[f"block{b}"]
        if blk.in_index is not None:
            x = x[..., jnp.asarray(blk.in_index, jnp.int32)]
        n_heads = len(blk.heads)
        if spec.attention == "adjacency":
            attn = jnp.broadcast_to(adjacency, (x.shape[0], n_heads, *adjacency.shape))
        else:
            q = jnp.einsum("bvs,hsd->bhvd", x, p["query"])
            k = jnp.einsum("bvs,hsd->bhvd", x, p["key"])
            logits = jnp.einsum("bhvd,bhwd->bhvw", q, k) / math.sqrt(spec.attention_dim)
            if spec.attention == "softmax+adjacency":
                logits = logits + p["adjacency_gain"][None, :, None, None] * adjacency
            if spec.attention == "neighbours":
                attn = jax.nn.softmax(logits, axis=-1, where=adjacency > 0)
            else:
                attn = jax.nn.softmax(logits, axis=-1)
                if spec.attention == "mean":
                    attn = 0.5 * (attn + adjacency)
        xw = jnp.einsum("bvs,hsc->bhvc", x, p["conv"])
        y = jnp.einsum("bhvw,bhwc->bhvc", attn, xw) + p["bias"][None, :, None, :]
        y = jax.nn.relu(y)
        batch, h, v, c = y.shape
        x = y.transpose(0, 2, 1, 3).reshape(batch, v, h * c)
    x = x.reshape(x.shape[0], -1)
    if spec.fc_in_index is not None:
        x = x[:, jnp.asarray(spec.fc_in_index, jnp.int32)]
    n_fc = len(spec.layouts) - 1
    for i in range(n_fc + 1):
        name = "classifier" if i == n_fc else f"fc{i}"
        x = x @ params[name]["kernel"] + params[name]["bias"]
        if i < n_fc:
            x = jax.nn.relu(x)
    return x


def compact_flops(net: CompactGCN, n_nodes: int) -> int:
    """Dense FLOPs per sample of the compacted network as `apply_compact` runs it (2 per
    multiply-add of every matrix product; the gathers and elementwise ops left out)."""
    v, total = n_nodes, 0
    for b in range(len(net.spec.blocks)):
        p = net.params[f"block{b}"]
        heads, s_in, width = np.shape(p["conv"])
        total += heads * (2 * v * s_in * width + 2 * v * v * width)
        if "query" in p:
            dims = np.shape(p["query"])[2]
            total += heads * (2 * 2 * v * s_in * dims + 2 * v * v * dims)
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

    blocks = tuple(
        BlockSpec(
            in_index=tup(b["in_index"]),
            conv_widths=tup(b["conv_widths"]),
            attention_dims=tup(b["attention_dims"]),
            heads=tup(b["heads"]),
        )
        for b in data["blocks"]
    )
    return CompactSpec(
        attention=data["attention"],
        attention_dim=int(data["attention_dim"]),
        blocks=blocks,
        fc_in_index=tup(data["fc_in_index"]),
        layouts=tuple(data["layouts"]),
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
        t_sparse = time_call(
            jax.jit(lambda a, k: a @ k), x, sparse.BCOO.fromdense(kernel), repeats=repeats
        )
        times[name] = {"dense": t_dense, "bcoo": t_sparse}
        chosen.append("bcoo" if t_sparse < t_dense else "dense")
    return tuple(chosen), times
