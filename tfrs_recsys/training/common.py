"""What every training run shares: the per-epoch evaluator (log, early stopping, best or averaged weights),
plots.

The run directory itself, its files and who reads them, is :mod:`tfrs_recsys.runs`.
"""
from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from tfrs_recsys import paths, run_lock, run_reuse, runs
from tfrs_recsys.checkpoints import read_weights
from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.training import distribution


def completed_run(cfg: TrainConfig, model: str) -> dict | None:
    """Checks ``cfg.output_dir`` before anything is loaded or built (:func:`tfrs_recsys.run_reuse.check`).

    Args:
      cfg: The run's config.
      model: ``retrieval``, ``esmm`` or ``deepfm``.

    Returns:
      With ``--resume`` on a run that completed: its test metrics (there is nothing to train). Else None.

    Raises:
      ConfigError: the directory holds a run this one may not write over (the error says what to pass).
    """
    if cfg.output_dir and paths.isdir(cfg.output_dir) and distribution.cluster_size(
            distribution.read_tf_config()) <= 1:  # another training there is said before the data is read
        run_lock.take(cfg.output_dir)
    try:
        if run_reuse.check(cfg, model) != run_reuse.COMPLETE:
            return None
    except ConfigError:  # refused: this process will not write there
        run_lock.release(cfg.output_dir)
        raise
    run_lock.release(cfg.output_dir)
    print(f"{model}: the run in {cfg.output_dir} is complete: nothing to resume", flush=True)
    return paths.read_json(paths.join(cfg.output_dir, runs.TEST_METRICS))


def finish_run(run_dir: Path | str, metrics: Mapping[str, Any], *, chief: bool = True) -> None:
    """Write the test metrics and the training curves, then mark the run complete
    (:func:`tfrs_recsys.runs.mark_complete`); a non-chief worker's temporary directory goes.

    Args:
      run_dir: the run directory.
      metrics: the test metrics.
      chief: whether this process writes the run directory (else it removes its temporary one).
    """
    runs.write_test_metrics(run_dir, metrics)
    plot_curves(run_dir)
    runs.mark_complete(run_dir)
    runs.release(run_dir, chief=chief)


# patience 0: stop after this many training steps without a better validation score (at least 3 epochs):
# a validation score moves by about its standard error from epoch to epoch, so a count of epochs would
# stop a run of 20-step epochs on noise (or before a slow start has begun) and wait long on 500-step ones.
PATIENCE_STEPS = 500


# An epoch of fewer steps than this is short: a smaller batch gives the same data more steps.
FEW_STEPS = 200
RANKER_BATCHES = (64, 512)  # the smallest and the largest batch --batch-size 0 picks for a ranker


def ranker_batch(cfg: TrainConfig, rows: int) -> int:
    """A ranker's global batch: ``cfg.batch_size``, or for 0 the largest power of two in
    :data:`RANKER_BATCHES` that makes an epoch of ``rows`` at least :data:`FEW_STEPS` steps.

    A small log trained in large batches makes short epochs that end before the model has learned
    (a 24,000-row log in 512-row batches: 47 steps an epoch); 512 from about 100,000 rows on.
    """
    if cfg.batch_size:
        return cfg.batch_size
    smallest, largest = RANKER_BATCHES
    fitting = max(rows // FEW_STEPS, 1).bit_length() - 1  # log2 of the largest power of 2 <= rows/FEW_STEPS
    return min(largest, max(smallest, 1 << fitting))


def say_batch(cfg: TrainConfig, rows: int) -> None:
    """Prints the batch :func:`ranker_batch` picked, when it picked one."""
    if not cfg.batch_size:
        batch = ranker_batch(cfg, rows)
        print(f"training: batches of {batch} rows, {math.ceil(rows / batch)} steps an epoch of {rows} rows "
              f"(--batch-size 0: a power of two from {RANKER_BATCHES[0]} to {RANKER_BATCHES[1]}, the largest "
              f"that makes an epoch {FEW_STEPS} steps or more where the rows allow)", flush=True)


def patience_epochs(patience: int, steps_per_epoch: int) -> int:
    """``patience``, or for 0: :data:`PATIENCE_STEPS` in epochs of ``steps_per_epoch``, at least 3."""
    if patience:
        return patience
    return max(3, math.ceil(PATIENCE_STEPS / max(steps_per_epoch, 1)))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


class EpochEvaluator(tf.keras.callbacks.Callback):
    """Evaluates after every epoch, logs, stops early and keeps the best weights.

    ``eval_fn(model) -> dict`` computes validation metrics (e.g. exact full-catalog
    NDCG@10, which Keras' own metrics cannot). ``monitor`` names one of them; larger
    is better when ``mode == "max"``. At the end of training the best weights are
    restored, so the model in memory is the checkpointed one.

    With ``average_after_best`` the final weights are instead the mean of the best epoch's and those of
    the ``k`` epochs trained after it (the ones early stopping waits through),
    ``w = (w_best + w_best+1 + ... + w_best+k) / (k + 1)``: one epoch's weights carry that epoch's noise,
    their average less of it (as stochastic weight averaging). An epoch whose validation value or weights
    are not finite is left out. The running sum is part of the resumable state.
    """

    def __init__(self, eval_fn: Callable[[tf.keras.Model], Mapping[str, float]], run_dir: str | Path, *,
                 monitor: str, mode: str = "max", patience: int = 3, save_checkpoint: bool = True,
                 average_after_best: bool = False):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.eval_fn = eval_fn
        self.run_dir = paths.as_path(run_dir)
        self.monitor = monitor
        self.mode = mode
        self.patience = max(int(patience), 1)
        self.save_checkpoint = save_checkpoint
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.epochs_run = 0
        self.train_logs: dict[int, dict[str, float]] = {}  # epoch -> the training metrics Keras logged
        self.validation_logs: dict[int, dict[str, float]] = {}  # epoch -> the validation metrics
        self._best_weights = None
        self.average_after_best = average_after_best
        self.averaged_epochs = 0  # the k of the class docstring
        self.sum_after_best: list | None = None  # sum of the weights of those k epochs
        self._wait = 0
        self._epoch_start = 0.0
        self._writer = tf.summary.create_file_writer(str(paths.join(run_dir, runs.TENSORBOARD, "validation")))

    def _improved(self, value: float) -> bool:
        better = self.best_value is None or (value > self.best_value if self.mode == "max"
                                             else value < self.best_value)
        return math.isfinite(value) and better

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = dict(self.eval_fn(self.model))
        if self.monitor not in metrics:
            raise KeyError(f"eval_fn returned {sorted(metrics)}, which lacks the monitored metric "
                           f"'{self.monitor}'")
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._epoch_start, 3)}
        self.train_logs[epoch + 1] = {k: float(v) for k, v in (logs or {}).items()}
        row.update(self.train_logs[epoch + 1])
        row.update({f"val_{k}": v for k, v in metrics.items()})
        self.validation_logs[epoch + 1] = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        runs.append_log(self.run_dir, row)
        with self._writer.as_default():
            for k, v in metrics.items():
                if _is_number(v):
                    tf.summary.scalar(k, float(v), step=epoch + 1)
        value = float(metrics[self.monitor])
        self.epochs_run = epoch + 1
        if self._improved(value):
            self.best_value, self.best_epoch, self._wait = value, epoch + 1, 0
            self.best_metrics = dict(metrics)
            # With a checkpoint on disk the best weights are read back from it at the end: no second copy
            # of the model (embedding tables of millions of rows) stays in memory. Averaging sums arrays.
            on_disk = self.save_checkpoint and not self.average_after_best
            self._best_weights = None if on_disk else self.model.get_weights()
            self.sum_after_best, self.averaged_epochs = None, 0
            if self.save_checkpoint:
                runs.save_checkpoint(self.model, self.run_dir)
        else:
            self._wait += 1
            weights = (self.model.get_weights() if self.average_after_best and self._best_weights is not None
                       and math.isfinite(value) else [])
            if weights and all(np.isfinite(w).all() for w in weights if np.issubdtype(w.dtype, np.floating)):
                if self.sum_after_best is None:
                    self.sum_after_best = weights
                else:
                    for total, w in zip(self.sum_after_best, weights):
                        total += w
                self.averaged_epochs += 1
        # Under multi-worker training every worker evaluates the same weights on the same data, so the
        # decisions agree; agreeing explicitly keeps one worker from leaving the others mid-collective.
        if distribution.any_worker(self.model.distribute_strategy, self._wait >= self.patience):
            self.model.stop_training = True
        best = "none yet" if self.best_value is None else f"{self.best_value:.5f} at epoch {self.best_epoch}"
        lead = "\n" if self.params.get("verbose") == 1 else ""  # the progress bar's line is still open
        print(f"{lead}epoch {epoch + 1}: {self.monitor}={value:.5f} (best {best})", flush=True)

    def state(self) -> dict:
        """The early-stopping state a resumed run continues from (:mod:`tfrs_recsys.training.resume`)."""
        return {"monitor": self.monitor, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics, "epochs_run": self.epochs_run, "wait": self._wait,
                "averaged_epochs": self.averaged_epochs}

    def load_state(self, state: Mapping[str, Any], best_weights: list | None,
                   sum_after_best: list | None = None) -> None:
        """Continue from a saved :meth:`state`.

        Args:
          state: What :meth:`state` returned in the stopped run.
          best_weights: The model's weights at its best epoch (``get_weights()``), None before one.
          sum_after_best: Its :attr:`sum_after_best` (None: no epoch averaged yet).
        """
        if state["monitor"] != self.monitor:
            raise ValueError(f"the saved state follows '{state['monitor']}', this run '{self.monitor}'")
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_metrics, self.epochs_run = dict(state["best_metrics"]), int(state["epochs_run"])
        self._wait, self._best_weights = int(state["wait"]), best_weights
        self.sum_after_best = sum_after_best
        self.averaged_epochs = int(state.get("averaged_epochs", 0)) if sum_after_best is not None else 0

    def on_train_end(self, logs=None):
        if self._best_weights is None and self.best_epoch not in (None, self.epochs_run):
            read_weights(self.model, paths.join(self.run_dir, runs.CHECKPOINT))
        elif self._best_weights is not None:
            count = self.averaged_epochs + 1
            self.model.set_weights(self._best_weights if self.sum_after_best is None else [
                (best + total) / count if np.issubdtype(best.dtype, np.floating) else best
                for best, total in zip(self._best_weights, self.sum_after_best)])
            if self.sum_after_best is not None and self.save_checkpoint:
                runs.save_checkpoint(self.model, self.run_dir)
        self._writer.flush()


def tensorboard_callback(run_dir: str | Path) -> tf.keras.callbacks.TensorBoard:
    """Keras' TensorBoard callback, writing into the run directory (no graph, no profiling)."""
    return tf.keras.callbacks.TensorBoard(log_dir=str(paths.join(run_dir, runs.TENSORBOARD)),
                                          write_graph=False, profile_batch=0)


def fit_verbosity(cfg: TrainConfig, stream=None) -> int:
    """Keras' ``verbose``: the progress bar when ``cfg.progress`` and ``stream`` (default: standard output)
    can redraw it in place, i.e. a terminal or a notebook; one line per epoch otherwise. Keras' bar writes a
    new line per update where it cannot redraw: thousands of lines per epoch in a pipe, a log file or CI."""
    stream = sys.stdout if stream is None else stream
    redraws = getattr(stream, "isatty", lambda: False)() or "ipykernel" in sys.modules
    return 1 if cfg.progress and redraws else 2


def plot_curves(run_dir: str | Path) -> Path | str | None:
    """Draw every numeric column of train_log.jsonl against the epoch into training_curves.png.

    Args:
      run_dir: the run directory.

    Returns:
      The image's path, None when there is no log.
    """
    rows = runs.read_train_log(run_dir)
    if not rows:
        return None
    # Not pyplot: the caller's backend (a notebook's inline one) stays as it is.
    from matplotlib.figure import Figure

    keys = [k for k in rows[0] if k not in ("epoch", "seconds")
            and all(isinstance(r.get(k), (int, float)) for r in rows)]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses]
    panels = [p for p in (losses, others) if p]
    fig = Figure(figsize=(6 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, panel, title in zip(axes[0], panels, ("loss", "validation metrics")):
        for k in panel:
            ax.plot(epochs, [r[k] for r in rows], marker="o", label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()  # matplotlib writes local files only; the bytes go through paths (gs://, ...)
    fig.savefig(png, format="png", dpi=100)
    return paths.write_bytes(paths.join(run_dir, runs.CURVES), png.getvalue())
