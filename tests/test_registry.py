"""One registry: every method (learned, baselines, dense) is a `PruningMethod` from
`api.get`; compositions keep a part's export; NNX States and lists of modules work as input;
a user's registered method trains by name."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_MODEL, tiny_config
from flax import nnx

from gcnprune_jax.config import METHODS
from gcnprune_jax.errors import ConfigError
from gcnprune_jax.pruning import api, baselines, shared
from gcnprune_jax.pruning.ctf import ctf
from gcnprune_jax.pruning.shared import keep_count
from gcnprune_jax.pruning.tcmp import tcmp
from gcnprune_jax.runner import run_training


def latents(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a/kernel": rng.normal(size=(6, 5)).astype(np.float32),
        "b/conv": rng.normal(size=(2, 3, 4)).astype(np.float32),
    }


def test_every_method_of_the_interface_is_in_the_one_registry():
    assert set(api.names()) == set(METHODS)
    for name in api.names():
        kwargs = {"model": TINY_MODEL, "n_nodes": 15} if name == "tcmp" else {}
        method = api.get(name, **kwargs)
        assert method.name == name and method.schedule in api.SCHEDULES


@pytest.mark.parametrize(
    ("name", "select"),
    [
        ("magnitude", lambda lat, r: baselines.magnitude_masks(lat, r, "global")),
        ("structured", lambda lat, r: baselines.structured_masks(lat, r, "column")),
        ("random", lambda lat, r: baselines.random_masks(lat, r, jax.random.PRNGKey(0))),
    ],
)
def test_baseline_export_is_its_selection_at_the_exact_rate(name, select):
    lat = latents()
    method = api.get(name)
    aux = method.init(lat, jax.random.PRNGKey(0))
    soft = method.mask(lat, aux, None)
    assert all(np.all(np.asarray(m) == 1) for m in soft.values())  # trains dense
    result = method.export(soft, lat, 0.8)
    expected = select(lat, 0.8)
    for path in lat:
        np.testing.assert_array_equal(result.masks[path], expected[path])
    assert result.kept == keep_count(54, 0.8)
    assert result.realized_rate == pytest.approx(1 - result.kept / 54)


def test_snip_export_explains_why_it_cannot_select():
    with pytest.raises(ConfigError, match="gradients"):
        api.get("snip").export({}, {}, 0.5)


def test_dense_keeps_everything():
    lat = latents()
    result = api.get("dense").export({k: np.ones_like(v) for k, v in lat.items()}, lat, 0.9)
    assert result.kept == result.total and result.realized_rate == 0.0


def test_compose_keeps_the_one_export_and_refuses_what_it_cannot_combine():
    plain = tcmp(model=TINY_MODEL, n_nodes=15, control=False)
    assert api.compose(ctf(), plain).export is plain.export
    # TCMP with its budget controller: the export gets TCMP's own part of the trained state.
    t = tcmp(model=TINY_MODEL, n_nodes=15)
    composed = api.compose(ctf(), t)
    assert composed.export is not None and composed.trainable_aux
    with pytest.raises(ConfigError, match="own export"):
        api.compose(t, tcmp(model=TINY_MODEL, n_nodes=15))
    with pytest.raises(ConfigError, match="select their masks once"):
        api.compose(ctf(), api.get("magnitude"))


class Net(nnx.Module):
    """A model the library did not write: prunable kernels in a list of modules."""

    def __init__(self, rngs):
        self.stem = nnx.Linear(4, 8, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(8, 8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)])

    def __call__(self, x):
        x = jax.nn.relu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return x


def test_nnx_state_with_lists_of_modules_is_pruned_in_place():
    graph, state = nnx.split(Net(nnx.Rngs(0)))
    leaves = api.prunable_leaves(state)
    assert {k: v.shape for k, v in leaves.items()} == {
        "stem/kernel": (4, 8),
        "blocks/0/kernel": (8, 8),
        "blocks/1/kernel": (8, 3),
    }
    method = api.get("ctf")
    aux = method.init(state, jax.random.PRNGKey(1))
    ctx = api.MaskContext(jnp.int32(5), jnp.int32(10), jnp.float32(0.7))
    masks = method.mask(state, aux, ctx)
    jitted = jax.jit(method.mask)(state, aux, ctx)
    for path in masks:
        np.testing.assert_allclose(masks[path], jitted[path], rtol=1e-5, atol=1e-7)
    effective = api.apply_masks(state, masks)
    model = nnx.merge(graph, effective)
    np.testing.assert_allclose(
        model.blocks[0].kernel.value, leaves["blocks/0/kernel"] * masks["blocks/0/kernel"]
    )
    assert model(jnp.ones((2, 4))).shape == (2, 3)


def test_a_pytree_without_prunable_leaves_is_a_clear_error():
    with pytest.raises(ConfigError, match="no prunable parameters"):
        api.apply_masks({"w": jnp.ones((3, 3))}, {})


def test_a_registered_method_trains_by_name(tmp_path):
    def entry_only(**hyper):
        return ctf(granularities=("entry",), **hyper)._replace(name="entry_only_test")

    api.register("entry_only_test", entry_only)
    cfg = tiny_config(epochs=4, chunk_epochs=2)
    cfg = cfg.replace(method="entry_only_test", target_rate=0.8)
    result = run_training(cfg, tmp_path / "run")
    assert result["method"] == "entry_only_test"
    assert result["realized_rate"] == pytest.approx(0.8, abs=1e-3)
    assert dataclasses.asdict(cfg.pruning) == result["config"]["pruning"]


def test_composed_tcmp_export_leaves_no_dangling_connection():
    from gcnprune_jax.models.gcn import build_gcn
    from gcnprune_jax.topology import dangling_connections

    _, latent = build_gcn(TINY_MODEL, n_nodes=15, n_features=12, n_classes=8,
                          adjacency=jnp.eye(15), key=jax.random.PRNGKey(0))  # fmt: skip
    composed = api.compose(ctf(), tcmp(model=TINY_MODEL, n_nodes=15))
    aux = composed.init(latent, jax.random.PRNGKey(1))
    ctx = api.MaskContext(jnp.int32(9), jnp.int32(10), jnp.float32(0.9))
    soft = {k: np.asarray(v) for k, v in composed.mask(latent, aux, ctx).items()}
    leaves = {k: np.asarray(v) for k, v in api.prunable_leaves(latent).items()}
    result = composed.export(soft, leaves, 0.9, aux=aux)
    assert (
        result.kept == round(0.1 * result.total + 0.5 - 1e-9)
        or abs(result.realized_rate - 0.9) < 1e-3
    )
    assert dangling_connections(result.masks, TINY_MODEL, n_nodes=15) == 0


def mlp_params(seed=0):
    """A model with names the library does not know, biases included."""
    rng = np.random.default_rng(seed)
    return {
        "w_in": jnp.asarray(rng.normal(size=(4, 16)), jnp.float32),
        "b_in": jnp.zeros(16, jnp.float32),
        "w_out": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
    }


def two_d(path, leaf):
    return leaf.ndim >= 2


@pytest.mark.parametrize("name", ["ctf", "ssp", "pmp", "magnitude"])
def test_select_prunes_a_model_with_arbitrary_names(name):
    params = mlp_params()
    method = api.get(name, select=two_d)
    assert set(api.prunable_leaves(params, two_d)) == {"w_in", "w_out"}
    aux = method.init(params, jax.random.PRNGKey(0))
    ctx = api.MaskContext(jnp.int32(5), jnp.int32(10), jnp.float32(0.75))
    masks = method.mask(params, aux, ctx)
    assert {k: v.shape for k, v in masks.items()} == {"w_in": (4, 16), "w_out": (16, 3)}
    effective = api.apply_masks(params, masks, method.select)
    np.testing.assert_array_equal(effective["b_in"], params["b_in"])  # not selected
    leaves = {k: np.asarray(v) for k, v in api.prunable_leaves(params, two_d).items()}
    soft = {k: np.asarray(v) for k, v in masks.items()}
    export = method.export or shared.exact_export
    extra = {"aux": aux} if method.trainable_aux and method.export is not None else {}
    result = export(soft, leaves, 0.75, **extra)
    assert result.kept == keep_count(4 * 16 + 16 * 3, 0.75)
    # the objective of the compiled train step uses the same selection
    objective = api.to_objective(method, 0.75)
    from gcnprune_jax.train import Context

    effective, penalty = objective.both(params, aux, Context(jnp.int32(5), jnp.int32(10)))
    assert set(effective) == set(params) and np.isfinite(float(penalty))


def test_convolution_kernels_are_pruned_by_output_filter():
    conv = nnx.Conv(2, 6, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    _, state = nnx.split(conv)
    leaves = {k: np.asarray(v) for k, v in api.prunable_leaves(state).items()}
    assert leaves["kernel"].shape == (3, 3, 2, 6)
    method = api.get("ctf")
    aux = method.init(state, jax.random.PRNGKey(0))
    ctx = api.MaskContext(jnp.int32(9), jnp.int32(10), jnp.float32(0.5))
    assert method.mask(state, aux, ctx)["kernel"].shape == (3, 3, 2, 6)
    # structured "column" pruning of a (kh, kw, I, O) kernel removes whole output filters
    masks = baselines.structured_masks(leaves, 0.5, "column")["kernel"]
    per_filter = masks.reshape(-1, 6).sum(axis=0)
    assert sorted(per_filter.tolist()) == [0, 0, 0, 18, 18, 18]
    with pytest.raises(ValueError, match="convolution kernel"):
        shared.as_gio(jnp.ones(5))


def test_selecting_a_leaf_without_a_gio_view_names_its_path():
    with pytest.raises(ConfigError, match=r"b_in with shapes \(16,\)"):
        api.prunable_leaves(mlp_params(), lambda path, leaf: True)
    with pytest.raises(ConfigError, match="b_in"):
        api.get("ctf", select=lambda path, leaf: True).init(mlp_params(), jax.random.PRNGKey(0))
