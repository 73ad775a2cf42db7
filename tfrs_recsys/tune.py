"""``python -m tfrs_recsys.tune MODEL ...``: a keras-tuner search over a model's hyperparameters.

The search and its output folder are :mod:`tfrs_recsys.tuning.tuner`'s; the default spaces and the
``--search-space`` file format are :mod:`tfrs_recsys.tuning.spaces`'. :data:`HELP` is what ``--help`` prints.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from tfrs_recsys.config import ENV_PREFIX, MODEL_CONFIGS, RUN_ACTIONS, ConfigError
from tfrs_recsys.config_sources import add_config_arguments, build_config
from tfrs_recsys.errors import UserError

TUNE_OPTIONS = ("max_trials", "algorithm", "search_space", "resume", "overwrite")
ABOUT = """Searches MODEL's hyperparameters with keras-tuner. Each trial is a training run judged by the
model's main validation metric (retrieval: NDCG@10, esmm: CTCVR AUC, deepfm: AUC). Every option of
`python -m tfrs_recsys.train MODEL` sets what is not tuned (data, epochs, batch size, ...);
--search-space FILE (JSON or YAML) replaces the default space. The best trial is written as
OUT/best_config.json, to train with:

  python -m tfrs_recsys.tune deepfm --max-trials 10 --output-dir runs/tune-deepfm --epochs 5
  python -m tfrs_recsys.train deepfm --config runs/tune-deepfm/best_config.json"""
HELP = f"""usage: python -m tfrs_recsys.tune {{retrieval,esmm,deepfm}} --max-trials N --output-dir OUT
           [--algorithm bayesian|hyperband] [--search-space FILE] [--resume | --overwrite]
           [train options]

{ABOUT}

`python -m tfrs_recsys.tune MODEL --help` lists every option of MODEL."""


def _parser(model: str) -> argparse.ArgumentParser:
    from tfrs_recsys.train import datasets_help

    parser = argparse.ArgumentParser(prog=f"python -m tfrs_recsys.tune {model}", description=ABOUT,
                                     epilog=datasets_help(model),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tuning = parser.add_argument_group("tuning")
    tuning.add_argument("--max-trials", type=int, required=True, help="number of trials (training runs)")
    tuning.add_argument("--algorithm", choices=("bayesian", "hyperband"), default="bayesian",
                        help="keras-tuner oracle (default bayesian); hyperband's longest trial is --epochs")
    tuning.add_argument("--search-space", help="JSON/YAML search space replacing the default one")
    tuning.add_argument("--resume", action="store_true", help="continue the search saved in --output-dir")
    tuning.add_argument("--overwrite", action="store_true",
                        help="start anew where --output-dir holds a search (without it or --resume: refused)")
    add_config_arguments(parser, MODEL_CONFIGS[model], exclude=RUN_ACTIONS)  # trials are always trained anew
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 on a user error, 1 when no trial completed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    model = argv[0]
    if model not in MODEL_CONFIGS:
        print(f"error: unknown model '{model}'; choose one of {sorted(MODEL_CONFIGS)} "
              f"(python -m tfrs_recsys.tune MODEL --help)", file=sys.stderr)
        return 2
    parser = _parser(model)
    ns = vars(parser.parse_args(argv[1:]))
    if not ns.get("output_dir"):
        parser.error("--output-dir is required: where best_config.json, trials.jsonl and the trials go")
    from tfrs_recsys.tuning.spaces import load_space
    from tfrs_recsys.tuning.tuner import NoCompletedTrialError, tune

    try:
        options = {k: ns.pop(k) for k in TUNE_OPTIONS}
        output_dir = ns.pop("output_dir")
        # RECSYS_RESUME belongs to `train`; the search's own is --resume.
        ours = {ENV_PREFIX + action.upper() for action in RUN_ACTIONS}
        environ = {k: v for k, v in os.environ.items() if k not in ours}
        base = build_config(model, ns, environ, config_file=ns.get("config"))
        space = options.pop("search_space")
        summary = tune(model, base, output_dir, space=load_space(space) if space else None, **options)
    except (ConfigError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoCompletedTrialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
