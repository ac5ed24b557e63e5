"""Pinned results of the project's GCN, so that refactoring the code around it (one model
description, one registry) provably changes nothing.

Each pin is a tiny synthetic run (8 epochs, chunks of 4, rate 0.9, every method with its
defaults). On the machine kind the pins were recorded on (same JAX version, backend and CPU
model), the `params_digest` must be bit-identical. Elsewhere XLA may compile different but
equally valid floating-point code, so the test then checks the kept count exactly and the
parameters' sum and absolute sum to a relative 1e-4 (any behavioural change moves them far more).
To re-pin after an intended change of behaviour, run `python tests/test_digest_pins.py`.
"""

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config

from gcnprune_jax.config import method_defaults
from gcnprune_jax.runner import load_checkpoint, run_training


class Pin(NamedTuple):
    params_digest: str
    params_kept: int
    sum: float
    abs_sum: float


# Recorded with jax 0.10.2 on CPU, "AMD EPYC" (x86_64, AVX2 without AVX-512), flags digest below.
PINNED_ON = ("0.10.2", "cpu", "AMD EPYC", "fb86c92f4654")
PINS = {
    "magnitude": Pin(
        "24e9ce6dc6e3e0c7c396ec8653f66e054a035e1ae033c002b2dc55adde3fcc96",
        234,
        4.88319588297054,
        322.60197048484224,
    ),
    "ctf": Pin(  # re-pinned when the consistent export became CTF's default
        "c13d0d120cd82052f5bd861ae1faaccfb61971f9f779c7f66232ca512051b961",
        234,
        6.242311029520351,
        319.7063830496627,
    ),
    "ssp": Pin(  # re-pinned when the budget controller became SSP's default
        "a8b53ed294a2280081151959708c1a51d481f3d05450728b8e7f23a916855d7f",
        234,
        6.145127907860115,
        316.385312376412,
    ),
    "tcmp": Pin(
        "0df648d5f430b569a94e8ec6a729d9aa00e7845e028843ca89af1ac89adffed9",
        234,
        6.2169530103274155,
        320.74519126603263,
    ),
    "pmp": Pin(  # re-pinned when the consistent export became PMP's default
        "bc474b1e0f537f69b2d3dc7ee96691001c08b62163250c8b6501a0b1cf21ae4d",
        234,
        5.028018049750244,
        323.4517108204018,
    ),
}


def machine() -> tuple[str, str, str, str]:
    """(JAX version, backend, CPU model, digest of the CPU's feature flags). XLA compiles for
    the features it finds (AVX-512 or not, ...), and two CPUs sold under one model name
    ("AMD EPYC" in a virtual machine) may expose different ones, so the flags are part of it."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                names = sorted(line.split(":", 1)[1].split())
                flags = hashlib.sha256(" ".join(names).encode()).hexdigest()[:12]
    except OSError:
        pass
    return jax.__version__, jax.default_backend(), model, flags


def measure(method: str, out: Path) -> Pin:
    cfg = tiny_config(epochs=8, chunk_epochs=4)
    cfg = cfg.replace(
        method=method,
        target_rate=0.9,
        pruning=dataclasses.replace(cfg.pruning, **method_defaults(method)),
    )
    result = run_training(cfg, out)
    _, state, _ = load_checkpoint(out)
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.latent)]
    return Pin(
        result["params_digest"],
        result["params_kept"],
        float(sum(leaf.sum() for leaf in leaves)),
        float(sum(np.abs(leaf).sum() for leaf in leaves)),
    )


@pytest.mark.parametrize("method", sorted(PINS))
def test_pinned_results_unchanged(method, tmp_path):
    got, pin = measure(method, tmp_path / method), PINS[method]
    assert got.params_kept == pin.params_kept
    if machine() == PINNED_ON:
        assert got.params_digest == pin.params_digest
    else:
        assert got.sum == pytest.approx(pin.sum, rel=1e-4)
        assert got.abs_sum == pytest.approx(pin.abs_sum, rel=1e-4)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps({m: measure(m, Path(tmp) / m)._asdict() for m in sorted(PINS)}, indent=1))
        print("machine:", machine())
