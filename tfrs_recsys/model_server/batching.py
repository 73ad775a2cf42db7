"""Server-side batching: concurrent Predict calls merged into one signature call.

A :class:`Batcher` sits between a servable's request validation and its signature
function. Tasks for the same signature (same input names, output filter, dtypes and
per-example shapes) queue together; a batch thread takes a batch when it holds
``max_batch_size`` examples or when its oldest task has waited
``batch_timeout_micros``, concatenates the inputs along dimension 0, makes one call
and splits every output back by each task's row count. This is TF Serving's
BatchingSession over a BasicBatchScheduler, including its error messages.

Inputs stay as the request's TensorProtos: a batch is one TensorProto per input whose
encoded values are the tasks' values joined (``concat_rows``), parsed in the graph like
an unbatched request; only inputs a request sent in another form are merged in numpy.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2

from tfrs_recsys.model_server.config_file import BatchingOptions
from tfrs_recsys.model_server.errors import ServingError, invalid_argument
from tfrs_recsys.model_server.servable import Input, Runner
from tfrs_recsys.model_server.tensors import concat_rows, dtype_of, shape_of, to_ndarray


def _array(value: Input, alias: str) -> np.ndarray:
    """An input as numpy: a request's TensorProto read with ``to_ndarray``, an array as it is."""
    return to_ndarray(value, alias) if isinstance(value, tensor_pb2.TensorProto) else value


# Padding to an allowed batch size copies rows: a batch it would grow by more values or bytes than these
# runs unpadded (a wide row or a long string, copied 63 times, would hold memory the client never sent).
MAX_PADDING_VALUES = 1 << 20
MAX_PADDING_BYTES = 16 << 20


@dataclass
class _Task:
    inputs: Mapping[str, Input]
    size: int
    enqueued: float
    values: int = 0
    nbytes: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: ServingError | None = None


class Batcher:
    """Callable with the :data:`Runner` signature that batches calls to ``run``.

    Args:
      run: The unbatched runner (``Servable.run``).
      options: The batching parameters.
      name: The batch threads' name prefix.

    Example:

    ```python
    servable.runner = Batcher(servable.run, read_batching_parameters(None))
    ```
    """

    def __init__(self, run: Runner, options: BatchingOptions, name: str = "batch"):
        self._run = run
        self.options = options
        self._queues: dict[tuple, deque[_Task]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for t in self._threads:
            t.start()

    def __call__(self, signature_name: str, inputs: Mapping[str, Input],
                 output_aliases: Sequence[str]) -> dict:
        """Queues one call and waits for the batch it joins (a task over the limit is split or refused).

        Args:
          signature_name: The signature.
          inputs: The call's inputs, all with the same 0th dimension (its row count).
          output_aliases: The outputs to return.

        Returns:
          This call's rows of every output.

        Raises:
          ServingError: TF Serving's BatchingSession errors (a bad task, a full queue, shutdown), or the
            batch's own error.
        """
        shapes = {k: v.shape if isinstance(v, np.ndarray) else shape_of(v) for k, v in inputs.items()}
        if not all(shapes.values()):
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes = {shape[0] for shape in shapes.values()}
        if len(sizes) > 1:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop() if sizes else 0
        if size == 0:  # nothing to batch; padded, its empty rows would be made of nothing the client sent
            return self._run(signature_name, dict(inputs), output_aliases)
        limit = self.options.max_batch_size
        if size > limit:
            if not self.options.enable_large_batch_splitting:
                raise invalid_argument(f"Task size {size} is larger than maximum input batch size {limit}")
            chunk = min(limit, self.options.max_execution_batch_size or limit)
            arrays = {k: _array(v, k) for k, v in inputs.items()}
            parts = [self(signature_name, {k: v[i:i + chunk] for k, v in arrays.items()}, output_aliases)
                     for i in range(0, size, chunk)]
            return {a: np.concatenate([p[a] for p in parts]) for a in output_aliases}
        key = (signature_name, tuple(output_aliases),
               tuple(sorted((k, shapes[k][1:], dtype_of(v) if isinstance(v, np.ndarray) else v.dtype)
                            for k, v in inputs.items())))
        task = _Task(inputs, size, time.monotonic(), sum(int(np.prod(s)) for s in shapes.values()),
                     sum(_nbytes(v) for v in inputs.values()))
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Batch scheduler is shutting down")
            queue = self._queues.setdefault(key, deque())
            if sum(t.size for t in queue) + size > self.options.max_enqueued_batches * limit:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            queue.append(task)
            self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    def stop(self) -> None:
        """Refuses new tasks, ends the batch threads and answers the tasks still queued."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        self._fail_queued(ServingError(grpc.StatusCode.UNAVAILABLE, "Batch scheduler is shutting down"))

    def _fail_queued(self, error: ServingError) -> None:
        """Ends every queued task with ``error``: no caller waits on a batch that will not run."""
        with self._cond:
            tasks = [task for queue in self._queues.values() for task in queue]
            for queue in self._queues.values():
                queue.clear()
        for task in tasks:
            task.error = error
            task.done.set()

    # -- batch threads --------------------------------------------------------------------------

    def _next_batch(self) -> tuple[tuple, list[_Task]] | None:
        """Block until some queue holds a full or timed-out batch; pop and return it (oldest first)."""
        limit, timeout = self.options.max_batch_size, self.options.batch_timeout_micros / 1e6
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                oldest = {key: queue[0].enqueued for key, queue in self._queues.items() if queue}
                ready = [key for key, enqueued in oldest.items()
                         if enqueued + timeout <= now or sum(t.size for t in self._queues[key]) >= limit]
                if ready:
                    key = min(ready, key=oldest.get)
                    queue, tasks, total = self._queues[key], [], 0
                    while queue and total + queue[0].size <= limit:
                        total += queue[0].size
                        tasks.append(queue.popleft())
                    if not queue:  # a queue per request shape: kept only while it holds tasks
                        del self._queues[key]
                    return key, tasks
                self._cond.wait(timeout=min((t + timeout - now for t in oldest.values()), default=None))
        return None

    def _work(self) -> None:
        while True:
            try:
                item = self._next_batch()
            except Exception as e:  # a dead batch thread must not leave its callers waiting
                self._fail_queued(ServingError(grpc.StatusCode.INTERNAL, f"batch scheduler failed: {e}"))
                raise
            if item is None:
                return
            (signature_name, output_aliases, _), tasks = item
            results, error = [None] * len(tasks), None
            try:
                results = self._process(signature_name, output_aliases, tasks)
            except ServingError as e:
                error = e
            except Exception as e:  # a batch thread must survive anything a model raises
                error = ServingError(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")
            for task, result in zip(tasks, results):
                task.result, task.error = result, error
                task.done.set()

    def _process(self, signature_name: str, output_aliases: Sequence[str], tasks: list[_Task]) -> list[dict]:
        total = sum(t.size for t in tasks)
        padded = next((b for b in self.options.allowed_batch_sizes if b >= total), total)
        # padding copies the first task's first row: its share of that task's bytes is what each copy costs
        first = tasks[0]
        if (sum(t.values for t in tasks) * (padded - total) > MAX_PADDING_VALUES * total
                or first.nbytes * (padded - total) > MAX_PADDING_BYTES * first.size):
            padded = total
        if len(tasks) == 1 and padded == total:
            merged = tasks[0].inputs
        elif all(isinstance(v, tensor_pb2.TensorProto) for t in tasks for v in t.inputs.values()):
            merged = {name: concat_rows([t.inputs[name] for t in tasks], padded - total)
                      for name in tasks[0].inputs}
        else:  # padded with copies of the first row, as BatchingSession does
            merged = {}
            for name in tasks[0].inputs:
                value = np.concatenate([_array(t.inputs[name], name) for t in tasks])
                merged[name] = np.concatenate([value, np.repeat(value[:1], padded - total, axis=0)])
        outputs = self._run(signature_name, merged, output_aliases)
        for alias in output_aliases:
            if np.ndim(outputs[alias]) == 0 or outputs[alias].shape[0] != padded:
                raise ServingError(grpc.StatusCode.INTERNAL,
                                   "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                   f"dimension sizes of the input tensors (output '{alias}' has shape "
                                   f"{list(np.shape(outputs[alias]))}, batch {padded})")
        starts = np.cumsum([0] + [t.size for t in tasks])
        return [{a: outputs[a][start:start + task.size] for a in output_aliases}
                for task, start in zip(tasks, starts)]


def _nbytes(value: Input) -> int:
    """The bytes of an input's first row (the row padding copies), times its rows: a TensorProto's encoded
    size, an array's values (strings by their length)."""
    if isinstance(value, tensor_pb2.TensorProto):
        if not value.string_val:  # numbers: every row the same size
            return value.ByteSize()
        shape = shape_of(value)
        return shape[0] * sum(len(v) for v in value.string_val[:int(np.prod(shape[1:]))])
    rows = len(value)
    if value.dtype == object:
        first = value[:1].ravel()
        return rows * sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in first)
    return value.nbytes
