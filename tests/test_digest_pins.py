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
PINNED_ON = ("0.10.2", "cpu", "AMD EPYC", "ecfefe0ffbf1")
PINS = {
    "magnitude": Pin(
        "bbc5e38e428e98b360e888a137d6f3a0b111ce0f7369f250f8f70f41de8a89be",
        234,
        4.883195307274946,
        322.601970948037,
    ),
    "ctf": Pin(  # re-pinned when fine-tuning became CTF's default
        "7233f266a1c5e44be54d2a5e3e2a9044c91f4970d9440a6a170768e8628b917e",
        234,
        6.2647487506619655,
        319.6837345767417,
    ),
    "ssp": Pin(  # re-pinned when the budget controller became SSP's default
        "bb378696b60f3f84ac1912a07993f41820e27c947426778ddbc8e3b0fbb2505e",
        234,
        6.145127872297053,
        316.38531232862533,
    ),
    "tcmp": Pin(
        "698927b6a365ac1c37d8f07f961907ae32e9a9f27d2c3acccd1c554751bca80d",
        234,
        6.216952983319061,
        320.74519129583496,
    ),
    "pmp": Pin(
        "8a6b04784c04f8f7559824c203ff3795e94c88742ad40881ccbe48295692f076",
        234,
        5.085391407832503,
        323.4681180368061,
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
