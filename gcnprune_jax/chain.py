"""The feature path of a network, described once as data: a chain of links.

A model that wants dangling-connection counts, FLOP counts or TCMP's topologically consistent
masks publishes its feature path as a `Chain`: an ordered tuple of `Link`s, one per prunable
tensor that carries the features from the input to the logits. Every function here reads only
that description; none of them knows a layer name. The project's GCN declares its chain in
`models.gcn.gcn_chain`; a user declares the chain of their own model the same way (see
docs/api.md, "Your own model's chain").

Units. Each link maps the units of its input (I of them) to G·O output units, numbered
g·O + o. Its kernel may have any layout: `in_axis` and `out_axis` name the unit axes,
`group_axis` (optional) the channels (attention heads: each group reads every input and owns O
outputs), and every other axis is a tap (a temporal or spatial kernel offset) that connects
the same input unit to the same output unit. An entry (g, taps, i, o) is the connection
i → (g, o). Link k's input units are link k−1's output units, `tile` times over (a flatten
over graph nodes: input index v·n + j reads unit j), so link k has
I_k = tile_k · G_{k−1} · O_{k−1}. The first link's input units are the model's features.

A `Gate` is the attention of a link: a query and a key tensor reading the same inputs with the
same groups. Dim j of group g carries anything iff both its query and its key column have a kept
entry from an accessible input; its entries count as live iff that dim is on and the group
(the head) is live, i.e. has an output on some input→output path.

Costs (per sample, 2 FLOPs per multiply-add): a link's weight products cost 2 · uses · entries
(uses = how often the kernel is applied: graph nodes, spatial positions); `mix_flops` is the
cost per output unit of the products between activations that follow (the GCN's A_h (X W_h),
2 V² per unit); a gate's `mix_flops` is its cost per (group, dim) (the logits (X Q_h)(X K_h)ᵀ).

Functions (masks: {path: array of the parameter's shape}, nonzero / > 0 = kept):
- `live`, `dangling_connections`: which kept entries lie on an input→output path (numpy, crisp);
- `unit_states`, `consistent`: the differentiable counterparts (jnp, traceable), with "any" as
  a saturation h(Σ …) and "and" as a product (TCMP's supervisory networks);
- `dense_flops`, `flops_unstructured`, `flops_structured`.
- `shrink`: the masked network as a smaller dense one (plain dense and convolution links).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

Saturation = Callable[[jax.Array], jax.Array]


def _axes(shape: tuple[int, ...], group_axis: int | None, in_axis: int, out_axis: int, what: str):
    """The permutation to the canonical (G, T, I, O) layout, and that layout's sizes."""
    nd = len(shape)
    if nd < 2:
        raise ValueError(f"{what}: a kernel needs at least 2 dimensions, got shape {shape}")
    named = [a for a in (group_axis, in_axis, out_axis) if a is not None]
    if any(not -nd <= a < nd for a in named):
        raise ValueError(f"{what}: axes {named} out of range for shape {shape}")
    g = None if group_axis is None else group_axis % nd
    i, o = in_axis % nd, out_axis % nd
    if len({a % nd for a in named}) != len(named):
        raise ValueError(f"{what}: group, input and output axes must differ, got {named}")
    taps = [a for a in range(nd) if a not in (g, i, o)]
    perm = ([] if g is None else [g]) + taps + [i, o]
    sizes = (
        1 if g is None else shape[g],
        int(np.prod([shape[a] for a in taps], dtype=np.int64)),
        shape[i],
        shape[o],
    )
    return tuple(perm), sizes


@dataclasses.dataclass(frozen=True)
class Gate:
    """Attention on a link: `query` and `key` tensors of the same shape, (G, I, d) in the
    layout given by the axes, with the link's groups G and inputs I."""

    query: str
    key: str
    shape: tuple[int, ...]
    group_axis: int | None = 0
    in_axis: int = 1
    out_axis: int = 2
    uses: int = 1
    mix_flops: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        perm, sizes = _axes(
            self.shape, self.group_axis, self.in_axis, self.out_axis, f"gate {self.query!r}"
        )
        object.__setattr__(self, "_perm", perm)
        object.__setattr__(self, "_sizes", sizes)
        if self.query == self.key:
            raise ValueError(f"gate: query and key must be different tensors, got {self.query!r}")
        _check_counts(f"gate {self.query!r}", self.uses, self.mix_flops)


@dataclasses.dataclass(frozen=True)
class Link:
    """One prunable tensor of the feature path (module docstring: units, taps, costs).

    path: the parameter's '/'-joined name (as `models.gcn.path_name` writes it).
    shape: the parameter's shape.
    in_axis, out_axis, group_axis: the input-unit, output-unit and (optional) group axes;
      every other axis is a tap. Defaults: (..., I, O), no groups (a dense or conv kernel).
    uses: how many times the kernel is applied per sample (FLOPs).
    tile: this link's input units are the previous link's output units repeated `tile` times
      (a flatten over graph nodes or positions, index v·n + j); 1 otherwise.
    mix_flops: FLOPs per output unit of products between activations after this link.
    gate: the attention tensors of this link, if any.
    name: the prefix of this link's entries in `unit_states` (default: `path`).
    """

    path: str
    shape: tuple[int, ...]
    in_axis: int = -2
    out_axis: int = -1
    group_axis: int | None = None
    uses: int = 1
    tile: int = 1
    mix_flops: int = 0
    gate: Gate | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        perm, sizes = _axes(
            self.shape, self.group_axis, self.in_axis, self.out_axis, f"link {self.path!r}"
        )
        object.__setattr__(self, "_perm", perm)
        object.__setattr__(self, "_sizes", sizes)
        _check_counts(f"link {self.path!r}", self.uses, self.mix_flops)
        if not (isinstance(self.tile, int) and self.tile >= 1) or sizes[2] % self.tile:
            raise ValueError(
                f"link {self.path!r}: tile must be a positive int dividing its {sizes[2]} "
                f"inputs, got {self.tile!r}"
            )
        if self.gate is not None:
            gsz = self.gate._sizes
            if (gsz[0], gsz[2]) != (sizes[0], sizes[2]):
                raise ValueError(
                    f"link {self.path!r}: its gate has {gsz[0]} groups and {gsz[2]} inputs, "
                    f"the link {sizes[0]} and {sizes[2]}"
                )

    @property
    def grouped(self) -> bool:
        """Whether the link is computed per group (it has a group axis or a gate)."""
        return self.group_axis is not None or self.gate is not None

    @property
    def units_out(self) -> int:
        return self._sizes[0] * self._sizes[3]

    @property
    def prefix(self) -> str:
        return self.path if self.name is None else self.name


def _check_counts(what: str, uses: Any, mix_flops: Any) -> None:
    for label, value in (("uses", uses), ("mix_flops", mix_flops)):
        if not (isinstance(value, (int, np.integer)) and value >= 0):
            raise ValueError(f"{what}: {label} must be a non-negative int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Chain:
    """The feature path: links in forward order, the last one producing the logits."""

    links: tuple[Link, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "links", tuple(self.links))
        if not self.links:
            raise ValueError("a chain needs at least one link")
        seen: set[str] = set()
        for k, link in enumerate(self.links):
            if not isinstance(link, Link):
                raise TypeError(f"chain link {k} must be a Link, got {type(link).__name__}")
            names = [link.path] + ([] if link.gate is None else [link.gate.query, link.gate.key])
            for name in names:
                if name in seen:
                    raise ValueError(f"chain names tensor {name!r} twice")
                seen.add(name)
            if k == 0:
                continue
            previous = self.links[k - 1]
            if link._sizes[2] != link.tile * previous.units_out:
                raise ValueError(
                    f"link {link.path!r} has {link._sizes[2]} input units, but the previous "
                    f"link {previous.path!r} has {previous.units_out} output units"
                    + (f" (× tile {link.tile})" if link.tile > 1 else "")
                )

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """{path: shape} of every tensor the chain names (gates first, then their link)."""
        out: dict[str, tuple[int, ...]] = {}
        for link in self.links:
            if link.gate is not None:
                out[link.gate.query] = link.gate.shape
                out[link.gate.key] = link.gate.shape
            out[link.path] = link.shape
        return out

    def select(self) -> Callable[[tuple[Any, ...], Any], bool]:
        """A `select=(path, leaf) -> bool` that picks exactly the chain's tensors."""
        from gcnprune_jax.models.gcn import path_name  # here: models.gcn imports this module

        names = frozenset(self.shapes())
        return lambda path, leaf: path_name(path) in names

    def full(self, masks: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """`masks` restricted to the chain's tensors, all-ones for a chain tensor it lacks
        (a tensor that is not pruned keeps every entry)."""
        return {
            name: np.asarray(masks[name]).astype(bool) if name in masks else np.ones(shape, bool)
            for name, shape in self.shapes().items()
        }

    def check(self, masks: Mapping[str, Any], *, shapes_only: bool = False) -> dict[str, Any]:
        """Validate that `masks` has exactly the chain's tensors with their shapes; return them
        as boolean numpy arrays (or unchanged if `shapes_only`, for traced values)."""
        expected = self.shapes()
        missing = sorted(set(expected) - set(masks))
        extra = sorted(set(masks) - set(expected))
        if missing or extra:
            raise ValueError(f"masks do not match the chain: missing {missing}, unexpected {extra}")
        for name, shape in expected.items():
            if tuple(np.shape(masks[name])) != shape:
                raise ValueError(
                    f"mask {name!r} has shape {tuple(np.shape(masks[name]))}, the chain "
                    f"declares {shape}"
                )
        if shapes_only:
            return dict(masks)
        return {name: np.asarray(m).astype(bool) for name, m in masks.items()}


def _canon(x: Any, part: Link | Gate) -> Any:
    """x of the part's shape → its (G, T, I, O) view (numpy or jnp)."""
    return x.transpose(part._perm).reshape(part._sizes)


def _uncanon(x: Any, part: Link | Gate) -> Any:
    """The inverse of `_canon`."""
    moved = tuple(part.shape[a] for a in part._perm)
    return x.reshape(moved).transpose(tuple(np.argsort(part._perm)))


def _gate_parts(link: Link, m: Mapping[str, Any]) -> tuple[Any, Any]:
    gate = link.gate
    return _canon(m[gate.query], gate), _canon(m[gate.key], gate)


# ---------------------------------------------------------------------------------------------
# Crisp liveness (numpy)


def live(chain: Chain, masks: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """The kept entries of every tensor of the chain that lie on some input→output path.

    Forward: every model input is accessible; output unit (g, o) of a link is accessible iff it
    has a kept entry (any tap) from an accessible input; dim j of a gate's group g is on iff
    its query and its key column both have such an entry. Backward: every logit is
    co-accessible; an input unit of a link is co-accessible iff it has a kept entry into a
    co-accessible output, or into an on dim of a live group of the gate (a group is live iff
    one of its outputs is accessible and co-accessible); tiled inputs reduce by "any".
    Entry (g, taps, i, o) is live iff kept, input i accessible and output (g, o)
    co-accessible; a gate entry (g, taps, i, j) iff kept, input i accessible, group g live and
    dim j on. Returns {path: bool array of the parameter's shape} in the order of `masks`.
    """
    m = chain.check(masks)
    c = {link.path: _canon(m[link.path], link) for link in chain.links}
    acc_in, acc_out, dims = [], [], []
    acc = np.ones(chain.links[0]._sizes[2] // chain.links[0].tile, dtype=bool)
    for link in chain.links:
        acc = np.tile(acc, link.tile)
        acc_in.append(acc)
        reach = acc[None, None, :, None] & c[link.path]
        if link.gate is not None:
            q, k = _gate_parts(link, m)
            a = acc[None, None, :, None]
            dims.append((a & q).any(axis=(1, 2)) & (a & k).any(axis=(1, 2)))  # (G, d)
        else:
            dims.append(None)
        out = reach.any(axis=(1, 2))  # (G, O)
        acc_out.append(out)
        acc = out.reshape(-1)

    result: dict[str, np.ndarray] = {}
    co = np.ones(chain.links[-1].units_out, dtype=bool)
    for k in reversed(range(len(chain.links))):
        link = chain.links[k]
        cm = c[link.path]
        groups, _, _, n_out = link._sizes
        co_out = co.reshape(groups, n_out)
        a = acc_in[k][None, None, :, None]
        result[link.path] = _uncanon(cm & a & co_out[:, None, None, :], link)
        co = (cm & co_out[:, None, None, :]).any(axis=(0, 1, 3))
        if link.gate is not None:
            q, kk = _gate_parts(link, m)
            used = (acc_out[k] & co_out).any(axis=1)[:, None] & dims[k]  # (G, d)
            co = co | ((q | kk) & used[:, None, None, :]).any(axis=(0, 1, 3))
            result[link.gate.query] = _uncanon(q & a & used[:, None, None, :], link.gate)
            result[link.gate.key] = _uncanon(kk & a & used[:, None, None, :], link.gate)
        if link.tile > 1:
            co = co.reshape(link.tile, -1).any(axis=0)
    return {name: result[name] for name in masks}


def dangling_connections(chain: Chain, masks: Mapping[str, ArrayLike]) -> int:
    """Number of kept entries that lie on no input→output path: Σ (mask & ~live)."""
    alive = live(chain, masks)
    return int(
        sum(np.count_nonzero(np.asarray(masks[n]).astype(bool) & ~a) for n, a in alive.items())
    )


# ---------------------------------------------------------------------------------------------
# Differentiable propagation (TCMP's supervisory networks)


def _as_float(mask: jax.typing.ArrayLike) -> jax.Array:
    mask = jnp.asarray(mask)
    return mask if jnp.issubdtype(mask.dtype, jnp.floating) else mask.astype(jnp.float32)


def _grouped(x: jax.Array, part: Link | Gate) -> jax.Array:
    """(G, I, O) of a mask, taps summed (a tap is one more connection i → o)."""
    canon = _canon(x, part)
    return canon[:, 0] if part._sizes[1] == 1 else canon.sum(axis=1)


def unit_states(
    chain: Chain, masks: Mapping[str, jax.typing.ArrayLike], *, h: Saturation
) -> dict[str, jax.Array]:
    """Accessibility and co-accessibility of every link's units: `live`'s propagation with
    "any" → h(Σ …) and "and" → product.

    masks: {path: mask in [0, 1] of the parameter's shape}, exactly the chain's tensors.
    h: the saturation (`topology.hard_saturation`, `topology.soft_saturation(τ_h)`).
    Returns, for every link with prefix p (`Link.name`, default its path):
      "p/acc_in" (I,): accessibility of its inputs (the previous link's outputs, tiled);
      "p/co_out" (G, O) if the link is grouped, else (O,): co-accessibility of its outputs;
      for a grouped link, "p/acc_out" (G, O) and "p/group_live" (G,) = h(Σ_o acc_out co_out);
      for a gate, "p/query_on" and "p/key_on" (G, d): h(Σ_i acc_in[i] query[g, i, j]).
    With 0/1 masks and h = min(1, x) every state is the 0/1 value of `live`'s boolean.
    Traceable (jit, vmap, grad); the chain is static.
    """
    chain.check(masks, shapes_only=True)
    m = {name: _as_float(mask) for name, mask in masks.items()}
    links = chain.links
    dtype = m[links[0].path].dtype
    states: dict[str, jax.Array] = {}

    acc = jnp.ones(links[0]._sizes[2] // links[0].tile, dtype)
    for link in links:
        p = link.prefix
        if link.tile > 1:
            acc = jnp.tile(acc, link.tile)
        states[f"{p}/acc_in"] = acc
        if not link.grouped:
            acc = h(acc @ _grouped(m[link.path], link)[0])
            continue
        if link.gate is not None:
            q = _grouped(m[link.gate.query], link.gate)
            k = _grouped(m[link.gate.key], link.gate)
            states[f"{p}/query_on"] = h(jnp.einsum("i,hij->hj", acc, q))
            states[f"{p}/key_on"] = h(jnp.einsum("i,hij->hj", acc, k))
        acc_out = h(jnp.einsum("i,hic->hc", acc, _grouped(m[link.path], link)))  # (G, O)
        states[f"{p}/acc_out"] = acc_out
        acc = acc_out.reshape(-1)

    co = jnp.ones(links[-1].units_out, dtype)
    for link in reversed(links):
        p = link.prefix
        if not link.grouped:
            states[f"{p}/co_out"] = co
            co = h(_grouped(m[link.path], link)[0] @ co)
        else:
            groups, _, _, n_out = link._sizes
            co_out = co.reshape(groups, n_out)
            states[f"{p}/co_out"] = co_out
            group_live = h(jnp.sum(states[f"{p}/acc_out"] * co_out, axis=1))  # (G,)
            states[f"{p}/group_live"] = group_live
            co_sum = jnp.einsum("hic,hc->i", _grouped(m[link.path], link), co_out)
            if link.gate is not None:
                used = group_live[:, None] * states[f"{p}/query_on"] * states[f"{p}/key_on"]
                qk = _grouped(m[link.gate.query], link.gate) + _grouped(m[link.gate.key], link.gate)
                co_sum = co_sum + jnp.einsum("hij,hj->i", qk, used)
            co = h(co_sum)
        if link.tile > 1:
            co = h(co.reshape(link.tile, -1).sum(axis=0))
    return states


def consistent(
    chain: Chain, masks: Mapping[str, jax.typing.ArrayLike], *, h: Saturation
) -> dict[str, jax.Array]:
    """Consistent masks M̃ (docs/methods.md#tcmp): mask ⊙ (source accessibility) ⊙ (target
    co-accessibility), the differentiable `live`. With the states of `unit_states`:
      link entry (g, taps, i, o) → mask · acc_in[i] · co_out[g, o];
      gate entry (g, taps, i, j) → mask · acc_in[i] · group_live[g] · query_on[g, j] ·
        key_on[g, j].
    Returns {path: array of the mask's shape} in the order of `masks`. With 0/1 masks and
    h = min(1, x) it equals `live` (as 0/1 floats). Traceable (jit, vmap, grad).
    """
    states = unit_states(chain, masks, h=h)
    out: dict[str, jax.Array] = {}
    for link in chain.links:
        p = link.prefix
        acc_in = states[f"{p}/acc_in"][None, None, :, None]
        co_out = states[f"{p}/co_out"]
        co_out = (co_out[None] if co_out.ndim == 1 else co_out)[:, None, None, :]
        mask = _canon(_as_float(masks[link.path]), link)
        out[link.path] = _uncanon(mask * acc_in * co_out, link)
        if link.gate is not None:
            used = (
                states[f"{p}/group_live"][:, None] * states[f"{p}/query_on"] * states[f"{p}/key_on"]
            )[:, None, None, :]
            for name in (link.gate.query, link.gate.key):
                gm = _canon(_as_float(masks[name]), link.gate)
                out[name] = _uncanon(gm * acc_in * used, link.gate)
    return {name: out[name] for name in masks}


# ---------------------------------------------------------------------------------------------
# Costs


def dense_flops(chain: Chain) -> int:
    """FLOPs of one dense forward pass for one sample (weight products and `mix_flops`)."""
    total = 0
    for link in chain.links:
        total += 2 * link.uses * int(np.prod(link.shape)) + link.mix_flops * link.units_out
        if link.gate is not None:
            gate = link.gate
            groups, _, _, d = gate._sizes
            total += 2 * gate.uses * 2 * int(np.prod(gate.shape)) + gate.mix_flops * groups * d
    return total


def flops_unstructured(chain: Chain, masks: Mapping[str, ArrayLike]) -> int:
    """FLOPs of one forward pass for one sample when only kept entries are multiplied:
    2 · uses · (kept entries) per tensor; `mix_flops` per output unit with a kept entry and per
    gate dim whose query and key columns both have one."""
    m = chain.check(masks)
    total = 0
    for link in chain.links:
        cm = _canon(m[link.path], link)
        total += 2 * link.uses * int(cm.sum()) + link.mix_flops * int(cm.any(axis=(1, 2)).sum())
        if link.gate is not None:
            q, k = _gate_parts(link, m)
            total += 2 * link.gate.uses * (int(q.sum()) + int(k.sum()))
            dims = q.any(axis=(1, 2)) & k.any(axis=(1, 2))
            total += link.gate.mix_flops * int(dims.sum())
    return total


def flops_structured(chain: Chain, masks: Mapping[str, ArrayLike]) -> int:
    """Dense FLOPs of one forward pass for one sample of the compacted network: everything off
    every input→output path (`live`) removed, then per link and group with n_r input rows and
    n_c output columns holding a live entry, 2 · uses · T · n_r · n_c + mix_flops · n_c
    (T taps); per gate group with n_d live dims and rows_q, rows_k live query / key rows,
    2 · uses · T · (rows_q + rows_k) · n_d + mix_flops · n_d."""
    alive = live(chain, masks)
    total = 0
    for link in chain.links:
        cm = _canon(alive[link.path], link)
        taps = link._sizes[1]
        n_c = cm.any(axis=(1, 2)).sum(axis=1)  # (G,)
        n_r = cm.any(axis=(1, 3)).sum(axis=1)
        total += int(np.sum(2 * link.uses * taps * n_r * n_c + link.mix_flops * n_c))
        if link.gate is not None:
            gate = link.gate
            q, k = _canon(alive[gate.query], gate), _canon(alive[gate.key], gate)
            n_d = (q.any(axis=(1, 2)) & k.any(axis=(1, 2))).sum(axis=1)
            rows = q.any(axis=(1, 3)).sum(axis=1) + k.any(axis=(1, 3)).sum(axis=1)
            total += int(np.sum(2 * gate.uses * gate._sizes[1] * rows * n_d + gate.mix_flops * n_d))
    return total


def sequential(
    params: Mapping[str, Any], paths: list[str], *, uses: Mapping[str, int] | None = None
) -> Chain:
    """The chain of a plain stack of dense or convolution layers: kernels in forward order,
    each (..., I, O) with taps in front (Flax `nnx.Linear` / `nnx.Conv` layout), no groups.

    params: a pytree of the model's parameters (dict or `nnx.State`); paths: the kernels'
    '/'-joined names in forward order. uses: {path: applications per sample} (output positions
    of a convolution; default 1). A kernel whose input count is a multiple of the previous
    output count is read as a flatten over positions (`tile`).
    """
    from gcnprune_jax.models.gcn import path_name  # here: models.gcn imports this module

    leaves = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    links = []
    previous = None
    for path in paths:
        if path not in leaves:
            raise ValueError(f"no parameter named {path!r}; parameters: {sorted(leaves)[:12]}")
        shape = tuple(np.shape(leaves[path]))
        tile = 1
        if previous is not None and shape[-2] != previous:
            if previous and shape[-2] % previous == 0:
                tile = shape[-2] // previous
            else:
                raise ValueError(
                    f"{path!r} has {shape[-2]} inputs, not a multiple of the previous "
                    f"kernel's {previous} outputs"
                )
        links.append(Link(path, shape, tile=tile, uses=int((uses or {}).get(path, 1))))
        previous = shape[-1]
    return Chain(tuple(links))


@dataclasses.dataclass(frozen=True)
class Shrunk:
    """A network made smaller by `shrink`.

    params: the model's parameters, same pytree structure (dict or `nnx.State`), with the
      removed units sliced out of the kernels and their per-unit vectors, kernels masked.
    masks: {link path: the crisp mask of the smaller kernel}.
    kept: {link path: indices of the output units the link keeps}.
    chain: the chain of the smaller network (same links, smaller shapes).
    flops: `dense_flops(chain)` of the smaller network, per sample.
    """

    params: Any
    masks: dict[str, np.ndarray]
    kept: dict[str, np.ndarray]
    chain: Chain
    flops: int


def shrink(
    params: Any,
    masks: Mapping[str, ArrayLike],
    chain: Chain,
    *,
    per_unit: Mapping[str, list[str]] | None = None,
) -> Shrunk:
    """Remove from a declared chain every output unit whose outgoing weights are all pruned,
    so the masked network runs as a smaller dense one with the same outputs.

    Walking back from the logits: an output unit of link k is kept iff some kept entry of link
    k+1 (any tap, any tile position) reads it from a kept output; the logits are all kept and
    the model's input features are never removed. A removed unit contributes nothing to the
    output whatever its activation and bias, so this is exact for any model that the chain
    describes. A unit with no kept input but kept outgoing weights still emits activation(bias)
    and stays (the project's GCN folds such units into the next bias, `compact.compact`, which
    knows its activations), so the smaller network's FLOPs can exceed `flops_structured`,
    which removes everything off an input→output path.

    params: the parameters (the chain's paths as `models.gcn.path_name` writes them).
    masks: {link path: mask}, nonzero = kept. per_unit: {link path: [paths of vectors indexed
      by that link's output units along their last axis]} (biases, normalization scales);
      default: the sibling `bias` of a kernel named `.../kernel` when it exists.
    Grouped and gated links (attention heads) are not supported: `ValueError`.
    """
    from gcnprune_jax.models.gcn import path_name  # here: models.gcn imports this module

    m = chain.check(chain.full(masks))  # a link without a mask keeps every entry
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_name(p) for p, _ in flat]
    leaves = dict(zip(names, (leaf for _, leaf in flat), strict=True))
    for link in chain.links:
        if link.grouped:
            raise ValueError(
                f"shrink: link {link.path!r} is grouped or gated; only plain dense and "
                "convolution links can be shrunk (the GCN has `compact.compact`)"
            )
        if link.path not in leaves:
            raise ValueError(f"shrink: no parameter named {link.path!r}")

    vectors: dict[str, list[str]] = {}
    for link in chain.links:
        if per_unit is not None and link.path in per_unit:
            paths = list(per_unit[link.path])
        elif link.path.endswith("kernel") and link.path[: -len("kernel")] + "bias" in leaves:
            paths = [link.path[: -len("kernel")] + "bias"]
        else:
            paths = []
        for p in paths:
            if p not in leaves:
                raise ValueError(f"shrink: per-unit parameter {p!r} of {link.path!r} not found")
            if np.shape(leaves[p])[-1:] != (link.units_out,):
                raise ValueError(
                    f"shrink: per-unit parameter {p!r} has shape {np.shape(leaves[p])}; its "
                    f"last axis must be {link.path!r}'s {link.units_out} output units"
                )
        vectors[link.path] = paths

    # walk back from the logits: which output units of each link are read by a kept entry
    keep_out: list[np.ndarray] = [np.zeros(0, bool)] * len(chain.links)
    keep_out[-1] = np.ones(chain.links[-1].units_out, bool)
    for k in range(len(chain.links) - 1, 0, -1):
        link = chain.links[k]
        cm = _canon(m[link.path], link)[0]  # (T, I, O): no groups
        rows = cm[:, :, keep_out[k]].any(axis=(0, 2))  # (I,)
        keep_out[k - 1] = rows.reshape(link.tile, -1).any(axis=0)

    replaced: dict[str, Any] = {}
    new_masks: dict[str, np.ndarray] = {}
    kept: dict[str, np.ndarray] = {}
    new_links = []
    for k, link in enumerate(chain.links):
        out_idx = np.flatnonzero(keep_out[k])
        if k == 0:
            in_idx = np.arange(link._sizes[2])
        else:
            in_idx = np.flatnonzero(np.tile(keep_out[k - 1], link.tile))
        in_axis, out_axis = link.in_axis % len(link.shape), link.out_axis % len(link.shape)
        mask = np.take(np.take(m[link.path], in_idx, in_axis), out_idx, out_axis)
        kernel = np.asarray(leaves[link.path])
        kernel = np.take(np.take(kernel, in_idx, in_axis), out_idx, out_axis)
        replaced[link.path] = jnp.asarray(kernel * mask, dtype=kernel.dtype)
        for p in vectors[link.path]:
            replaced[p] = jnp.asarray(np.take(np.asarray(leaves[p]), out_idx, axis=-1))
        new_masks[link.path] = mask
        kept[link.path] = out_idx
        new_links.append(dataclasses.replace(link, shape=mask.shape))
    small = Chain(tuple(new_links))
    new_params = jax.tree_util.tree_unflatten(
        treedef, [replaced.get(name, leaf) for name, (_, leaf) in zip(names, flat, strict=True)]
    )
    return Shrunk(new_params, new_masks, kept, small, dense_flops(small))
