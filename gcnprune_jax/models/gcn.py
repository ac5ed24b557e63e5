"""The attention GCN of docs/methods.md#the-gcn, as a Flax NNX module with a pure functional face.

Per block b with input node signals X (V, s):
  A_h = softmax_j( (X Q_h)(X K_h)^T / sqrt(d) + beta_h * Â )      one (V, V) matrix per head
  Y_h = relu( A_h X W_h + bias_h )                                W_h in R^{s x C}
  X'  = [Y_1 | ... | Y_H]                                         (V, H * C)
then the flattened node features go through fully connected layers (relu) and a linear
classifier. Â is the normalized skeleton adjacency with self-loops (docs/methods.md#the-gcn:
"optionally biased by the skeleton adjacency"); `attention` selects softmax attention, the fixed
adjacency, or both.

Prunable parameters are stored in the (G, I, O) view of docs/methods.md#prunable-tensors so that
masks need no reshapes: `query`, `key` (H, s, d) and `conv` (H, s, C) have one channel per head;
fully connected kernels are (I, O). Biases and the per-head adjacency gains are not pruned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gcnprune_jax.chain import Chain, Gate, Link
from gcnprune_jax.errors import ConfigError

Params = dict[str, Any]
ATTENTIONS = ("softmax+adjacency", "softmax", "adjacency", "neighbours", "mean")


@dataclasses.dataclass(frozen=True)
class GCNConfig:
    """Sizes and design switches of the GCN. Defaults give >= 0.5 M prunable weights on SBU
    and FPHA. Learned attention is kept in every default (its query/key tensors are pruned
    like the others); which form generalizes best differs per dataset, so `config.py` sets it
    per dataset from experiments/results/dense_ablation.md.

    heads: H, attention heads (= channels G of the prunable block tensors).
    filters: C per head for each stacked block; its length is the number of blocks.
    attention_dim: d of the query/key projections.
    fc: hidden sizes of the fully connected layers after flattening.
    attention: how each head's (V, V) matrix A_h is formed:
      "softmax+adjacency": softmax(QK^T/sqrt(d) + beta_h Â), learned attention biased by Â;
      "softmax": softmax(QK^T/sqrt(d)), unconstrained;
      "neighbours": the softmax restricted to skeleton neighbours and self (GAT-style);
      "mean": (Â + softmax(QK^T/sqrt(d))) / 2, a learned correction of the fixed graph;
      "adjacency": A_h = Â, no query/key parameters.
    dropout: rate on the flattened features and hidden FC layers during training (0: none, as
      the author).
    """

    heads: int = 8
    filters: tuple[int, ...] = (16,)
    attention_dim: int = 8
    fc: tuple[int, ...] = (256,)
    attention: str = "neighbours"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ConfigError(
                f"model.attention must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        if self.heads < 1 or not self.filters or min(self.filters) < 1:
            raise ConfigError(
                f"model.heads and model.filters must be positive, got {self.heads}, {self.filters}"
            )
        if self.attention_dim < 1 or any(h < 1 for h in self.fc):
            raise ConfigError("model.attention_dim and model.fc sizes must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


def _glorot(key: jax.Array, shape: tuple[int, ...], fan_in: int, fan_out: int) -> jax.Array:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


class AttentionGraphConv(nnx.Module):
    """One multi-head attention + per-head graph convolution block: (B, V, s) -> (B, V, H*C)."""

    def __init__(
        self,
        in_features: int,
        cfg: GCNConfig,
        filters: int,
        adjacency: np.ndarray,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        h, d = cfg.heads, cfg.attention_dim
        self.attention = cfg.attention
        self.adjacency = nnx.Variable(jnp.asarray(adjacency))  # constant, not a Param
        if cfg.attention != "adjacency":
            self.query = nnx.Param(_glorot(rngs.params(), (h, in_features, d), in_features, d))
            self.key = nnx.Param(_glorot(rngs.params(), (h, in_features, d), in_features, d))
        if cfg.attention == "softmax+adjacency":
            self.adjacency_gain = nnx.Param(jnp.ones((h,), jnp.float32))
        self.conv = nnx.Param(
            _glorot(rngs.params(), (h, in_features, filters), in_features, filters)
        )
        self.bias = nnx.Param(jnp.zeros((h, filters), jnp.float32))

    def attention_matrices(self, x: jax.Array) -> jax.Array:
        """(B, V, s) -> (B, H, V, V) row-stochastic attention (or the fixed adjacency)."""
        adjacency = self.adjacency[...]
        if self.attention == "adjacency":
            return jnp.broadcast_to(adjacency, (x.shape[0], self.conv.shape[0]) + adjacency.shape)
        q = jnp.einsum("bvs,hsd->bhvd", x, self.query[...])
        k = jnp.einsum("bvs,hsd->bhvd", x, self.key[...])
        logits = jnp.einsum("bhvd,bhwd->bhvw", q, k) / math.sqrt(q.shape[-1])
        if self.attention == "softmax+adjacency":
            logits = logits + self.adjacency_gain[...][None, :, None, None] * adjacency
        if self.attention == "neighbours":
            return jax.nn.softmax(logits, axis=-1, where=adjacency > 0)
        attn = jax.nn.softmax(logits, axis=-1)
        if self.attention == "mean":
            return 0.5 * (attn + adjacency)
        return attn

    def __call__(self, x: jax.Array) -> jax.Array:
        attn = self.attention_matrices(x)
        xw = jnp.einsum("bvs,hsc->bhvc", x, self.conv[...])
        y = jnp.einsum("bhvw,bhwc->bhvc", attn, xw) + self.bias[...][None, :, None, :]
        y = jax.nn.relu(y)
        b, h, v, c = y.shape
        return y.transpose(0, 2, 1, 3).reshape(b, v, h * c)


class Dense(nnx.Module):
    """A fully connected layer with an (I, O) kernel (the prunable view with G = 1)."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs) -> None:
        self.kernel = nnx.Param(
            _glorot(rngs.params(), (in_features, out_features), in_features, out_features)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...] + self.bias[...]


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class GCN(nnx.Module):
    """Skeleton GCN classifier: (B, V, F) node signals -> (B, n_classes) logits."""

    def __init__(
        self,
        cfg: GCNConfig,
        *,
        n_nodes: int,
        n_features: int,
        n_classes: int,
        adjacency: np.ndarray,
        rngs: nnx.Rngs,
    ) -> None:
        self.n_blocks = len(cfg.filters)
        self.n_fc = len(cfg.fc)
        self.dropout = cfg.dropout
        width = n_features
        for b, filters in enumerate(cfg.filters):
            setattr(
                self, f"block{b}", AttentionGraphConv(width, cfg, filters, adjacency, rngs=rngs)
            )
            width = cfg.heads * filters
        width *= n_nodes
        for i, hidden in enumerate(cfg.fc):
            setattr(self, f"fc{i}", Dense(width, hidden, rngs=rngs))
            width = hidden
        self.classifier = Dense(width, n_classes, rngs=rngs)

    def __call__(self, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        keys = [None] * (self.n_fc + 1)
        if dropout_key is not None:
            keys = list(jax.random.split(dropout_key, self.n_fc + 1))
        for b in range(self.n_blocks):
            x = getattr(self, f"block{b}")(x)
        x = x.reshape(x.shape[0], -1)
        x = _dropout(x, self.dropout, keys[0])
        for i in range(self.n_fc):
            x = jax.nn.relu(getattr(self, f"fc{i}")(x))
            x = _dropout(x, self.dropout, keys[i + 1])
        return self.classifier(x)


ApplyFn = Callable[..., jax.Array]


def build_gcn(
    cfg: GCNConfig,
    *,
    n_nodes: int,
    n_features: int,
    n_classes: int,
    adjacency: np.ndarray,
    key: jax.Array,
) -> tuple[ApplyFn, Params]:
    """Build the GCN and return its pure face: `(apply, params)`.

    params: nested dict of arrays (the trainable latent pytree; constants such as the
      adjacency are closed over by `apply`).
    apply(params, x, dropout_key=None) -> logits: x is (B, V, F), logits (B, n_classes).
      It is a pure function: masks and optimizers act on `params` from outside.
    """
    model = GCN(
        cfg,
        n_nodes=n_nodes,
        n_features=n_features,
        n_classes=n_classes,
        adjacency=adjacency,
        rngs=nnx.Rngs(params=key),
    )
    graphdef, param_state, constants = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(param_state)

    def apply(p: Params, x: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        # Copy the abstract state and fill it with `p`: works on Flax versions whose merge
        # does not accept plain dicts, and never mutates the module captured here.
        state = jax.tree.map(lambda leaf: leaf, param_state)
        nnx.replace_by_pure_dict(state, p)
        return nnx.merge(graphdef, state, constants)(x, dropout_key)

    return apply, params


def path_name(path: tuple[Any, ...]) -> str:
    """A key path as the INTERFACE's '/'-joined parameter name, e.g. 'block0/conv'.

    A Flax NNX `State` (from `nnx.split`) holds each array in a Variable, whose key path ends
    with the attribute `.value`; that last step is not part of the name, so a State and its
    pure dict (`State.to_pure_dict()`) give the same names."""
    if path and getattr(path[-1], "name", None) == "value":
        path = path[:-1]
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def is_prunable(path: tuple[Any, ...], leaf: Any) -> bool:
    """Prunable = weight tensors in the (G, I, O) or (I, O) view (docs/methods.md#shared-notation).

    The rule is by key path, not by shape: `query`, `key`, `conv` of the attention blocks and
    every `kernel`. Biases and the adjacency gains are never pruned.
    """
    del leaf
    return path_name(path).rsplit("/", 1)[-1] in ("query", "key", "conv", "kernel")


def prunable_parameters(params: Params) -> dict[str, tuple[int, ...]]:
    """{path: shape} of the prunable parameters, in the pytree's (sorted) order."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {path_name(p): tuple(leaf.shape) for p, leaf in leaves if is_prunable(p, leaf)}


def count_prunable(params: Params) -> int:
    """N of docs/methods.md#prunable-tensors: the number of prunable entries."""
    return int(sum(np.prod(s) for s in prunable_parameters(params).values()))


def gcn_chain(cfg: GCNConfig, *, n_nodes: int, n_features: int, n_classes: int) -> Chain:
    """The GCN's feature path as a `chain.Chain`, the one description that topology, costs,
    TCMP's export and the dangling count read.

    Per block b: link `block{b}/conv` (H, s_b, C_b), heads as groups, applied at the V nodes,
    followed by A_h (X W_h) (2 V² FLOPs per output unit); unless attention is "adjacency", its
    gate `block{b}/query`, `block{b}/key` (H, s_b, d), whose logits cost 2 V² per dim. Then
    `fc{i}/kernel` (I, O), the first reading the last block's H·C_b outputs tiled over the V
    nodes (the flatten), and `classifier/kernel`.
    """
    h, d, v = cfg.heads, cfg.attention_dim, n_nodes
    links = []
    width = n_features
    for b, filters in enumerate(cfg.filters):
        gate = None
        if cfg.attention != "adjacency":
            gate = Gate(
                f"block{b}/query", f"block{b}/key", (h, width, d), uses=v, mix_flops=2 * v * v
            )
        links.append(
            Link(
                f"block{b}/conv",
                (h, width, filters),
                group_axis=0,
                in_axis=1,
                out_axis=2,
                uses=v,
                mix_flops=2 * v * v,
                gate=gate,
                name=f"block{b}",
            )
        )
        width = h * filters
    tile = n_nodes
    for i, hidden in enumerate((*cfg.fc, n_classes)):
        name = f"fc{i}/kernel" if i < len(cfg.fc) else "classifier/kernel"
        links.append(Link(name, (width * tile, hidden), tile=tile))
        width, tile = hidden, 1
    return Chain(tuple(links))
