"""Hyperparameter tuning with keras-tuner over the tf-keras models (see :mod:`tfrs_recsys.tuning.tuner`)."""
