"""A model server that speaks TF Serving's gRPC and REST protocols (``python -m tfrs_recsys.model_server``).

Like ``tensorflow_model_server`` it knows nothing of training: it serves SavedModels from base
paths. ``server`` wires ``model_manager`` (versions, polling, labels; ``version_loader`` loads and
warms up one version once its directory settled, ``version_table`` answers what requests ask of the
versions), ``servable`` (one loaded SavedModel; ``classify_regress`` for its tf.Example methods),
``batching``, ``grpc_service`` and ``rest`` (``json_tensor`` for its bodies) together; ``config_file``
reads models.config and the batching parameters; ``tensors`` converts TensorProtos.
"""
