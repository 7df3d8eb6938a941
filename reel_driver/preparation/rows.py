"""Which rows of atp.training train and which are the backlog: the one rule that prep
(training rows) and `reel-driver predict --from-db` (the backlog) share.

A training row carries a label a person confirmed: ``reviewed`` TRUE where the table
has that column; in older deployments, which lack it, every labeled row. The media
pipeline writes its model's answer into ``label`` wherever no person labeled the row
and leaves ``reviewed`` FALSE: training on those labels would teach a model its own
past answers. A row with no label is never a training row. Rows of the kept media
types that are not training rows (no label, or a label nobody confirmed) are the
backlog the owner reviews next.
"""

import polars as pl

from reel_driver.config.params import PrepParams

KIND = "kind"
# the label's state: what the review screens would show about it
REVIEWED, UNREVIEWED, UNLABELED = "reviewed", "unreviewed", "unlabeled"
KINDS = pl.Enum([REVIEWED, UNREVIEWED, UNLABELED])
TRAINING = "training"
BACKLOG = "backlog"
# a row that would train but is flagged anomalous (prep.drop_anomalous)
DROPPED = "anomalous_dropped"
ADDED = (KIND, TRAINING, BACKLOG, DROPPED)
# the columns besides media_type that decide a row's kind, where a table has them
DECIDING = ("label", "reviewed", "anomalous")


def flag(raw: pl.DataFrame, name: str, absent: bool) -> pl.Expr:
    """A flag column as a non-null boolean (NULL counts as FALSE); ``absent`` where the table lacks it."""
    return pl.col(name).fill_null(False) if name in raw.columns else pl.lit(absent)


def kind(raw: pl.DataFrame) -> pl.Expr:
    """reviewed, unreviewed or unlabeled, by the label and the ``reviewed`` flag."""
    return (
        pl.when(pl.col("label").is_null()).then(pl.lit(UNLABELED))
        .when(flag(raw, "reviewed", absent=True)).then(pl.lit(REVIEWED))
        .otherwise(pl.lit(UNREVIEWED))
        .cast(KINDS)
        .alias(KIND)
    )


def classify(raw: pl.DataFrame, settings: PrepParams) -> pl.DataFrame:
    """``raw`` with the row's kind and three flags (``ADDED``): ``training`` (it trains),
    ``backlog`` (a kept media type that does not train and still needs a person's label)
    and ``anomalous_dropped`` (it would train but is flagged anomalous)."""
    kept = pl.col("media_type").cast(pl.String).is_in(settings.media_types)
    trusted = kept & pl.col(KIND).is_in([REVIEWED, UNREVIEWED] if settings.include_unreviewed else [REVIEWED])
    dropped = trusted & flag(raw, "anomalous", absent=False) & settings.drop_anomalous
    return raw.with_columns(kind(raw)).with_columns(
        (trusted & ~dropped).alias(TRAINING), dropped.alias(DROPPED),
    ).with_columns(
        (kept & ~pl.col(TRAINING) & (pl.col(KIND) != REVIEWED)).alias(BACKLOG),
    )
