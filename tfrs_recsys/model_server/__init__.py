"""A model server that speaks TF Serving's gRPC and REST protocols (``python -m tfrs_recsys.model_server``).

Like ``tensorflow_model_server`` it knows nothing of training: it serves SavedModels from base
paths. ``server`` wires ``model_manager`` (versions, polling, warmup, labels), ``servable`` (one
loaded SavedModel; ``classify_regress`` for its tf.Example methods), ``batching``, ``grpc_service``
and ``rest`` (``json_tensor`` for its bodies) together; ``config_file`` reads models.config and the
batching parameters; ``tensors`` converts TensorProtos.
"""
