"""keras-tuner search over our tf-keras (Keras 2) models.

keras-tuner 1.4.8 always imports Keras 3, while TFRS and our models are tf-keras (Keras 2).
Of the two ways around it we take the one that cannot break silently:

* **chosen: a custom tuner.** :class:`RecsysTuner` subclasses keras-tuner's framework-agnostic
  ``BaseTuner`` and overrides ``run_trial``: it turns the trial's hyperparameters into our
  config (:func:`~tfrs_recsys.tuning.spaces.trial_config`), trains with our own training code
  (:mod:`~tfrs_recsys.tuning.objectives`) and returns the validation objective to the oracle.
  keras-tuner never sees a model, so it does not matter which Keras it imported; the Keras 3
  import happens once, beside tf-keras, and touches nothing of ours. The oracles (Bayesian
  optimization, Hyperband), trial bookkeeping, resuming and seeding are keras-tuner's own.
* rejected: the import shim ``sys.modules["keras"] = tf_keras`` while importing keras_tuner.
  It depends on keras_tuner's private probing of ``keras.version()``, on import order (any
  module that imported Keras 3 before wins, any that imports ``keras`` during the shim gets
  tf-keras), and only buys keras-tuner's own ``fit`` loop, which we do not want anyway: our
  training computes metrics Keras cannot (exact full-catalog NDCG@10, GAUC, CTCVR AUC).

Hyperband gives each trial ``tuner/epochs``; a trial trains that many epochs from scratch
(keras-tuner's warm start from an earlier trial's checkpoint is not used: a run directory is
a complete, reproducible training run). ``max_trials`` caps the number of trials of either
algorithm.

Output directory::

    best_config.json     the best trial's config (`python -m tfrs_recsys.train MODEL --config ...`)
    trials.jsonl         one line per finished trial: hyperparameters, objective, validation metrics, status
    trials/<id>/         each trial's run directory (config.json, train_log.jsonl, checkpoints/best, ...)
    summary.json         the best trial: id, objective, score, hyperparameters
    keras_tuner/         the oracle's state (`--resume` continues an interrupted search from it)
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import keras_tuner as kt
import tensorflow as tf
from keras_tuner.engine.base_tuner import BaseTuner

from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.config_sources import config_to_dict, save_config
from tfrs_recsys.tuning.objectives import OBJECTIVES, TrialResult, trial_runner
from tfrs_recsys.tuning.spaces import DEFAULT_SPACES, declare, trial_config

ALGORITHMS = ("bayesian", "hyperband")
BEST_CONFIG = "best_config.json"
TRIALS_LOG = "trials.jsonl"
TRIALS_DIR = "trials"
PROJECT = "keras_tuner"


def make_oracle(algorithm: str, objective: str, hyperparameters: kt.HyperParameters, *, max_trials: int,
                max_epochs: int, seed: int) -> kt.Oracle:
    """A keras-tuner oracle maximizing ``objective`` over ``hyperparameters``, at most ``max_trials`` trials.

    Hyperband's brackets run up to ``max_epochs`` epochs per trial (factor 3).

    Args:
      algorithm: ``bayesian`` or ``hyperband``.
      objective: the metric to maximize.
      hyperparameters: the declared search space.
      max_trials: the most trials.
      max_epochs: Hyperband's longest trial.
      seed: the oracle's seed.

    Returns:
      The oracle.
    """
    common = {"objective": kt.Objective(objective, direction="max"), "seed": seed,
              "hyperparameters": hyperparameters, "allow_new_entries": False}
    if algorithm == "bayesian":
        try:
            return kt.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
        except ImportError as exc:
            raise ConfigError(f"--algorithm bayesian needs scipy and scikit-learn ({exc}); install them "
                              f"(pip install scipy scikit-learn) or use --algorithm hyperband") from None
    if algorithm == "hyperband":
        oracle = kt.oracles.HyperbandOracle(max_epochs=max(1, max_epochs), factor=3, **common)
        # Hyperband has no cap of its own; Oracle.create_trial honours this one.
        oracle.max_trials = max_trials
        return oracle
    raise ConfigError(f"--algorithm {algorithm!r}: choose one of {', '.join(ALGORITHMS)}")


def trial_number(trial) -> int:
    """A trial's 1-based number, as the log counts trials (keras-tuner's ids count from 0)."""
    return int(trial.trial_id) + 1


class NoCompletedTrialError(RuntimeError):
    """Every trial of the search failed; ``trials.jsonl`` holds each one's error."""


class RecsysTuner(BaseTuner):
    """Runs each trial with our training code and reports the validation objective (see module docstring)."""

    def __init__(self, model: str, base: TrainConfig, oracle: kt.Oracle, output_dir: str | Path, *,
                 overwrite: bool = True):
        self.model = model
        self.base = base
        self.output_dir = Path(output_dir)
        self.runner = trial_runner(model, base)
        self.results: dict[str, TrialResult] = {}
        super().__init__(oracle, directory=str(self.output_dir), project_name=PROJECT, overwrite=overwrite)

    def config_of(self, trial) -> TrainConfig:
        """The config a trial trains: the base config, the trial's values, its own run directory."""
        values = trial.hyperparameters.values
        epochs = {"epochs": int(values["tuner/epochs"])} if "tuner/epochs" in values else {}
        # A trial's folder is its own: one a killed search left is trained over.
        return trial_config(self.model, self.base, values, output_dir=str(self.output_dir / TRIALS_DIR /
                                                                          trial.trial_id),
                            resume=False, overwrite=True, **epochs)

    def fields_of(self, trial) -> dict[str, Any]:
        """The trial's config as a dict; as given when its values do not go together (the trial failed)."""
        try:
            return config_to_dict(self.config_of(trial))
        except ConfigError:
            return {**config_to_dict(self.base), **trial.hyperparameters.values}

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        tf.keras.backend.clear_session()
        result = self.runner.run(self.config_of(trial))
        self.results[trial.trial_id] = result
        return {OBJECTIVES[self.model]: result.objective}

    def on_trial_end(self, trial) -> None:
        try:
            super().on_trial_end(trial)  # the oracle scores the trial and sets its final status
        finally:  # also when the oracle then stops the search (too many failed trials in a row)
            trial = self.oracle.get_trial(trial.trial_id)
            record = self.trial_record(trial)
            with open(self.output_dir / TRIALS_LOG, "a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
            best = self.best_completed()
            print(f"tune: trial {record['trial']} {record['status'].lower()}: {OBJECTIVES[self.model]} = "
                  f"{record['score']}; best so far: " + (f"trial {trial_number(best)} ({best.score})" if best
                                                         else "none"), flush=True)

    def trial_record(self, trial) -> dict:
        """The trial's line of ``trials.jsonl``: hyperparameters, score, validation metrics, config, error."""
        values = trial.hyperparameters.values
        row: dict[str, Any] = {
            "trial": trial_number(trial), "trial_id": trial.trial_id, "status": str(trial.status),
            "hyperparameters": self.hyperparameters_of(trial),
            "objective": OBJECTIVES[self.model],
            "score": trial.score if trial.score is not None and math.isfinite(trial.score) else None,
        }
        if "tuner/epochs" in values:
            row["hyperband"] = {k.removeprefix("tuner/"): v for k, v in values.items()
                                if k.startswith("tuner/")}
        result = self.results.get(trial.trial_id)
        if result is not None:
            row.update({"validation": result.metrics, **{k: getattr(result, k) for k in (
                "best_epoch", "epochs_run", "seconds", "diverged", "run_dir")}})
        row["config"] = self.fields_of(trial)
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        return row

    def hyperparameters_of(self, trial) -> dict[str, Any]:
        """The trial's tuned fields as the config holds them (e.g. ``hidden_units`` as a list)."""
        fields = self.fields_of(trial)
        return {k: fields[k] for k in trial.hyperparameters.values if not k.startswith("tuner/")}

    def best_completed(self):
        """The best completed trial, or None."""
        # keras-tuner pads the list with unfinished or failed trials when too few completed.
        done = kt.engine.trial.TrialStatus.COMPLETED
        best = [t for t in self.oracle.get_best_trials(1) if t.status == done]
        return best[0] if best else None

    def best_config(self) -> tuple[TrainConfig, Any]:
        """The config of the best completed trial (output_dir cleared: `train` picks a fresh one)."""
        trial = self.best_completed()
        if trial is None:
            raise NoCompletedTrialError(f"no trial of the search in {self.output_dir} completed; each one's "
                                        f"error is in {self.output_dir / TRIALS_LOG}")
        cfg = self.config_of(trial)
        cfg.output_dir = None
        return cfg, trial


def tune(model: str, base: TrainConfig, output_dir: str | Path, *, max_trials: int,
         algorithm: str = "bayesian", space: Mapping[str, Any] | None = None, resume: bool = False,
         overwrite: bool = False) -> dict:
    """Search ``space`` (default :data:`DEFAULT_SPACES`) for ``model``; write the output directory.

    Args:
      model: ``retrieval``, ``esmm`` or ``deepfm``.
      base: every field a trial does not tune (data, epochs, batch size, ...).
      output_dir: where the search writes (module docstring).
      max_trials: the most trials.
      algorithm: ``bayesian`` or ``hyperband``.
      space: the search space (default :data:`DEFAULT_SPACES`).
      resume: continue the search saved in ``output_dir``.
      overwrite: start again where ``output_dir`` holds a search (without it or ``resume``: refused).

    Returns:
      ``{"best_config": path, "best_trial": id, "objective": name, "score": value, "trials": n, ...}``.

    Raises:
      NoCompletedTrialError: no trial completed.
      ConfigError: ``output_dir`` holds a search and neither ``resume`` nor ``overwrite`` says what to do.
    """
    if max_trials < 1:
        raise ConfigError(f"--max-trials must be >= 1, got {max_trials}")
    output_dir = Path(output_dir)
    if not (resume or overwrite) and any((output_dir / name).exists() for name in (TRIALS_LOG, PROJECT)):
        done = (output_dir / TRIALS_LOG).read_text().count("\n") if (output_dir / TRIALS_LOG).exists() else 0
        raise ConfigError(f"{output_dir} holds a search ({done} trial(s) logged); pass --resume to continue "
                          f"it, --overwrite to start a new one there, or another --output-dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    hyperparameters = declare(model, DEFAULT_SPACES[model] if space is None else space)
    if algorithm == "hyperband" and "epochs" in hyperparameters.values:
        raise ConfigError("with --algorithm hyperband the epochs of a trial are Hyperband's to choose; "
                          "remove 'epochs' from the search space and set the maximum with --epochs")
    oracle = make_oracle(algorithm, OBJECTIVES[model], hyperparameters, max_trials=max_trials,
                         max_epochs=base.epochs, seed=base.seed)
    if not resume:  # a fresh search: nothing of an earlier one may be mistaken for this one's
        (output_dir / TRIALS_LOG).unlink(missing_ok=True)
        shutil.rmtree(output_dir / TRIALS_DIR, ignore_errors=True)
    tuner = RecsysTuner(model, base, oracle, output_dir, overwrite=not resume)
    stopped = None
    try:
        tuner.search(verbose=0)  # our own line per trial: keras-tuner's display writes terminal codes
    except RuntimeError as exc:  # keras-tuner stops after max_consecutive_failed_trials failures in a row
        if "consecutive failures" not in str(exc):
            raise
        stopped = (f"stopped after {oracle.max_consecutive_failed_trials} failed trials in a row; the last: "
                   f"{str(exc).strip().splitlines()[-1]}")
        print(f"tune: the search {stopped}", file=sys.stderr)
    cfg, trial = tuner.best_config()
    path = output_dir / BEST_CONFIG
    save_config(cfg, path, model)
    summary = {"best_config": str(path), "best_trial": trial_number(trial),
               "best_trial_dir": str(output_dir / TRIALS_DIR / trial.trial_id),
               "objective": OBJECTIVES[model],
               "score": trial.score, "algorithm": algorithm, "trials": len(tuner.oracle.trials),
               "hyperparameters": tuner.hyperparameters_of(trial),
               **({"stopped": stopped} if stopped else {})}
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
