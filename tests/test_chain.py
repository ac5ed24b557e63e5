"""`chain`: a model's feature path declared as data, read by liveness, TCMP and the FLOP counts.

The GCN's own chain is checked through `topology` / `costs` / TCMP (their tests run on
`models.gcn.gcn_chain`); here a model that is not the GCN: a grouped temporal convolution with
taps in a non-default layout, a flatten over positions, two dense layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gcnprune_jax import chain, fit
from gcnprune_jax.chain import Chain, Gate, Link
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.topology import hard_saturation

K, G, F, O0, P, H1, C = 2, 2, 3, 4, 5, 6, 3
PP = P - K + 1  # output positions of the valid temporal convolution


def conv_chain():
    return Chain(
        (
            # kernel (taps, groups, inputs, outputs): not the default layout
            Link("conv", (K, G, F, O0), group_axis=1, in_axis=2, out_axis=3, uses=PP),
            Link("fc", (PP * G * O0, H1), tile=PP),
            Link("head", (H1, C)),
        )
    )


def forward(w, x):
    """The network `conv_chain` describes, linear: x (P, F) -> (C,)."""
    h0 = sum(jnp.einsum("pi,gio->pgo", x[t : t + PP], w["conv"][t]) for t in range(K))
    flat = h0.reshape(-1)  # index p * (G * O0) + g * O0 + o: the tile convention
    return flat @ w["fc"] @ w["head"]


def random_masks(rng, net, density):
    return {name: rng.random(shape) < density for name, shape in net.shapes().items()}


@pytest.mark.parametrize("density", [0.15, 0.3, 0.6])
def test_live_is_where_a_weight_reaches_the_output(density):
    """With positive weights and inputs, a kept entry changes the output (its gradient is
    positive) exactly when it lies on an input→output path."""
    net = conv_chain()
    rng = np.random.default_rng(int(density * 100))
    x = jnp.asarray(rng.uniform(0.5, 1.5, (P, F)), jnp.float32)
    grad = jax.grad(lambda w, m: jnp.sum(forward(jax.tree.map(jnp.multiply, w, m), x)))
    seen_dangling = 0
    for _ in range(20):
        masks = random_masks(rng, net, density)
        w = {n: jnp.asarray(rng.uniform(0.5, 1.5, s), jnp.float32) for n, s in net.shapes().items()}
        g = grad(w, {n: jnp.asarray(m, jnp.float32) for n, m in masks.items()})
        alive = chain.live(net, masks)
        for name, mask in masks.items():
            np.testing.assert_array_equal(alive[name], mask & (np.asarray(g[name]) > 0), name)
        seen_dangling += chain.dangling_connections(net, masks)
    assert seen_dangling > 0  # the masks did exercise the removal of dangling entries


def test_consistent_with_hard_saturation_equals_live_under_jit():
    net = conv_chain()
    rng = np.random.default_rng(1)
    fn = jax.jit(lambda m: chain.consistent(net, m, h=hard_saturation))
    for _ in range(10):
        masks = random_masks(rng, net, 0.3)
        soft = fn({n: jnp.asarray(m, jnp.float32) for n, m in masks.items()})
        alive = chain.live(net, masks)
        for name in masks:
            np.testing.assert_array_equal(np.asarray(soft[name]) > 0.5, alive[name], name)
            assert set(np.unique(np.asarray(soft[name]))) <= {0.0, 1.0}


def test_flops_dense_unstructured_structured():
    net = conv_chain()
    ones = {n: np.ones(s, bool) for n, s in net.shapes().items()}
    dense = 2 * PP * K * G * F * O0 + 2 * PP * G * O0 * H1 + 2 * H1 * C
    assert chain.dense_flops(net) == dense
    assert chain.flops_unstructured(net, ones) == dense
    assert chain.flops_structured(net, ones) == dense
    # remove output (group 0, o = 0) of the convolution: its fc rows at every position dangle
    masks = {n: m.copy() for n, m in ones.items()}
    masks["conv"][:, 0, :, 0] = False
    assert chain.dangling_connections(net, masks) == PP * H1
    assert chain.flops_unstructured(net, masks) == dense - 2 * PP * K * F
    expected = 2 * PP * K * F * (2 * O0 - 1) + 2 * PP * (G * O0 - 1) * H1 + 2 * H1 * C
    assert chain.flops_structured(net, masks) == expected


def test_gate_dims_need_query_and_key_and_a_live_group():
    """A gated link (attention): a dim carries anything only with a kept query and key column,
    and its entries are live only if the group has a live output."""
    gate = Gate("q", "k", (2, 3, 2))
    net = Chain((Link("w", (2, 3, 4), group_axis=0, in_axis=1, out_axis=2, gate=gate),))
    masks = {"w": np.ones((2, 3, 4), bool), "q": np.ones((2, 3, 2), bool)}
    masks["k"] = np.ones((2, 3, 2), bool)
    masks["k"][0, :, 1] = False  # group 0, dim 1: no key column -> its query column dangles
    masks["w"][1] = False  # group 1 has no output: its whole attention dangles
    alive = chain.live(net, masks)
    assert not alive["q"][0, :, 1].any() and alive["q"][0, :, 0].all()
    assert not alive["q"][1].any() and not alive["k"][1].any()
    assert chain.dangling_connections(net, masks) == 3 + 2 * 3 * 2


def test_declaration_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="'fc' has 7 input units"):
        Chain((Link("conv", (3, 4)), Link("fc", (7, 2))))
    with pytest.raises(ValueError, match="twice"):
        Chain((Link("a", (3, 3)), Link("a", (3, 3))))
    with pytest.raises(ValueError, match="axes must differ"):
        Link("a", (3, 3, 3), in_axis=0, out_axis=0)
    with pytest.raises(ValueError, match="tile"):
        Link("a", (10, 3), tile=3)
    with pytest.raises(ValueError, match="gate has 3 groups"):
        Link("a", (2, 3, 4), group_axis=0, in_axis=1, out_axis=2, gate=Gate("q", "k", (3, 3, 2)))
    with pytest.raises(ValueError, match="at least one link"):
        Chain(())
    net = conv_chain()
    masks = {n: np.ones(s, bool) for n, s in net.shapes().items()}
    del masks["fc"]
    with pytest.raises(ValueError, match=r"missing \['fc'\]"):
        chain.live(net, masks)
    masks["fc"] = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="'fc' has shape"):
        chain.flops_structured(net, masks)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(2, 4, kernel_size=(3,), padding="VALID", rngs=rngs)
        self.head = nnx.Linear(4 * 6, 3, rngs=rngs)

    def __call__(self, x):  # x (B, 8, 2)
        return self.head(jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1))


def test_sequential_reads_an_nnx_state():
    _, state = nnx.split(_Net(nnx.Rngs(0)))
    net = chain.sequential(state, ["conv/kernel", "head/kernel"], uses={"conv/kernel": 6})
    assert [link.shape for link in net.links] == [(3, 2, 4), (24, 3)]
    assert net.links[1].tile == 6 and net.links[0].uses == 6
    assert chain.dense_flops(net) == 2 * 6 * 3 * 2 * 4 + 2 * 24 * 3
    with pytest.raises(ValueError, match="no parameter named"):
        chain.sequential(state, ["conv/kernel", "nope/kernel"])


def _mlp():
    k0, k1, k2 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "l0": {"kernel": jax.random.normal(k0, (12, 32)) / 12**0.5, "bias": jnp.zeros(32)},
        "l1": {"kernel": jax.random.normal(k1, (32, 32)) / 32**0.5, "bias": jnp.zeros(32)},
        "head": {"kernel": jax.random.normal(k2, (32, 3)) / 32**0.5, "bias": jnp.zeros(3)},
    }

    def apply(p, x):
        x = jax.nn.relu(x @ p["l0"]["kernel"] + p["l0"]["bias"])
        x = jax.nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"])
        return x @ p["head"]["kernel"] + p["head"]["bias"]

    return apply, params


def test_tcmp_prunes_a_users_mlp_given_its_chain():
    apply, params = _mlp()
    net = chain.sequential(params, ["l0/kernel", "l1/kernel", "head/kernel"])
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 12))
    y = rng.integers(0, 3, 120)
    x = (centers[y] + 0.7 * rng.normal(size=(120, 12))).astype(np.float32)
    total = sum(int(np.prod(s)) for s in net.shapes().values())
    pruned = fit.prune(apply, params, "tcmp", 0.95, (x, y), epochs=8, chain=net)
    assert sorted(pruned.masks) == sorted(net.shapes())
    assert sum(int(m.sum()) for m in pruned.masks.values()) == keep_count(total, 0.95)
    assert pruned.dangling_connections == 0
    assert pruned.flops["structured"] <= pruned.flops["dense"]
    assert pruned.flops["dense"] == chain.dense_flops(net)
    with pytest.raises(ConfigError, match="chain="):
        fit.prune(apply, params, "tcmp", 0.5, (x, y), epochs=4)


def test_ssp_never_prunes_the_columns_of_the_declared_logit_layer():
    from gcnprune_jax.pruning.ssp import KINDS, chosen_kinds

    gates = {"head/kernel": np.array([[0.0, 0.0, 0.0, 0.0]])}
    gates["head/kernel"][0, KINDS.index("column")] = 5.0  # the gate prefers whole columns
    assert chosen_kinds(gates)["head/kernel"] == ["column"]  # not the GCN's classifier name
    assert chosen_kinds(gates, "head/kernel")["head/kernel"] != ["column"]


def test_shrink_gives_a_smaller_dense_mlp_with_the_masked_logits():
    apply, params = _mlp()
    params = jax.tree.map(lambda a: a + 0.1, params)  # nonzero biases: dead units are not zero
    net = chain.sequential(params, ["l0/kernel", "l1/kernel", "head/kernel"])
    rng = np.random.default_rng(3)
    masks = {name: np.ones(shape, bool) for name, shape in net.shapes().items()}
    masks["l0/kernel"] = rng.random((12, 32)) < 0.7
    masks["l1/kernel"][[2, 5, 7], :] = False  # l0's units 2, 5, 7 feed nothing: removed
    masks["head/kernel"][[0, 4], :] = False  # l1's units 0 and 4 feed nothing: removed
    masks["l1/kernel"][:, 9] = False  # l1's unit 9 reads nothing but emits relu(bias): kept
    x = jnp.asarray(rng.normal(size=(16, 12)), jnp.float32)
    masked = jax.tree.map(lambda a: a, params)
    for name, mask in masks.items():
        layer = name.split("/")[0]
        masked[layer]["kernel"] = params[layer]["kernel"] * mask
    small = chain.shrink(params, masks, net)
    assert small.params["l0"]["kernel"].shape == (12, 29)
    assert small.params["l0"]["bias"].shape == (29,)
    assert small.params["l1"]["kernel"].shape == (29, 30)
    assert small.params["head"]["kernel"].shape == (30, 3)
    assert 9 in small.kept["l1/kernel"] and 0 not in small.kept["l1/kernel"]
    np.testing.assert_allclose(apply(small.params, x), apply(masked, x), rtol=1e-5, atol=1e-6)
    assert small.flops == 2 * (12 * 29 + 29 * 30 + 30 * 3) < chain.dense_flops(net)
    assert small.flops >= chain.flops_structured(net, masks)
    assert {n: m.shape for n, m in small.masks.items()} == small.chain.shapes()
    with pytest.raises(ValueError, match="per-unit parameter 'l0/nope'"):
        chain.shrink(params, masks, net, per_unit={"l0/kernel": ["l0/nope"]})
    with pytest.raises(ValueError, match="grouped or gated"):
        chain.shrink({}, {}, conv_chain())


def test_shrink_an_nnx_convolution_model_in_place():
    graph, state = nnx.split(_Net(nnx.Rngs(0)))
    net = chain.sequential(state, ["conv/kernel", "head/kernel"], uses={"conv/kernel": 6})
    masks = {"conv/kernel": np.ones((3, 2, 4), bool), "head/kernel": np.ones((24, 3), bool)}
    masks["head/kernel"][1::4] = False  # every position's channel 1 unread: channel removed
    masks["conv/kernel"][0, 1, 2] = False
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 8, 2)), jnp.float32)
    reference = nnx.merge(graph, api_masked(state, masks))(x)
    small = chain.shrink(state, masks, net)
    assert small.chain.shapes() == {"conv/kernel": (3, 2, 3), "head/kernel": (18, 3)}
    np.testing.assert_allclose(nnx.merge(graph, small.params)(x), reference, rtol=1e-5, atol=1e-6)
    assert small.flops == 2 * 6 * 3 * 2 * 3 + 2 * 18 * 3


def api_masked(state, masks):
    from gcnprune_jax.pruning import api

    return api.apply_masks(state, masks, lambda path, leaf: leaf.ndim >= 2)
