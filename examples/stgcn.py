"""Prune an ST-GCN-like model of your own with `gcnprune_jax.fit.prune`.

The model is plain JAX (a dict of arrays and an `apply` function), not this project's GCN:
each block is a spatial graph convolution over the skeleton's joints (a `(C_in, C)` kernel)
followed by a temporal convolution over frames (a `(k, C, C)` kernel, viewed by the methods as
k groups of `(C, C)`: CTF and structured pruning remove whole rows, columns or taps), then a
global average pool and a classifier. It is trained on the embedded synthetic skeleton data
(`--dataset sbu` or `fpha` reads the real data from $GCNPRUNE_DATA_DIR) with each method at one
rate, and each pruned network is evaluated on the test split:

    python examples/stgcn.py --rate 0.9 --methods dense,magnitude,ctf,ssp,tcmp

For SBU the split is fold 1 of the 5-fold protocol's training and test sequences. The model
declares its chain (`stgcn_chain`), so each line also gives the dangling connections, the
structured FLOPs (fraction of dense) and the FLOPs of the same network shrunk into a smaller
dense one (`chain.shrink`, logits unchanged). Measured on the synthetic data (300 epochs,
blocks 16,32; `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c K python
examples/stgcn.py --rate R`, one core of a 2-core x86-64 CPU each, 70-90 s per method; on both
cores of the idle machine, unpinned, `python examples/stgcn.py --rate 0.9` gave the same figures
in 215 s for its five methods):

    rate  method     test %  dangling  structured FLOPs  shrunk FLOPs
    0.9   dense        77.5         0             1.000         1.000
    0.9   magnitude    55.8        10             0.944         0.979
    0.9   ctf          22.5       130             0.552         0.723
    0.9   ssp          12.5       722             0.000         0.567
    0.9   tcmp         22.5         0             0.954         0.954
    0.98  magnitude    12.5       127             0.024         0.091
    0.98  ctf          12.5       144             0.000         0.000
    0.98  ssp          12.5       144             0.000         0.000
    0.98  tcmp         30.4         0             0.335         0.335

With `--choose-lam 1,10,100`, CTF, SSP and TCMP take the budget weight that scores best on a
validation part of the training split (20% per class; `fit.choose`), then train again on the
whole split; same command otherwise, test accuracy in % (chosen lam), with the validation
accuracies it chose from:

    rate  method  test %        validation % at lam 1 / 10 / 100
    0.9   ctf     42.5 (1)      53.1 / 50.0 / 22.9
    0.9   ssp     26.7 (1)      31.2 / 12.5 / 12.5
    0.9   tcmp    57.1 (10)     18.8 / 56.2 / 31.2
    0.98  ctf     12.5 (1)      12.5 / 12.5 / 12.5
    0.98  ssp     12.5 (1)      12.5 / 12.5 / 12.5
    0.98  tcmp    26.7 (100)    12.5 / 21.9 / 27.1

At 0.9 the chosen weights lift CTF from 22.5 to 42.5, SSP from 12.5 to 26.7 and TCMP from 22.5
to 57.1, above magnitude pruning's 55.8; at 0.98 CTF and SSP stay at chance for every lam tried,
and TCMP's choice tests lower than its default (26.7 against 30.4). Each choice trains four
times (three trials and the refit): about 8 minutes per method on a shared core.

Chance is 12.5%. Structured FLOPs of 0 mean no input reaches the output; shrinking keeps units
that emit a constant activation(bias) into a kept weight, so its FLOPs can exceed the structured
count. TCMP is the only method without dangling connections and the only one above chance at
0.98. An earlier version of this script (no chain; 7,216 prunable weights; dense at 76.2%
then) measured other methods, test accuracy in %:

    rate  dense  magnitude  structured   ctf   pmp
    0.7    76.2       65.4        55.0  45.4  65.0
    0.9    76.2       55.8        12.5  22.5  47.1

On a network this small, CTF and structured pruning lose far more than magnitude pruning and PMP
(chance is 12.5%). CTF's figures are with its current default, fine-tuning the crisp masks for
the last 30% of the epochs; before that default (masks fixed at the end) they were 24.2 and
12.5, because CTF's soft phase does not train here: at 0.7 its training cross-entropy never
leaves ln 8 = 2.079 (chance), while its budget penalty (20-80 over the first 60 of 100 epochs)
outweighs it 10-40 times. It is the budget's gradient, not the masks (they keep 94% of each
kernel's norm at initialization): the entry factor alone takes the cross-entropy from 2.07 to
0.97 in 100 epochs with lam=0 (dense training: 2.07 to 0.94), to 1.78 with lam=10 and to 2.05
with the default lam=1e3; all four factors at lam=10 reach 2.05, and the coarse factors alone
and the plain band-stop (zero_floor=False) stall at the default lam too. The budget's pull on
each soft mask value is 2 lam e / N (e the relative excess, N the prunable count), so lam=10 at
this N = 7,216 pulls about as hard per weight as the default lam=1e3 at SBU's N = 988,160; the
difference presumably lies in the size of the cross-entropy's gradients, which was not measured.
There is no rule that sets lam from the model; `fit.choose` (`--choose-lam`) picks it on
validation data.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcnprune_jax import chain, fit
from gcnprune_jax.data import load_dataset
from gcnprune_jax.data.features import normalized_adjacency
from gcnprune_jax.runner import validation_part
from gcnprune_jax.train import TrainConfig

FRAMES = 16


def resample(sequence: np.ndarray, frames: int = FRAMES) -> np.ndarray:
    """(T, V, 3) -> (frames, V, 3) by linear interpolation in time, centred on its mean."""
    t = np.linspace(0, len(sequence) - 1, frames)
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(sequence) - 1)
    frac = (t - low)[:, None, None]
    out = (1 - frac) * sequence[low] + frac * sequence[high]
    return (out - out.mean(axis=(0, 1), keepdims=True)).astype(np.float32)


def init_stgcn(key, in_channels, channels, n_classes, taps=5):
    """Parameters: blocks of (spatial kernel (C_in, C), temporal kernel (taps, C, C), bias)."""
    params = {"blocks": [], "head": {}}
    c_in = in_channels
    for c in channels:
        key, k1, k2 = jax.random.split(key, 3)
        params["blocks"].append(
            {
                "spatial": {"kernel": jax.random.normal(k1, (c_in, c)) / np.sqrt(c_in)},
                "temporal": {"kernel": jax.random.normal(k2, (taps, c, c)) / np.sqrt(taps * c)},
                "bias": jnp.zeros(c),
            }
        )
        c_in = c
    key, k3 = jax.random.split(key)
    params["head"] = {
        "kernel": jax.random.normal(k3, (c_in, n_classes)) / np.sqrt(c_in),
        "bias": jnp.zeros(n_classes),
    }
    return params


def make_apply(adjacency):
    a = jnp.asarray(adjacency, jnp.float32)

    def apply(params, x):  # x (B, T, V, C) -> logits (B, n_classes)
        for block in params["blocks"]:
            x = jnp.einsum("uv,btvc->btuc", a, x) @ block["spatial"]["kernel"]
            b, t, v, c = x.shape
            per_joint = x.transpose(0, 2, 1, 3).reshape(b * v, t, c)
            y = jax.lax.conv_general_dilated(
                per_joint,
                block["temporal"]["kernel"],
                window_strides=(1,),
                padding="SAME",
                dimension_numbers=("NWC", "WIO", "NWC"),
            )
            y = y.reshape(b, v, t, -1).transpose(0, 2, 1, 3)
            x = jax.nn.relu(y + block["bias"])
        return x.mean(axis=(1, 2)) @ params["head"]["kernel"] + params["head"]["bias"]

    return apply


def stgcn_chain(params, n_nodes: int, frames: int = FRAMES) -> chain.Chain:
    """The model's feature path as data (docs/api.md, "Your own model's chain"): per block the
    spatial kernel (C_in, C) and the temporal kernel (taps, C, C), each applied at every frame
    of every joint, the joint aggregation A (X W) costing 2 V^2 per output unit and frame; then
    the classifier, which reads the pooled channels."""
    uses = frames * n_nodes
    links = []
    for i, block in enumerate(params["blocks"]):
        spatial, temporal = block["spatial"]["kernel"], block["temporal"]["kernel"]
        links.append(
            chain.Link(
                f"blocks/{i}/spatial/kernel",
                spatial.shape,
                uses=uses,
                mix_flops=2 * n_nodes * n_nodes * frames,
            )
        )
        links.append(chain.Link(f"blocks/{i}/temporal/kernel", temporal.shape, uses=uses))
    links.append(chain.Link("head/kernel", params["head"]["kernel"].shape))
    return chain.Chain(tuple(links))


def split(ds, dataset):
    """(train x, y), (test x, y): the official split, or SBU's fold 1 (its test fold)."""
    x = np.stack([resample(s) for s in ds.sequences])
    y = np.asarray(ds.labels)
    groups = np.asarray(ds.groups)
    test = groups == 0 if dataset == "sbu" else groups == 1
    return (x[~test], y[~test]), (x[test], y[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic", choices=("synthetic", "sbu", "fpha"))
    parser.add_argument("--rate", type=float, default=0.9)
    parser.add_argument("--methods", default="dense,magnitude,ctf,ssp,tcmp")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--channels", default="16,32", help="channels per block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--choose-lam",
        default="",
        help="comma-separated budget weights: for ctf, ssp and tcmp, choose lam among them on a "
        "validation part (20%%, per class) of the training split, then retrain on all of it "
        "(fit.choose); default: the methods' own lam",
    )
    args = parser.parse_args()
    lams = [float(v) for v in args.choose_lam.split(",") if v.strip()]

    ds = load_dataset(args.dataset)
    (x_train, y_train), (x_test, y_test) = split(ds, args.dataset)
    apply = make_apply(normalized_adjacency(ds.n_nodes, ds.edges))
    channels = [int(c) for c in args.channels.split(",")]
    params = init_stgcn(jax.random.PRNGKey(args.seed), x_train.shape[-1], channels, ds.n_classes)
    net = stgcn_chain(params, ds.n_nodes)  # its kernels are what the methods prune
    per_unit = {f"blocks/{i}/temporal/kernel": [f"blocks/{i}/bias"] for i in range(len(channels))}
    print(
        f"{args.dataset}: {len(y_train)} training / {len(y_test)} test sequences, "
        f"{ds.n_classes} classes; ST-GCN blocks {channels}, rate {args.rate}"
    )
    options = {
        "epochs": args.epochs,
        "train_config": TrainConfig(chunk_epochs=min(50, args.epochs)),
        "seed": args.seed,
        "chain": net,
    }
    val = validation_part(np.ones(len(y_train), bool), y_train, 0.2, args.seed)
    for method in args.methods.split(","):
        start = time.perf_counter()
        if lams and method in ("ctf", "ssp", "tcmp"):
            choice = fit.choose(
                apply,
                params,
                method,
                args.rate,
                (x_train[~val], y_train[~val]),
                (x_train[val], y_train[val]),
                {"lam": lams},
                **options,
            )
            tried = ", ".join(
                f"{t['lam']:g}: {100 * t['val_accuracy']:.1f}%" for t in choice.trials
            )
            chosen = choice.settings["lam"]
            print(f"{method:>10}: validation accuracy by lam {tried} -> lam {chosen:g}")
            pruned = choice.pruned
        else:
            pruned = fit.prune(apply, params, method, args.rate, (x_train, y_train), **options)
        logits = apply(pruned.params, jnp.asarray(x_test))
        accuracy = float(np.mean(np.argmax(np.asarray(logits), axis=1) == y_test))
        soft = "" if pruned.soft_rate is None else f" (soft {pruned.soft_rate:.3f})"
        # the same network as a smaller dense one: units nothing reads removed, same logits
        small = chain.shrink(pruned.params, pruned.masks, net, per_unit=per_unit)
        gap = float(jnp.max(jnp.abs(apply(small.params, jnp.asarray(x_test)) - logits)))
        flops = pruned.flops
        print(
            f"{method:>10}: test accuracy {100 * accuracy:5.1f}%, realized rate "
            f"{pruned.realized_rate:.4f}{soft}, {pruned.dangling_connections} dangling, "
            f"structured FLOPs {flops['structured'] / flops['dense']:.3f} of dense, shrunk "
            f"{small.flops / flops['dense']:.3f} (logits within {gap:.0e}), "
            f"{time.perf_counter() - start:.0f} s"
        )


if __name__ == "__main__":
    main()
