"""Orbax checkpoints of a run: the training state (latent params, optimizer and method state,
step, key, stacked over folds) and a JSON record (config, epoch reached, history).

Writes are atomic: Orbax writes each checkpoint into a temporary folder and renames it into
place once complete, so a kill during a write leaves the previous checkpoint as the latest
one; the unfinished folder is removed when the directory is opened again."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from gcnprune_jax import faults
from gcnprune_jax.errors import CheckpointError, OutputError


class Checkpointer:
    """Saves and restores a run's state under `directory` (OUT/checkpoint), keyed by epoch."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2) -> None:
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        )
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options)
        except OSError as err:
            raise OutputError(
                f"cannot create the checkpoint directory {self.directory}: {err}"
            ) from None

    def latest_epoch(self) -> int | None:
        return self.manager.latest_step()

    def save(self, epoch: int, state: Any, record: dict[str, Any]) -> None:
        """Write and wait: a kill right after returning never loses this checkpoint, and a kill
        before it returns leaves the previous one intact."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
        )
        try:
            faults.hit("write")
            self.manager.save(epoch, args=args, force=True)
            faults.hit("save")
            self.manager.wait_until_finished()
        except OSError as err:
            previous = [e for e in self.manager.all_steps() if e != epoch]
            kept = f"epoch {max(previous)}" if previous else "none yet"
            raise OutputError(
                f"cannot write the checkpoint of epoch {epoch} to {self.directory}: {err}. "
                f"The last complete checkpoint ({kept}) is kept; make room or make the "
                "directory writable, then continue with --resume"
            ) from None

    def finish(self) -> None:
        """Wait for a write in progress (after an interrupt) to complete."""
        self.manager.wait_until_finished()

    def read_record(self, epoch: int | None = None) -> dict[str, Any]:
        """The JSON record alone (config, epoch, history), without restoring arrays."""
        epoch = self._epoch(epoch)
        restored = self.manager.restore(
            epoch, args=ocp.args.Composite(record=ocp.args.JsonRestore())
        )
        return dict(restored["record"])

    def restore(self, like_state: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore the state into the structure, shapes and dtypes of `like_state`."""
        epoch = self._epoch(epoch)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        try:
            restored = self.manager.restore(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, FileNotFoundError) as err:
            raise CheckpointError(
                f"checkpoint {self.directory} (epoch {epoch}) does not match this run's model "
                f"and optimizer state: {err}"
            ) from err
        return restored["state"], dict(restored["record"])

    def _epoch(self, epoch: int | None) -> int:
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        return epoch

    def close(self) -> None:
        self.manager.close()
