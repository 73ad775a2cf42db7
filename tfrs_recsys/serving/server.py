"""``python -m tfrs_recsys.serving.server``: the model server's old name, kept for scripts and deployments.

It runs :mod:`tfrs_recsys.model_server` with the same flags.
"""
import sys

from tfrs_recsys.model_server.server import main

if __name__ == "__main__":
    sys.exit(main())
