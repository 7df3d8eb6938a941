"""The training rows of prep: checked, split into a stable hold-out, and counted.

The hold-out is a stable function of imdb_id and split.seed, so new arrivals, scored
rows and relabels elsewhere leave both prepared files byte-identical and nothing
retrains.
"""

import hashlib

import numpy as np
import polars as pl

from reel_driver.config import params
from reel_driver.config.errors import PipelineError
from reel_driver.data import schema
from reel_driver.preparation import features, rows

ID_COLUMNS = ("imdb_id", "media_title")
LABEL = "label"
# the flag columns decide which rows train; they are not features
FLAG_COLUMNS = ("media_type", "human_labeled", "anomalous", "reviewed")


def check_rows(classified: pl.DataFrame, settings: params.PrepParams) -> None:
    """What the schema cannot see row by row: repeated ids, no confirmed label, nothing to learn from."""
    if classified.height == 0:
        raise PipelineError("prep: the raw table has no rows (is the source table empty?)")
    repeated = classified.group_by("imdb_id").len().filter(pl.col("len") > 1).sort("imdb_id")
    if repeated.height:
        first, times = repeated.row(0)
        raise PipelineError(
            f"column imdb_id: {first} appears {times} times ({repeated.height} repeated ids); each movie must be one row"
        )
    kinds = classified.get_column(rows.KIND)
    labeled = int((kinds != rows.UNLABELED).sum())
    if "reviewed" in classified.columns and labeled and not (kinds == rows.REVIEWED).any() and not settings.include_unreviewed:
        raise PipelineError(
            f"column reviewed: none of the {labeled} labeled rows is reviewed (TRUE), so no label was confirmed "
            "by a person; confirm labels in the review screens, or set prep.include_unreviewed: true to train "
            f"on the {labeled} unconfirmed labels"
        )
    training = classified.filter(rows.TRAINING)
    if training.height == 0:
        found = ", ".join(sorted(classified.get_column("media_type").cast(pl.String).unique()))
        raise PipelineError(
            f"prep: no training rows among {classified.height}: {labeled} labeled, "
            f"prep.media_types = {settings.media_types}, prep.drop_anomalous = {str(settings.drop_anomalous).lower()}, "
            f"prep.include_unreviewed = {str(settings.include_unreviewed).lower()}; the raw media types: {found}"
        )
    if training.get_column(LABEL).n_unique() < 2:
        raise PipelineError(
            f"column label: all {training.height} training rows are {training.item(0, LABEL)}; "
            "the model needs both would_watch and would_not_watch"
        )


def training_rows(classified: pl.DataFrame) -> pl.DataFrame:
    """The training rows, label as 1/0, without the classification columns."""
    return classified.filter(rows.TRAINING).drop(rows.ADDED).with_columns(
        (pl.col(LABEL) == schema.POSITIVE_LABEL).cast(pl.Int8).alias(LABEL)
    )


def held_out(ids: pl.Series, settings: params.SplitParams) -> pl.Series:
    """True for the movies in the hold-out: a hash of split.seed and the imdb_id below test_size.

    A movie's side depends on nothing but its id and the seed, so it stays put when rows
    arrive, leave or change label; the classes are split in test_size proportion only in
    expectation (no row-position stratification, which reshuffles on every new row).
    """
    cut = int(settings.test_size * 2**64)
    digests = [
        int.from_bytes(hashlib.blake2b(f"{settings.seed}:{imdb_id}".encode(), digest_size=8).digest(), "big") < cut
        for imdb_id in ids.to_list()
    ]
    return pl.Series("held_out", np.array(digests, dtype=bool))


def split(training: pl.DataFrame, settings: params.SplitParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The stable hold-out (``held_out``); both parts sorted by imdb_id, each with both classes."""
    test_mask = held_out(training.get_column("imdb_id"), settings)
    train, test = training.filter(~test_mask).sort("imdb_id"), training.filter(test_mask).sort("imdb_id")
    for side, part in (("training", train), ("hold-out", test)):
        if part.get_column(LABEL).n_unique() < 2:
            counts = {int(k): v for k, v in part.get_column(LABEL).value_counts().iter_rows()}
            raise PipelineError(
                f"split: the {side} side of split.test_size={settings.test_size} (seed {settings.seed}) "
                f"holds {part.height} of {training.height} training rows, label counts {counts}; "
                "each side needs would_watch and would_not_watch rows"
            )
    return train, test


def _by_label(part: pl.DataFrame) -> dict[str, int]:
    positive = int(part.get_column(LABEL).sum())
    return {"rows": part.height, schema.LABELS[0]: positive, schema.LABELS[1]: part.height - positive}


def data_metrics(classified: pl.DataFrame, train: pl.DataFrame, test: pl.DataFrame) -> dict:
    """metrics/data.json: what the table holds and what of it trains, so that
    `dvc metrics diff` shows when the data moved, not only the model."""
    count = lambda condition: int(classified.select(condition.sum()).item())  # noqa: E731
    kind = pl.col(rows.KIND)
    media = classified.get_column("media_type").cast(pl.String)
    return {
        "rows": classified.height,
        "media_types": {name: int((media == name).sum()) for name in schema.MEDIA_TYPES},
        "labels": {
            rows.REVIEWED: count(kind == rows.REVIEWED),
            rows.UNREVIEWED: count(kind == rows.UNREVIEWED),
            rows.UNLABELED: count(kind == rows.UNLABELED),
            "reviewed_without_label": count(rows.flag(classified, "reviewed", absent=False) & (kind == rows.UNLABELED)),
        },
        "anomalous_dropped": count(pl.col(rows.DROPPED)),
        "training": {**_by_label(pl.concat([train, test])), "unreviewed": count(pl.col(rows.TRAINING) & (kind == rows.UNREVIEWED))},
        "train": _by_label(train),
        "hold_out": _by_label(test),
        "backlog": count(pl.col(rows.BACKLOG)),
    }


def prepared(movies: pl.DataFrame, spec: features.FeatureSpec) -> pl.DataFrame:
    """Identifiers, label and the feature build, one row per movie."""
    return pl.concat([movies.select(*ID_COLUMNS, LABEL), features.build(movies, spec)], how="horizontal")
