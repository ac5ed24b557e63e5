"""Dataset loading: SBU Kinect Interaction, FPHA, and the embedded synthetic set."""

from __future__ import annotations

import os
from pathlib import Path

from gcnprune_jax.data.base import SkeletonDataset
from gcnprune_jax.data.cache import CacheDirArg
from gcnprune_jax.data.fpha import check_fpha_counts, load_fpha
from gcnprune_jax.data.sbu import check_sbu_counts, load_sbu
from gcnprune_jax.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "SkeletonDataset",
    "check_fpha_counts",
    "check_sbu_counts",
    "load_dataset",
    "load_fpha",
    "load_sbu",
]

DATASETS: tuple[str, ...] = ("synthetic", "sbu", "fpha")
DATA_DIR_ENV = "GCNPRUNE_DATA_DIR"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: CacheDirArg = None,
    seed: int = 0,
    verify_counts: bool = True,
) -> SkeletonDataset:
    """Load a dataset by name, as the CLI's `--dataset` / `--data-dir` options do.

    Args:
      name: "synthetic", "sbu" or "fpha".
      data_dir: the dataset's own root directory (the folder holding SBU's set folders, or
        FPHA's split file). None: `$GCNPRUNE_DATA_DIR/<name>`. Ignored for "synthetic".
      cache_dir: parsed-array cache location; None = default, False = off (see `data.cache`).
      seed: only for "synthetic", passed to `make_synthetic`.
      verify_counts: check the real dataset's known counts (data README §3), so that a
        truncated or altered copy is refused instead of silently giving other numbers. Off
        only for small test trees in the same format.

    Returns:
      The `SkeletonDataset` (sequences (T, V, 3) float32).

    Raises:
      ConfigError: unknown `name`.
      DataError: no directory given and `$GCNPRUNE_DATA_DIR` unset, or the files are missing or
        malformed.
    """
    if name == "synthetic":
        # Imported lazily: the synthetic generator is a separate module and real-data users
        # should not pay for (or depend on) it.
        from gcnprune_jax.data.synthetic import make_synthetic

        return make_synthetic(seed=seed)
    loaders = {"sbu": load_sbu, "fpha": load_fpha}
    if name not in loaders:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if data_dir is not None:
        root = Path(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV]) / name
    else:
        raise DataError(
            f"no data directory for dataset {name!r}: pass --data-dir DIR (the {name} root) or "
            f"set {DATA_DIR_ENV} to a directory containing {name}/"
        )
    ds = loaders[name](root, cache_dir=cache_dir)
    if verify_counts:
        check = {"sbu": check_sbu_counts, "fpha": check_fpha_counts}[name]
        check(ds, root=root.expanduser().absolute())
    return ds
