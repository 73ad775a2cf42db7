"""``python -m tfrs_recsys.model_server``: see :mod:`tfrs_recsys.model_server.server`."""
import sys

from tfrs_recsys.model_server.server import main

sys.exit(main())
