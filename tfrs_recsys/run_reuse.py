"""Training into a run directory that holds a run already: refuse it, resume it, or replace it.

What ``python -m tfrs_recsys.train MODEL --output-dir RUN`` does when RUN has a config.json:

====================================  =========================  ====================  ===========
RUN holds                             (neither flag)             ``--resume``          ``--overwrite``
====================================  =========================  ====================  ===========
a run that did no epoch (any)         replaced                   replaced              replaced
another model's or config's run       refused, fields named      refused               replaced
this config's run, stopped            refused                    continued             replaced
this config's run, complete           refused                    nothing to train      replaced
====================================  =========================  ====================  ===========

"This config" ignores the fields of :data:`~tfrs_recsys.config.HOW_TO_RUN` (the folder's spelling, the
progress bar, the strategy, thread pools, the two flags). A run is complete once it wrote COMPLETE
(:func:`tfrs_recsys.runs.mark_complete`); "replaced" deletes the run's own files first
(:func:`tfrs_recsys.runs.clear`), never others. Without a config.json the folder is trained into as it is,
``--resume`` or not.
"""
from __future__ import annotations

from tfrs_recsys import paths, run_inputs, runs
from tfrs_recsys.config import HOW_TO_RUN, ConfigError, TrainConfig
from tfrs_recsys.config_sources import config_to_dict
from tfrs_recsys.errors import UserError

NEW, REPLACE, RESUME, COMPLETE = "new", "replace", "resume", "complete"


def differences(saved: TrainConfig, cfg: TrainConfig) -> list[str]:
    """``field: <saved> there, <new> here`` for each field outside :data:`HOW_TO_RUN` that differs."""
    old, new = config_to_dict(saved), config_to_dict(cfg)
    return [f"{k}: {old[k]!r} there, {new[k]!r} here" for k in old
            if k not in HOW_TO_RUN and old[k] != new[k]]


def epochs_done(run_dir) -> int:
    """The epochs a run's log (or, before its first row, its saved training state) shows as completed."""
    return len(runs.read_train_log(run_dir)) or int(runs.resumable(run_dir))


def check(cfg: TrainConfig, model: str) -> str:
    """What training ``model`` with ``cfg`` may do with ``cfg.output_dir`` (module docstring). Reads only.

    Args:
      cfg: The new run's config.
      model: ``retrieval``, ``esmm`` or ``deepfm``.

    Returns:
      :data:`NEW` (no run there), :data:`REPLACE` (delete the run's files, then train), :data:`RESUME`
      (continue the stopped run) or :data:`COMPLETE` (``--resume`` on a run that completed).

    Raises:
      ConfigError: The run there may not be written over; the message names why and the flags that would.
    """
    run_dir = cfg.output_dir
    if not run_dir or not paths.isfile(paths.join(run_dir, runs.CONFIG)):
        return NEW
    if cfg.overwrite:
        return REPLACE
    where = f"--output-dir {run_dir}"
    try:
        saved = runs.open_run(run_dir)
    except (UserError, ConfigError) as error:
        raise ConfigError(f"{where} holds a run whose {runs.CONFIG} cannot be read ({error}); pass "
                          f"--overwrite to delete that run and train this one there, or another --output-dir"
                          ) from None
    if not runs.is_complete(run_dir) and not epochs_done(run_dir):
        return REPLACE  # it stopped before training (e.g. at a mistake in its data): nothing to lose
    def a(name: str) -> str:
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"

    if saved.model_name != model:
        raise ConfigError(f"{where} holds {a(saved.model_name)} run, not {a(model)} one; pass another "
                          f"--output-dir, or --overwrite to delete that run and train this one there")
    changed = differences(saved.config, cfg)
    if changed:
        resume = (f"--resume with that run's config to continue it (`python -m tfrs_recsys.train {model} "
                  f"--config {saved.file(runs.CONFIG)} --resume`), "
                  if runs.resumable(run_dir) or runs.is_complete(run_dir) else "")
        raise ConfigError(f"{where} holds {a(model)} run of another config ({'; '.join(changed)}); pass "
                          f"another --output-dir, {resume}or --overwrite to delete it and train this one "
                          f"there")
    if runs.is_complete(run_dir):
        if cfg.resume:
            return COMPLETE
        raise ConfigError(f"{where} holds this {model} run, complete; pass --overwrite to delete it and "
                          f"train it again, or another --output-dir")
    done = epochs_done(run_dir)
    if cfg.resume:
        run_inputs.check_unchanged(cfg, run_dir)
        return RESUME
    how = ("pass --resume to continue it from its last completed epoch, or --overwrite to delete it and "
           "start again" if runs.resumable(run_dir) else "it kept no state to resume from (a streamed run "
           "keeps none; another may have stopped before saving its first): pass --overwrite to delete it and "
           "start again")
    raise ConfigError(f"{where} holds this {model} run, stopped before it completed (its log ends at "
                      f"epoch {done} of {saved.config.epochs}); {how}")
