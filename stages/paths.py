"""Every path the pipeline reads or writes, written once; dvc.yaml mirrors these
(tests/test_pipeline.py checks that the two agree)."""

from pathlib import Path

PARAMS = Path("params.yaml")

RAW = Path("data/raw/training.parquet")

PREPARED_TRAIN = Path("data/prepared/train.parquet")
PREPARED_TEST = Path("data/prepared/test.parquet")
NORMALIZATION = Path("models/normalization.json")
FEATURES = Path("models/features.json")
