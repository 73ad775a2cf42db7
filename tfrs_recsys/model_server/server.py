"""``python -m tfrs_recsys.model_server``: a model server that speaks TF Serving's protocol.

The flags are ``tensorflow_model_server``'s, so a command line (and a client) written
for one works with the other::

    python -m tfrs_recsys.model_server --port=8500 --rest_api_port=8501 \\
        --model_config_file=/abs/export/models.config --file_system_poll_wait_seconds=1 \\
        --enable_batching --batching_parameters_file=export/batching_parameters.txt

It binds 127.0.0.1 unless ``--host`` says otherwise, imports ScaNN's ops (when the
``scann`` package is installed) before loading anything so ScaNN SavedModels load,
loads every configured model before it starts answering, and stops cleanly on
SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import tfrs_recsys  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

log = logging.getLogger("tfrs_recsys.model_server")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tfrs_recsys.model_server",
        description="TF-Serving-protocol model server (gRPC PredictionService/ModelService and the REST API).")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: pick a free one and log it)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables the REST API")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (not a tensorflow_model_server flag)")
    p.add_argument("--model_name", default="default", help="name of the single model given by --model_base_path")
    p.add_argument("--model_base_path", default="", help="absolute path holding <integer version>/ directories")
    p.add_argument("--model_config_file", default="", help="models.config (ModelServerConfig text proto)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                   help="re-read --model_config_file this often (0: read once)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                   help="poll base paths for new versions this often (0: once at startup)")
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="", help="BatchingParameters text proto")
    p.add_argument("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    p.add_argument("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--max_num_load_retries", type=int, default=5)
    p.add_argument("--load_retry_interval_micros", type=int, default=60_000_000)
    p.add_argument("--grpc_max_threads", type=int, default=0, help="gRPC worker threads (0: 4 x cores, at least 16)")
    p.add_argument("--rest_api_num_threads", type=int, default=0, help="accepted for compatibility; REST is threaded")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    return p


def _configure_tensorflow(args) -> None:
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    try:  # registers the ScaNN custom ops; without them a ScaNN SavedModel cannot load
        import scann  # noqa: F401
    except ImportError:
        log.info("scann is not installed: ScaNN SavedModels will fail to load (portable exports still work)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    from tfrs_recsys.model_server.config_file import (
        ConfigFileError, read_batching_parameters, read_model_server_config, single_model_config)

    try:
        if args.model_config_file:
            config = read_model_server_config(args.model_config_file)
        elif args.model_base_path:
            config = single_model_config(args.model_name, args.model_base_path)
        else:
            print("error: give --model_config_file or --model_base_path (with --model_name)", file=sys.stderr)
            return 2
        batching = read_batching_parameters(args.batching_parameters_file or None) if args.enable_batching else None
    except ConfigFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    _configure_tensorflow(args)

    import grpc

    from tfrs_recsys.model_server.errors import ServingError
    from tfrs_recsys.model_server.grpc_service import add_services
    from tfrs_recsys.model_server.model_manager import ManagerOptions, ModelManager
    from tfrs_recsys.model_server.rest import RestServer

    manager = ModelManager(ManagerOptions(
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_micros=args.load_retry_interval_micros,
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        batching=batching,
        model_config_file=args.model_config_file or None,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
    ))
    try:
        manager.start(config)
    except ServingError as e:
        print(f"Failed to start server. Error: {e}", file=sys.stderr)
        manager.stop()
        return 1

    threads = args.grpc_max_threads or max(16, 4 * (os.cpu_count() or 1))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
                 ("grpc.so_reuseport", 0)])
    add_services(server, manager)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        print(f"Failed to start server. Error: could not bind gRPC to {args.host}:{args.port}", file=sys.stderr)
        manager.stop()
        return 1
    server.start()
    log.info("Running gRPC ModelServer at %s:%d ...", args.host, port)
    rest = None
    if args.rest_api_port:
        try:
            rest = RestServer(manager, args.host, args.rest_api_port).start()
        except OSError as e:
            print(f"Failed to start server. Error: could not bind REST to {args.host}:{args.rest_api_port}: {e}",
                  file=sys.stderr)
            server.stop(0)
            manager.stop()
            return 1
        log.info("Exporting HTTP/REST API at:%s:%d ...", args.host, rest.port)

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(timeout=1.0):  # a timed wait keeps the main thread responsive to signals
        pass
    log.info("Shutting down")
    if rest is not None:
        rest.stop()
    server.stop(grace=2).wait()
    manager.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
