"""``python -m tfrs_recsys.export COMMAND ...``: export a run for TF Serving, or describe an export.

Exports write TF Serving's versioned layout (BASE/NAME/<version>/) atomically, with warmup requests, and
add the model to BASE/models.config.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

COMMANDS = {  # command: (module, what it does)
    "retrieval": ("retrieval", "query tower + ScaNN top-k as NAME, a brute-force twin as NAME_portable"),
    "esmm": ("rankers", "ESMM ranker: raw features in, ctr / cvr / ctcvr out"),
    "deepfm": ("rankers", "DeepFM ranker: raw features in, ctr out"),
    "describe": ("describe", "print an export's signatures (inputs, outputs, dtypes, shapes) and needed ops"),
    "repair": ("tfserving", "finish what a killed export left under BASE: half-published pairs, stale temps"),
}
USAGE = """usage: python -m tfrs_recsys.export {retrieval,esmm,deepfm} --model-dir RUN --export-base BASE
                                             [--name NAME] [--allow-incomplete]
       python -m tfrs_recsys.export describe BASE/NAME
       python -m tfrs_recsys.export repair BASE      (also: --repair BASE)

commands:
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command named first in ``argv``; prints the commands for ``--help`` or an unknown one.

    Args:
      argv: ``COMMAND [options]`` (default: the command line's).

    Returns:
      The exit code: the command's, 0 for ``--help``, 2 for an unknown or missing command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--repair"]:
        argv[0] = "repair"
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:10s} {what}" for name, (_, what) in COMMANDS.items()]
        print(USAGE + "\n".join(lines) + "\n\n`python -m tfrs_recsys.export COMMAND --help`: its options.")
        return 0 if (not argv or argv[0] in ("-h", "--help")) else 2
    module = importlib.import_module(f"tfrs_recsys.export.{COMMANDS[argv[0]][0]}")
    # The rankers' exporter takes the model's name as its first argument; the others do not.
    return module.main(argv if argv[0] in ("esmm", "deepfm") else argv[1:])


if __name__ == "__main__":
    sys.exit(main())
