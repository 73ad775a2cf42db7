"""Features stage: raw feature tensors -> model-ready tensors -> field embeddings (TensorFlow layers)."""
from tfrs_recsys.features.embeddings import FieldEmbeddings
from tfrs_recsys.features.preprocessing import (
    TIMESTAMP_FEATURES,
    FeaturePreprocessor,
    mask_key,
    raw_input_specs,
)

__all__ = ["FeaturePreprocessor", "FieldEmbeddings", "TIMESTAMP_FEATURES", "mask_key", "raw_input_specs"]
