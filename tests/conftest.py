"""Shared test settings: small models so the suite stays fast on a 2-core CPU, and one XLA
compilation cache per test worker, shared with the command-line subprocesses it starts."""

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import jax
import pytest

from gcnprune_jax.config import RunConfig
from gcnprune_jax.models.gcn import GCNConfig
from gcnprune_jax.train import TrainConfig

TINY_MODEL = GCNConfig(heads=2, filters=(4,), attention_dim=4, fc=(16,))


def tiny_config(**train_overrides) -> RunConfig:
    train = dataclasses.replace(TrainConfig(epochs=6, chunk_epochs=2), **train_overrides)
    return RunConfig(dataset="synthetic", model=TINY_MODEL, train=train)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Never write parsed-data caches into the user's home from tests.
    monkeypatch.setenv("GCNPRUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


# The suite starts dozens of `gcnprune` subprocesses that compile the same tiny programs; JAX's
# persistent compilation cache lets each compile once per worker (about 20% of the CLI-heavy
# files' time on 2 cores). The executables are the ones XLA would build again, so results and
# digests do not change. One directory per test run (removed at the end) and per xdist worker,
# so no two processes write one cache at the same time.
_CACHE_ROOT = "GCNPRUNE_TEST_XLA_CACHE_ROOT"


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" not in os.environ and _CACHE_ROOT not in os.environ:
        os.environ[_CACHE_ROOT] = tempfile.mkdtemp(prefix="gcnprune-tests-xla-")
        config._gcnprune_cache_root = os.environ[_CACHE_ROOT]
    root = os.environ.get(_CACHE_ROOT)
    chosen = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if root is None or (chosen and not chosen.startswith(root)):  # the caller chose a cache
        return
    directory = str(Path(root) / os.environ.get("PYTEST_XDIST_WORKER", "main"))
    settings = {
        "JAX_COMPILATION_CACHE_DIR": directory,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    os.environ.update(settings)  # for the subprocesses
    jax.config.update("jax_compilation_cache_dir", directory)  # for this process
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    root = getattr(config, "_gcnprune_cache_root", None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
