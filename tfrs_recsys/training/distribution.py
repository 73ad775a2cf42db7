"""Which ``tf.distribute`` strategy a run trains under, and which process writes its run directory.

``distribute`` (config field; ``--distribute`` / ``RECSYS_DISTRIBUTE``):

* ``auto`` (default): ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` lists more than one task,
  ``MirroredStrategy`` when this machine has more than one GPU, else TensorFlow's default strategy;
* ``none``: the default strategy (one device), whatever ``TF_CONFIG`` says;
* ``mirrored``: ``MirroredStrategy`` over this machine's GPUs; without a GPU, over its logical CPU
  devices (one unless ``tf.config.set_logical_device_configuration`` made more, as a test does);
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster of ``TF_CONFIG`` (an error
  without it: every process would train alone).

Before the strategy, each worker waits for the others' ports (:mod:`~tfrs_recsys.training.rendezvous`,
at most ``--cluster-wait-seconds``); after it, the workers check that they were given the same options
(:func:`check_same_config`).

Both are synchronous data parallelism: every replica holds a copy of the variables, computes the
gradients of its slice of each global batch (``batch_size`` is the GLOBAL batch), and the gradients
are summed across replicas (all-reduce) before every replica applies the same update; the losses
are normalized so that this sum is the gradient of the global-batch mean
(:mod:`tfrs_recsys.models.base`).

``TF_CONFIG``, one per process, the same ``cluster`` everywhere and the process's own ``task``::

    {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}

Order matters: ``MultiWorkerMirroredStrategy`` configures the collective ops of TensorFlow's
runtime, which is only possible before the first TensorFlow op runs. Each trainer's ``run()``
therefore builds the strategy first, before seeding, loading data or building anything; a
strategy requested too late raises :class:`~tfrs_recsys.config.ConfigError` saying so.

Every worker runs the same program: each builds the same dataset (same seed, same order) and
:func:`shard_by_data` makes it keep its own part of every global batch; every worker evaluates the
(identical) model after each epoch and saves checkpoints, because everything that touches
distributed variables or collective ops must run on all of them. Only the chief (task ``chief``,
or worker 0 when the cluster has none, see :func:`is_chief`) writes the run directory; the others
write into a temporary directory that is removed at the end. Early stopping is agreed on by all
workers (:func:`any_worker`), so none waits in a collective that another has left.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import zlib
from typing import Mapping

import tensorflow as tf

from tfrs_recsys.config import ConfigError, TrainConfig
from tfrs_recsys.training import rendezvous

# Options that may differ between workers: where a non-chief writes, and each machine's thread pools.
PER_WORKER_OPTIONS = ("output_dir", "intra_op_threads", "inter_op_threads", "progress")


def read_tf_config(environ: Mapping[str, str] | None = None) -> dict:
    """``TF_CONFIG`` parsed.

    Args:
      environ: where to read it (default ``os.environ``).

    Returns:
      The parsed mapping, ``{}`` when unset or empty.

    Raises:
      ConfigError: it is not JSON, or not an object with a ``cluster`` mapping.
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"environment TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos}); "
                          f'set it to e.g. {{"cluster": {{"worker": ["host0:12345", "host1:12345"]}}, '
                          f'"task": {{"type": "worker", "index": 0}}}}') from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
        raise ConfigError("environment TF_CONFIG must be a JSON object with a 'cluster' mapping of job names "
                          "to lists of host:port and this process's 'task' {type, index}")
    return config


def cluster_size(tf_config: Mapping) -> int:
    """Number of training tasks (chief and workers) in ``TF_CONFIG``'s cluster.

    Args:
      tf_config: parsed ``TF_CONFIG``.

    Returns:
      The count (0 without a cluster).
    """
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def choose_strategy(name: str | None, tf_config: Mapping, num_gpus: int) -> str:
    """Resolve ``name`` (one of :data:`tfrs_recsys.config.STRATEGIES`) to a concrete strategy name.

    Args:
      name: the ``distribute`` setting (None means ``none``).
      tf_config: parsed ``TF_CONFIG``.
      num_gpus: GPUs on this machine.

    Returns:
      ``none``, ``mirrored`` or ``multi_worker``.
    """
    if name is None:  # the config parser reads the word "none" of a string field as None
        return "none"
    if name != "auto":
        return name
    if cluster_size(tf_config) > 1:
        return "multi_worker"
    return "mirrored" if num_gpus > 1 else "none"


def configure_threads(intra_op_threads: int = 0, inter_op_threads: int = 0) -> None:
    """TensorFlow's thread pools for this process (0 = TensorFlow's default). Like the strategy, they can
    only change before the first TensorFlow op.

    Args:
      intra_op_threads: threads within an op.
      inter_op_threads: ops run at once.

    Raises:
      ConfigError: other values are asked for after TensorFlow started.
    """
    threading = tf.config.threading
    for field, value, current, apply in (
            ("intra_op_threads", intra_op_threads, threading.get_intra_op_parallelism_threads,
             threading.set_intra_op_parallelism_threads),
            ("inter_op_threads", inter_op_threads, threading.get_inter_op_parallelism_threads,
             threading.set_inter_op_parallelism_threads)):
        if value == current():
            continue
        try:
            apply(value)
        except RuntimeError:
            raise ConfigError(f"field '{field}' = {value} cannot take effect: TensorFlow already runs with "
                              f"{current() or 'its default'} threads in this process; set it before any "
                              "TensorFlow op runs (on the command line, or first thing in a fresh process)"
                              ) from None


def start_runtime(cfg: TrainConfig) -> tf.distribute.Strategy:
    """The run's thread pools (:func:`configure_threads`), then its strategy (:func:`build_strategy`):
    the first thing a run does, since both only take effect before TensorFlow's first op.

    Args:
      cfg: the run's config.

    Returns:
      The strategy.
    """
    configure_threads(cfg.intra_op_threads, cfg.inter_op_threads)
    strategy = build_strategy(cfg.distribute, wait_seconds=cfg.cluster_wait_seconds)
    check_same_config(strategy, cfg)
    return strategy


def check_same_config(strategy: tf.distribute.Strategy, cfg: TrainConfig) -> None:
    """Every worker was given the same options (but :data:`PER_WORKER_OPTIONS`): a worker with another
    learning rate would train its own variables, one with fewer epochs leave the others in a collective.

    Raises:
      ConfigError: naming the options that differ, on every worker.
    """
    def digest(fields) -> int:  # 20 bits: same_on_every_worker's float64 sums stay exact
        values = {f.name: getattr(cfg, f.name) for f in fields}
        values = {k: v.rstrip("/") if isinstance(v, str) else v for k, v in values.items()}  # a folder/
        text = json.dumps(values, sort_keys=True, default=str)
        return zlib.crc32(text.encode()) & 0xFFFFF

    fields = [f for f in dataclasses.fields(cfg) if f.name not in PER_WORKER_OPTIONS]
    if num_workers(strategy) <= 1 or same_on_every_worker(strategy, digest(fields)):
        return
    flag = {"data_dir": "--data"}  # its short spelling
    differ = [flag.get(f.name, f"--{f.name.replace('_', '-')}") for f in fields
              if not same_on_every_worker(strategy, digest([f]))]
    raise ConfigError(f"the workers were started with different options ({', '.join(differ) or 'several'}): "
                      "start every worker with the same command, only TF_CONFIG's task differing")


def build_strategy(name: str | None = "auto", *, wait_seconds: float = 600.0) -> tf.distribute.Strategy:
    """The strategy of ``distribute`` = ``name``.

    Call it before any other TensorFlow op (see the module docstring).

    Args:
      name: ``auto``, ``none`` (or None), ``mirrored`` or ``multi_worker``.
      wait_seconds: How long a worker waits for the other tasks of the cluster to start.

    Returns:
      The strategy to build and train the model under.

    Raises:
      ConfigError: ``multi_worker`` without training tasks in ``TF_CONFIG``, a task outside its cluster,
        a task that did not start in time, or asked for too late.
    """
    tf_config = read_tf_config()
    # Listing physical devices leaves the runtime unconfigured (MultiWorkerMirroredStrategy can still follow).
    choice = choose_strategy(name, tf_config, 0 if cluster_size(tf_config) > 1 or name != "auto"
                             else len(tf.config.list_physical_devices("GPU")))
    if choice == "none":
        return tf.distribute.get_strategy()
    if choice == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if cluster_size(tf_config) == 0:
        what = "TF_CONFIG lists no 'worker' or 'chief' tasks" if tf_config else "TF_CONFIG is not set"
        raise ConfigError(what + " for distribute=multi_worker, so every process would train alone; list "
                          "every training process's host:port under cluster.worker (docs/training.md), or "
                          "train in one process with --distribute none")
    if cluster_size(tf_config) > 1:
        rendezvous.check_task(tf_config)
        rendezvous.wait_for_workers(tf_config, wait_seconds)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise ConfigError("distribute=multi_worker: MultiWorkerMirroredStrategy must be created before "
                          "TensorFlow runs any op; build it first thing "
                          "(tfrs_recsys.training.distribution.build_strategy), before loading data or "
                          "building a model, or run training in a fresh process") from None
    _stop_on_sigterm()
    return strategy


def _stop_on_sigterm() -> None:
    """SIGTERM (Kubernetes stopping a pod) stops the run as Ctrl-C does: the strategy's start installs
    TensorFlow's preemption notifier, which takes SIGTERM and lets training run on until SIGKILL."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: the caller's own handling stays
        pass


def _cluster_resolver(strategy: tf.distribute.Strategy | None):
    """The strategy's cluster resolver when this process is a task of a cluster, else None."""
    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    return resolver if resolver is not None and resolver.task_type else None


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True for the process that writes the run directory: task ``chief``, else worker 0 (or no cluster)."""
    resolver = _cluster_resolver(strategy)
    if resolver is None or resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief


def num_workers(strategy: tf.distribute.Strategy | None = None) -> int:
    """Processes training together (1 for the default strategy and ``MirroredStrategy``)."""
    resolver = _cluster_resolver(strategy)
    return 1 if resolver is None else max(1, cluster_size({"cluster": resolver.cluster_spec().as_dict()}))


def worker_index(strategy: tf.distribute.Strategy | None = None) -> int:
    """This process's place among the training tasks: the chief 0, then the workers in order (0 alone)."""
    resolver = _cluster_resolver(strategy)
    if resolver is None or resolver.task_type == "chief":
        return 0
    return int(resolver.task_id or 0) + len(resolver.cluster_spec().as_dict().get("chief", []))


def any_worker(strategy: tf.distribute.Strategy | None, flag: bool) -> bool:
    """``flag`` OR-ed over all workers (one all-reduce; just ``flag`` in a single process).

    Workers must take decisions that change the number of training steps (early stopping)
    together: a worker that stopped alone would leave the others waiting in a collective.

    Args:
      strategy: the training strategy (default: the current one).
      flag: this worker's vote.

    Returns:
      True when any worker voted True.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers(strategy) <= 1:
        return flag
    votes = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(float(flag)))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None).numpy() > 0)


def same_on_every_worker(strategy: tf.distribute.Strategy | None, value: int) -> bool:
    """Whether every worker holds ``value`` (one all-reduce; True in a single process).

    Args:
      strategy: the training strategy (default: the current one).
      value: this worker's number (e.g. the epoch it would resume at).

    Returns:
      True when all agree: the replicas' ``v`` and ``v^2`` summed give ``(sum v)^2 == R sum v^2`` only then.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers(strategy) <= 1:
        return True
    pairs = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([float(value), float(value) ** 2], tf.float64))
    total, squares = strategy.reduce(tf.distribute.ReduceOp.SUM, pairs, axis=None).numpy()
    return bool(total * total == strategy.num_replicas_in_sync * squares)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with ``AutoShardPolicy.DATA``: each worker keeps its own part of every global batch.

    Every worker must build the same dataset (same data, same shuffle seed). ``FILE`` sharding
    would need at least as many input files as workers, and our inputs are in-memory tensors.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def describe(strategy: tf.distribute.Strategy | None = None) -> str:
    """One line for the training log, e.g. ``MultiWorkerMirroredStrategy, 2 replicas, worker 1 of 2``."""
    strategy = strategy or tf.distribute.get_strategy()
    kind = type(strategy).__name__
    if kind.startswith("_"):  # TensorFlow's default strategy, whose class is private
        kind = "default strategy (one device)"
    text = f"{kind}, {strategy.num_replicas_in_sync} replica(s)"
    resolver = _cluster_resolver(strategy)
    if resolver is not None:
        text += (f", task {resolver.task_type}:{resolver.task_id} of {num_workers(strategy)} "
                 f"({'chief' if is_chief(strategy) else 'not chief: writes a temporary directory'})")
    return text
