"""Every path the pipeline reads or writes, written once; dvc.yaml mirrors these
(tests/test_pipeline.py checks that the two agree)."""

from pathlib import Path

PARAMS = Path("params.yaml")

RAW = Path("data/raw/training.parquet")

PREPARED_TRAIN = Path("data/prepared/train.parquet")
PREPARED_TEST = Path("data/prepared/test.parquet")
# the raw columns of the training rows only: what analyze reads (never the hold-out)
PREPARED_TRAIN_RAW = Path("data/prepared/train_raw.parquet")
NORMALIZATION = Path("models/normalization.json")
FEATURES = Path("models/features.json")
# what the data holds: rows read, label states, training and hold-out rows by label
DATA_METRICS = Path("metrics/data.json")

ANALYSIS_METRICS = Path("metrics/analysis.json")
ANALYSIS_REPORT = Path("reports/analysis")  # report.md and plots/*.png
SELECTION = Path("models/selection.json")

MODEL = Path("models/model.json")
ENSEMBLE = Path("models/ensemble.json")  # the models averaged with it (train.ensemble); an empty list when none
TRAIN_METRICS = Path("metrics/train.json")
CV_RESULTS = Path("data/search/cv_results.parquet")
OUT_OF_FOLD = Path("data/predictions/train_oof.parquet")

EVALUATE_METRICS = Path("metrics/evaluate.json")
PREDICTIONS = Path("data/predictions/test.parquet")
# titles and imdb_ids of the owner's movies: a DVC output (cache, remote), never in git
REVIEW = Path("reports/review.md")
PLOT_CONFUSION = Path("metrics/plots/confusion.json")
PLOT_PRECISION_RECALL = Path("metrics/plots/precision_recall.json")
PLOT_ROC = Path("metrics/plots/roc.json")
PLOT_THRESHOLDS = Path("metrics/plots/threshold_sweep.json")
PLOT_IMPORTANCE = Path("metrics/plots/feature_importance.json")
