"""tfrs_recsys: a recommender stack on TensorFlow Recommenders and TF Serving.

Stages flow one way: data -> features -> models -> train -> export -> serving.
"""
import os
import sys

# TFRS 0.7.x is Keras 2 only; this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if sys.argv[:1] == ["-m"]:
    # `python -m tfrs_recsys.<command>`: runpy imports this package before the command's module, so the
    # command's stderr is filtered before TensorFlow's first native log line (native_logs.py says why).
    from tfrs_recsys.native_logs import install_for_command

    install_for_command(sys.argv)
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# gRPC over loopback: grpcio's EventEngine client endpoints make each unary call slower than the
# iomgr ones (bench/serving.py measures it). grpc reads this once, on its first import; a
# GRPC_EXPERIMENTS set by the user (even empty) wins.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

__version__ = "0.2.0"
