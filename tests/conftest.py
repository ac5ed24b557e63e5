"""Shared test settings: small models so the suite stays fast on a 2-core CPU."""

import dataclasses

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
