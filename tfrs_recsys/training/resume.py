"""Resuming a killed run: what every epoch leaves behind, and how ``--resume`` picks it up.

At the end of every epoch :class:`TrainingState`, a Keras callback placed after the
:class:`~tfrs_recsys.training.common.EpochEvaluator`, writes into the fit's ``resume/`` folder:

* ``epoch-<n>``: a ``tf.train.Checkpoint`` of the model and its optimizer (slots, step counts);
* ``sum-<n>.npz``: where the evaluator averages the epochs after the best, the sum of their weights;
* ``state.json``, last and atomically: the epoch, the evaluator's early-stopping state (best value, best
  epoch and its metrics, epochs without improvement, whether it stopped) and the checkpoints of the latest
  and of the best epoch. It only ever names complete checkpoints; the other epochs' are then removed.

``--resume`` reads it back (:meth:`TrainingState.restore`): the best epoch's weights become the evaluator's
best (and ``sum-<n>.npz`` its running sum), the latest epoch's weights and optimizer the model's, the log
drops the rows of epochs after the saved one, and training goes on at the next epoch
(``fit(initial_epoch=...)``) on input advanced past the epochs done (:func:`advance`), so that it sees the
batches the uninterrupted run saw. Stateful random ops (dropout masks, sampled negatives) start afresh: with
them a resumed run follows a slightly different path.

The folder goes when the run completes (:func:`tfrs_recsys.runs.mark_complete`).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfrs_recsys import paths, runs
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.training import distribution

PREFIX, SUM_PREFIX = "epoch-", "sum-"


def _read(checkpoint: tf.train.Checkpoint, path, *, partial: bool) -> None:
    """Restores ``checkpoint`` from ``path``; a saved state that does not fit (another optimizer's slots, say
    an older version's) is a :class:`ConfigError` naming it and ``--overwrite``."""
    try:
        status = checkpoint.read(str(path))
        if partial:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
    except (IndexError, tf.errors.DataLossError, tf.errors.OutOfRangeError) as error:
        reason = str(error).strip().splitlines()[0][:300]
        raise ConfigError(f"resume: the saved training state {path} is damaged or cut short ({reason}): pass "
                          "--overwrite to train the run again") from None
    except (ValueError, AssertionError) as error:
        reason = str(error).strip().splitlines()[0][:300]
        raise ConfigError(f"resume: the saved training state {path} does not fit this run's model and "
                          f"optimizer ({type(error).__name__}: {reason}), so the run cannot continue as it "
                          "was (a run begun by an older version of tfrs_recsys builds another model from the "
                          "same data, e.g. with features that version left out): pass --overwrite to train "
                          "it again") from None


def advance(dataset: tf.data.Dataset, epochs: int, steps_per_epoch: int, *,
            repeated: bool) -> tf.data.Dataset:
    """``dataset`` as the epochs after the first ``epochs`` read it.

    Args:
      dataset: The training input, built as the uninterrupted run built it (same seed).
      epochs: The epochs already done.
      steps_per_epoch: The batches of one epoch.
      repeated: Whether ``dataset`` repeats (``fit`` with ``steps_per_epoch``): one iterator reads the whole
        fit, and the batches of the epochs done are skipped. Otherwise it is read once per epoch (Keras
        makes a new iterator each epoch, and a seeded shuffle reshuffles with each): ``epochs`` iterators
        are made and dropped, so that the next ones shuffle as the uninterrupted run's did.

    Returns:
      The dataset to fit on.
    """
    if not epochs:
        return dataset
    if repeated:
        return dataset.skip(epochs * steps_per_epoch)
    for _ in range(epochs):
        iter(dataset)
    # Keras counts the failed last step of a fit's first epoch of unknown length as an optimizer step (in
    # Adam's bias correction). The uninterrupted run counted it in its first epoch; told the length, the
    # resumed fit does not count it again.
    return dataset.apply(tf.data.experimental.assert_cardinality(steps_per_epoch))


class TrainingState(tf.keras.callbacks.Callback):
    """Saves a fit's state at the end of every epoch; :meth:`restore` continues from it.

    Args:
      state_dir: Where this process writes the state (a run's ``resume/`` folder).
      source_dir: Where :meth:`restore` reads it (default ``state_dir``; a multi-worker job's other
        workers write a temporary folder and read the chief's).
      resume: Whether :meth:`restore` continues from the saved state (else it starts afresh).
    """

    def __init__(self, state_dir: str | Path, source_dir: str | Path | None = None, *, resume: bool = False):
        super().__init__()
        self.state_dir = paths.as_path(state_dir)
        self.source_dir = paths.as_path(source_dir or state_dir)
        self.resume = resume
        self.evaluator = None

    @classmethod
    def of_run(cls, cfg: TrainConfig, run_dir: str | Path, *parts: str) -> "TrainingState":
        """The state of the fit whose files go to ``run_dir/parts``, resumed when ``cfg.resume``.

        Args:
          cfg: The run's config (``output_dir``: the chief's run directory, read on resume).
          run_dir: This process's run directory.
          *parts: The fit's folder in it (none: the run's model; ``baseline``: ESMM's baseline).

        Returns:
          The callback.
        """
        return cls(paths.join(run_dir, *parts, runs.RESUME),
                   paths.join(cfg.output_dir or run_dir, *parts, runs.RESUME), resume=cfg.resume)

    def read(self) -> dict | None:
        """The saved state, None when there is none (or when not resuming)."""
        path = paths.join(self.source_dir, runs.RESUME_STATE)
        return paths.read_json(path) if self.resume and paths.isfile(path) else None

    def restore(self, model: tf.keras.Model, evaluator, build: Callable[[], object], epochs: int) -> int:
        """Continue the saved fit: weights, optimizer, early stopping, log; or start afresh.

        Call it after ``model.compile``, before ``fit``.

        Args:
          model: The model, as the killed run built and compiled it.
          evaluator: Its :class:`~tfrs_recsys.training.common.EpochEvaluator`; it gets the saved state,
            and is the state this callback saves from now on.
          build: Creates the model's variables (e.g. calls it on a batch), so that they can be read.
          epochs: The fit's epochs.

        Returns:
          The epoch to start at (``fit``'s ``initial_epoch``): 0 without a state, ``epochs`` when the
          saved fit had stopped early (nothing is left to train).
        """
        self.evaluator = evaluator
        initial = self._restore(model, evaluator, build, epochs)
        # Workers that would start at different epochs would wait on each other's collectives for ever.
        if not distribution.same_on_every_worker(model.distribute_strategy, initial):
            raise ConfigError(f"the workers would resume at different epochs: this one at {initial + 1}, "
                              f"from {self.source_dir}; put --output-dir on storage every worker reads (the "
                              "chief's resume/ folder), or pass --overwrite to start again")
        return initial

    def _restore(self, model: tf.keras.Model, evaluator, build: Callable[[], object], epochs: int) -> int:
        state = self.read()
        done = state["epoch"] if state else 0
        rows = runs.read_train_log(evaluator.run_dir)
        if len(rows) > done:  # epochs logged after the last saved state: they are trained again
            runs.rewrite_train_log(evaluator.run_dir, rows[:done])
        if state is None:
            if self.resume:
                print(f"resume: no training state in {self.source_dir}: training from the first epoch",
                      flush=True)
            return 0
        build()
        if hasattr(model.optimizer, "build"):  # a Keras optimizer's slots exist once built; legacy ones
            with model.distribute_strategy.scope():  # restore theirs when they are created; built under the
                model.optimizer.build(model.trainable_variables)  # strategy, as a first step builds it
        best = None
        if state["best_checkpoint"]:
            _read(tf.train.Checkpoint(model=model), paths.join(self.source_dir, state["best_checkpoint"]),
                  partial=True)
            best = model.get_weights()
            if evaluator.save_checkpoint:  # the run's best checkpoint may be of a later, lost epoch
                runs.save_checkpoint(model, evaluator.run_dir)
        latest = str(paths.join(self.source_dir, state["checkpoint"]))
        _read(tf.train.Checkpoint(model=model, optimizer=model.optimizer), latest, partial=False)
        sum_after_best = state.get("sum_after_best") and self._read_sum(state["sum_after_best"], best)
        evaluator.load_state(state["early_stopping"], best, sum_after_best or None)
        stopped = ", where it had stopped early" if state["stopped"] else ""
        print(f"resume: continuing after epoch {done}{stopped} (best {evaluator.monitor} "
              f"{evaluator.best_value} at epoch {evaluator.best_epoch})", flush=True)
        return epochs if state["stopped"] else min(done, epochs)

    def _read_sum(self, name: str, best: list | None) -> list:
        """The evaluator's running sum saved as ``name``, checked against the best epoch's weights."""
        path = paths.join(self.source_dir, name)
        try:
            with np.load(io.BytesIO(paths.read_bytes(path)), allow_pickle=False) as f:
                sums = [f[f"w{i}"] for i in range(len(f.files))]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            why = f"cannot be read ({type(error).__name__}: {error})"
        else:
            shapes = [w.shape for w in best or []]
            if [w.shape for w in sums] == shapes:
                return sums
            why = f"holds {len(sums)} arrays that do not match the model's {len(shapes)} weights"
        raise ConfigError(f"resume: {path} {why}; it is the sum of the weights averaged after the best "
                          "epoch, so the run cannot continue as it was: pass --overwrite to train it again")

    def on_epoch_end(self, epoch, logs=None):
        evaluator = self.evaluator
        if evaluator is None:
            raise RuntimeError("TrainingState.restore(model, evaluator, build) must run before fit")
        done = epoch + 1
        paths.makedirs(self.state_dir)
        name = f"{PREFIX}{done}"
        tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).write(
            str(paths.join(self.state_dir, name)))
        best, sums = evaluator.best_epoch, None
        if evaluator.sum_after_best is not None:
            buffer, sums = io.BytesIO(), f"{SUM_PREFIX}{done}.npz"
            np.savez(buffer, **{f"w{i}": w for i, w in enumerate(evaluator.sum_after_best)})
            paths.write_bytes(paths.join(self.state_dir, sums), buffer.getvalue())
        state = {"epoch": done, "stopped": bool(self.model.stop_training), "checkpoint": name,
                 "best_checkpoint": f"{PREFIX}{best}" if best else None, "sum_after_best": sums,
                 "early_stopping": evaluator.state()}
        paths.write_text_atomic(paths.join(self.state_dir, runs.RESUME_STATE),
                                json.dumps(runs.jsonable(state), indent=2) + "\n")
        keep = {name, state["best_checkpoint"], sums and sums.split(".")[0]}
        for file in paths.listdir(self.state_dir):
            if file.startswith((PREFIX, SUM_PREFIX)) and file.split(".")[0] not in keep:
                paths.remove(paths.join(self.state_dir, file), missing_ok=True)
