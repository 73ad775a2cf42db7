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
import dataclasses
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("tfrs_recsys.model_server")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``tensorflow_model_server``'s flags, plus ``--host``."""
    p = argparse.ArgumentParser(prog="python -m tfrs_recsys.model_server", description=(
        "TF-Serving-protocol model server (gRPC PredictionService/ModelService and the REST API)."))
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: pick a free one and log it)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port; 0 disables the REST API")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: loopback only, 127.0.0.1; our flag, not TF Serving's)")
    p.add_argument("--model_name", default="default", help="name of the model at --model_base_path")
    p.add_argument("--model_base_path", default="", help="absolute path holding <version>/ folders")
    p.add_argument("--model_config_file", default="", help="models.config (ModelServerConfig text proto)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                   help="re-read --model_config_file this often (0: read once)")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                   help="poll base paths for new versions this often (0: once at startup)")
    for flag, default, about in (
            ("enable_batching", False, "batch concurrent requests (--batching_parameters_file)"),
            ("enable_per_model_batching_parameters", False,
             "with --enable_batching, batch each version by its own batching_params.pbtxt (none: unbatched)"),
            ("enable_model_warmup", True, "replay a version's warmup requests before serving it"),
            ("allow_version_labels_for_unavailable_models", False, "let a label name a loading version"),
            ("enable_model_reload_api", True, "answer HandleReloadConfigRequest (false: UNIMPLEMENTED)")):
        p.add_argument("--" + flag, type=_bool, nargs="?", const=True, default=default, help=about)
    p.add_argument("--batching_parameters_file", default="", help="BatchingParameters text proto")
    p.add_argument("--max_num_load_retries", type=int, default=5, help="retries of a version failing to load")
    p.add_argument("--load_retry_interval_micros", type=int, default=60_000_000, help="wait between retries")
    p.add_argument("--version_settle_seconds", type=float, default=2.0,
                   help="load a version only once nothing under its directory changed for this long (ours; "
                        "a version still being copied is waited for, not failed; 0: load at once)")
    p.add_argument("--max_request_bytes", type=int, default=64 << 20,
                   help="the largest gRPC message or REST body accepted, in bytes (ours; larger: "
                        "RESOURCE_EXHAUSTED / HTTP 413)")
    p.add_argument("--max_request_elements", type=int, default=1 << 21,
                   help="the most tensor elements one Predict may declare (ours; else INVALID_ARGUMENT; a "
                        "string element takes about 175 bytes while decoded)")
    p.add_argument("--max_rows_per_call", type=int, default=1024,
                   help="a Predict of more rows runs this many at a time, its outputs joined: memory bounded "
                        "by the part, not the request (ours; for exports whose metadata says "
                        "rows_independent, as this project's do; at most max_batch_size when batching; 0: "
                        "off)")
    p.add_argument("--allowed_model_roots", type=lambda v: tuple(r for r in v.split(",") if r), default=(),
                   help="comma-separated folders a HandleReloadConfigRequest may load models from (default: "
                        "the parent folders of the base paths served at start-up)")
    p.add_argument("--grpc_max_threads", type=int, default=0,
                   help="gRPC calls running a model at once (0: 4 x cores, at least 16)")
    p.add_argument("--grpc_max_concurrent_rpcs", type=int, default=0,
                   help="gRPC calls in progress or waiting for a worker at most; one more is "
                        "RESOURCE_EXHAUSTED (ours; 0: 4 x --grpc_max_threads): each holds its request's "
                        "bytes")
    p.add_argument("--grpc_max_receiving_rpcs", type=int, default=256,
                   help="gRPC calls still receiving their request message at most (ours); one more cancels "
                        "the one receiving longest")
    p.add_argument("--grpc_request_timeout_in_ms", type=int, default=30_000,
                   help="a gRPC call's request message must arrive whole within this, else the call is "
                        "cancelled (ours)")
    p.add_argument("--grpc_max_connection_idle_ms", type=int, default=60_000,
                   help="close a gRPC connection with no call in flight for this long (ours; clients "
                        "reconnect on their next call; idle connections would otherwise hold file "
                        "descriptors forever)")
    p.add_argument("--rest_api_num_threads", type=int, default=0,
                   help="threads running REST requests' model calls (0: 4 x cores, at least 16)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30_000,
                   help="a REST request's body must arrive (else 408) and be answered (else 504) within this")
    p.add_argument("--rest_api_header_timeout_in_ms", type=int, default=10_000,
                   help="a REST request's line and headers must arrive within this, else 408 (ours)")
    p.add_argument("--rest_api_max_header_bytes", type=int, default=64 << 10,
                   help="the largest REST request line plus headers, else 431 (ours)")
    p.add_argument("--rest_api_max_connections", type=int, default=1000,
                   help="open REST connections at most: one more closes the longest-idle one, or gets 503 "
                        "when all are busy (ours)")
    p.add_argument("--rest_api_backlog", type=int, default=1024,
                   help="the REST socket's listen queue (ours; the kernel caps it at net.core.somaxconn)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one op may use (0: TensorFlow's default)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops run at once (0: TensorFlow's default)")
    return p


def _unbindable(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now (as the REST server binds it), if it cannot: said before the
    models load, not after."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def _failed_to_start(error, *cleanups) -> int:
    print(f"Failed to start server. Error: {error}", file=sys.stderr)
    for cleanup in cleanups:
        cleanup()
    return 1


def main(argv: list[str] | None = None) -> int:
    """Serves until SIGTERM or SIGINT.

    Args:
      argv: The flags (``sys.argv[1:]`` when None).

    Returns:
      The exit status: 0 after a clean stop, 1 when the server could not start, 2 for unusable
      configuration files.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    least = {**dict.fromkeys(("rest_api_timeout_in_ms", "rest_api_header_timeout_in_ms",
                              "rest_api_max_header_bytes", "rest_api_max_connections", "rest_api_backlog",
                              "max_request_bytes", "max_request_elements",
                              "grpc_max_connection_idle_ms", "grpc_max_receiving_rpcs",
                              "grpc_request_timeout_in_ms"), 1),
             **dict.fromkeys(("rest_api_num_threads", "grpc_max_threads", "grpc_max_concurrent_rpcs",
                              "max_num_load_retries",
                              "load_retry_interval_micros", "file_system_poll_wait_seconds",
                              "model_config_file_poll_wait_seconds", "version_settle_seconds",
                              "max_rows_per_call",
                              "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"), 0)}
    for flag, bound in least.items():
        if getattr(args, flag) < bound:
            parser.error(f"--{flag} must be >= {bound}, got {getattr(args, flag)}")
    for flag, zero in (("port", "pick a free one"), ("rest_api_port", "no REST API")):
        if not 0 <= getattr(args, flag) <= 65535:
            parser.error(f"--{flag} must be a port, 0 to 65535 (0: {zero}), got {getattr(args, flag)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    from tfrs_recsys.model_server import config_file

    try:
        if args.model_config_file:
            config = config_file.read_model_server_config(args.model_config_file)
        elif args.model_base_path:
            config = config_file.single_model_config(args.model_name, args.model_base_path)
        else:
            raise config_file.ConfigFileError(
                "give --model_config_file or --model_base_path (with --model_name)")
        batching = (config_file.read_batching_parameters(args.batching_parameters_file or None)
                    if args.enable_batching else None)
    except config_file.ConfigFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import tensorflow as tf

    from tfrs_recsys.model_server.errors import ServingError
    from tfrs_recsys.model_server.grpc_service import GrpcLimits, grpc_server
    from tfrs_recsys.model_server.model_manager import ManagerOptions, ModelManager
    from tfrs_recsys.model_server.rest import RestApi
    from tfrs_recsys.model_server.rest_guard import RestOptions
    from tfrs_recsys.model_server.rest_http import RestServer

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    try:  # registers the ScaNN custom ops; without them a ScaNN SavedModel cannot load
        import scann  # noqa: F401
    except ImportError:
        log.info("scann is not installed: ScaNN SavedModels will fail to load (portable exports still work)")

    # ManagerOptions' fields are named after the flags they come from.
    flags = {f.name for f in dataclasses.fields(ManagerOptions)}
    options = {k: v for k, v in vars(args).items() if k in flags}
    options.update(batching=batching, model_config_file=args.model_config_file or None)
    manager = ModelManager(ManagerOptions(**options))
    threads = args.grpc_max_threads or max(16, 4 * (os.cpu_count() or 1))
    limits = GrpcLimits(threads=threads, max_concurrent_rpcs=args.grpc_max_concurrent_rpcs or 4 * threads,
                        max_receiving_rpcs=args.grpc_max_receiving_rpcs,
                        request_timeout_s=args.grpc_request_timeout_in_ms / 1000)
    options = [("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0),
               ("grpc.max_receive_message_length", args.max_request_bytes),
               ("grpc.max_connection_idle_ms", args.grpc_max_connection_idle_ms)]
    server = grpc_server(manager, limits, options)
    try:  # bound before the models load: a port in use is said at once, not after minutes of loading
        port = server.add_insecure_port(f"{args.host}:{args.port}")
    except RuntimeError:
        port = 0
    if port == 0:
        return _failed_to_start(f"could not bind gRPC to {args.host}:{args.port} (in use, or not an address "
                                f"of this machine): pass another --port or --host")
    if args.rest_api_port and (error := _unbindable(args.host, args.rest_api_port)):
        return _failed_to_start(f"could not bind REST to {args.host}:{args.rest_api_port}: {error}; pass "
                                f"another --rest_api_port (0: no REST API)", lambda: server.stop(0))
    try:
        manager.start(config)
    except ServingError as e:
        return _failed_to_start(e, lambda: server.stop(0), manager.stop)
    server.start()
    log.info("Running gRPC ModelServer at %s:%d ...", args.host, port)
    rest = None
    if args.rest_api_port:
        options = RestOptions(
            max_body_bytes=args.max_request_bytes, timeout_s=args.rest_api_timeout_in_ms / 1000,
            header_timeout_s=args.rest_api_header_timeout_in_ms / 1000,
            max_header_bytes=args.rest_api_max_header_bytes, max_connections=args.rest_api_max_connections,
            backlog=args.rest_api_backlog, num_threads=args.rest_api_num_threads)
        try:
            rest = RestServer(RestApi(manager), args.host, args.rest_api_port, options)
        except OSError as e:
            return _failed_to_start(f"could not bind REST to {args.host}:{args.rest_api_port}: {e}",
                                    lambda: server.stop(0), manager.stop)
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
