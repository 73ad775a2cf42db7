"""``python -m tfrs_recsys.train MODEL [options]``: train one model and write its run directory.

Options come from flags, ``RECSYS_<FIELD>`` environment variables and ``--config FILE``
(flags win). ``python -m tfrs_recsys.train MODEL --help`` lists a model's options.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import textwrap
from typing import Sequence

from tfrs_recsys import paths
from tfrs_recsys.config import MODEL_CONFIGS, ConfigError
from tfrs_recsys.config_sources import config_from_args
from tfrs_recsys.errors import UserError

MODELS = {
    "retrieval": "two-tower retrieval, Transformer user tower over the history (TFRS Retrieval task)",
    "esmm": "multitask ESMM ranker: pCTR, pCVR, pCTCVR = pCTR x pCVR over the entire impression space",
    "deepfm": "DeepFM ranker: FM (first + second order) and DNN over shared field embeddings",
}


def _parser() -> argparse.ArgumentParser:
    models = "\n".join(f"  {k:10s} {v}" for k, v in MODELS.items())
    parser = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.train", description=f"Train a recommender model. Models:\n{models}",
        epilog="Each model's options: python -m tfrs_recsys.train MODEL --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODEL_CONFIGS), help="which model to train")
    return parser


def datasets_help(model: str) -> str:
    """The ``--dataset`` values a model reads, one line each, for its ``--help``."""
    from tfrs_recsys.data.registry import INTERACTION_DATASETS, LABELED_DATASETS

    names = INTERACTION_DATASETS if model == "retrieval" else LABELED_DATASETS
    lines = "\n".join(textwrap.fill(what, 110, initial_indent=f"  {name:24s}", subsequent_indent=" " * 26)
                      for name, what in names.items())
    return (f"--dataset values:\n{lines}\n\nEvery command also takes --verbose (or RECSYS_VERBOSE=1): "
            "TensorFlow's native start-up logs, hidden by default.")


def main(argv: Sequence[str] | None = None) -> int:
    """Trains the model named first in ``argv`` and prints its run directory and test metrics as JSON.

    Args:
      argv: ``MODEL [options]`` (default: the command line's).

    Returns:
      The exit code: 0, or 2 for a bad option or data.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _parser().print_help()
        return 0
    model, rest = argv[0], argv[1:]
    if model not in MODEL_CONFIGS:
        _parser().error(f"unknown model '{model}'; choose one of {sorted(MODEL_CONFIGS)}")
    cfg = None
    try:
        cfg = config_from_args(model, rest, description=MODELS[model], epilog=datasets_help(model))
        runner = importlib.import_module(f"tfrs_recsys.training.{model}")
        metrics = runner.run(cfg)
    except (ConfigError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # one kind is answered; every other is raised again
        if not _lost_worker(exc, cfg):
            raise
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        print(f"error: lost another worker of the cluster in TF_CONFIG: it stopped or cannot be reached "
              f"({reason}). Stop every worker, then start them all again with the same command and --resume "
              f"(a run trained in memory; a streamed run, with --overwrite)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the run folder says how to go on (trained again, it is told which)
        if cfg is not None and cfg.output_dir and not paths.is_remote(cfg.output_dir) \
                and not paths.exists(cfg.output_dir):
            print("interrupted before the run wrote anything", file=sys.stderr)
            return 130
        where = f"--output-dir {cfg.output_dir}" if cfg is not None and cfg.output_dir else "the run folder"
        print(f"interrupted: {where} holds the run as far as it got; train again into it with --resume to "
              f"continue it (a run trained in memory; a streamed one starts again), or with --overwrite to "
              f"start anew", file=sys.stderr)
        return 130
    print(json.dumps({"output_dir": cfg.output_dir, "test_metrics": metrics}, indent=2, default=str))
    return 0


def _lost_worker(error: Exception, cfg) -> bool:
    """Whether ``error`` is a collective's failure in a run over a cluster: a worker that left stops the
    others so."""
    if cfg is None or cfg.distribute not in ("auto", "multi_worker") or not os.environ.get("TF_CONFIG"):
        return False
    import tensorflow as tf  # loaded by then: the run failed in it

    from tfrs_recsys.training.distribution import cluster_size, read_tf_config
    lost = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)
    return isinstance(error, lost) and cluster_size(read_tf_config()) > 1


if __name__ == "__main__":
    sys.exit(main())
