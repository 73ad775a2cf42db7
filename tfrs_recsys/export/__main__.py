"""``python -m tfrs_recsys.export MODEL --model-dir RUN --export-base BASE --name NAME``.

Writes TF Serving's versioned layout (BASE/NAME/<version>/) atomically, with warmup requests.
"""
from __future__ import annotations

import sys
from typing import Sequence

EXPORTERS = {
    "retrieval": "query tower + ScaNN top-k, and a portable brute-force twin",
    "esmm": "ESMM ranker: raw features in, ctr / cvr / ctcvr out",
    "deepfm": "DeepFM ranker: raw features in, ctr out",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the exporter of the model named first in ``argv``; prints the models without one.

    Args:
      argv: ``MODEL [options]`` (default: the command line's).

    Returns:
      The exit code: the exporter's, 0 for ``--help``, 2 for an unknown or missing model.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in EXPORTERS:
        print("usage: python -m tfrs_recsys.export {retrieval,esmm,deepfm} --model-dir RUN_DIR "
              "--export-base BASE --name NAME [options]\n")
        for name, what in EXPORTERS.items():
            print(f"  {name:10s} {what}")
        return 0 if (not argv or argv[0] in ("-h", "--help")) else 2
    if argv[0] == "retrieval":
        from tfrs_recsys.export.retrieval import main as export_retrieval
        return export_retrieval(argv[1:])
    from tfrs_recsys.export.rankers import main as export_ranker
    return export_ranker(argv)  # one exporter for both rankers: it takes the model name first


if __name__ == "__main__":
    sys.exit(main())
