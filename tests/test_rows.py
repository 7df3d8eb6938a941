"""Which rows train and which are the backlog, for each table the owner has deployed."""

import polars as pl
import pytest

from reel_driver.preparation import rows
from tests.test_prep import prep_settings


def one_row(label: str | None, media_type: str = "movie", **flags: bool | None) -> pl.DataFrame:
    frame = pl.DataFrame({"imdb_id": ["tt1000001"], "label": [label], "media_type": [media_type]})
    return frame.with_columns(pl.lit(value, pl.Boolean).alias(name) for name, value in flags.items())


@pytest.mark.parametrize(
    ("row", "include_unreviewed", "expected"),
    [
        # today's table: reviewed decides
        (one_row("would_watch", reviewed=True, anomalous=False, human_labeled=False), False, ("reviewed", True, False)),
        (one_row("would_watch", reviewed=False, anomalous=False, human_labeled=False), False, ("unreviewed", False, True)),
        (one_row("would_watch", reviewed=None, anomalous=False), False, ("unreviewed", False, True)),  # NULL is not TRUE
        (one_row("would_watch", reviewed=False, anomalous=False), True, ("unreviewed", True, False)),
        (one_row(None, reviewed=False, anomalous=False), False, ("unlabeled", False, True)),
        (one_row(None, reviewed=True, anomalous=False), True, ("unlabeled", False, True)),  # reviewed, no label
        (one_row("would_not_watch", reviewed=True, anomalous=True), False, ("reviewed", False, False)),
        (one_row("would_watch", "tv_episode_pack", reviewed=True), False, ("reviewed", False, False)),
        (one_row(None, "tv_show", reviewed=False), False, ("unlabeled", False, False)),  # not a kept media type
        # an older table: every labeled row counts as reviewed
        (one_row("would_watch"), False, ("reviewed", True, False)),
        (one_row(None), False, ("unlabeled", False, True)),
        # flags without reviewed: human_labeled decides nothing, anomalous still drops
        (one_row("would_watch", human_labeled=False, anomalous=False), False, ("reviewed", True, False)),
        (one_row("would_watch", human_labeled=True, anomalous=True), False, ("reviewed", False, False)),
    ],
)
def test_kind_training_and_backlog(row: pl.DataFrame, include_unreviewed: bool, expected: tuple) -> None:
    classified = rows.classify(row, prep_settings(include_unreviewed=include_unreviewed))
    assert classified.select(rows.KIND, rows.TRAINING, rows.BACKLOG).row(0) == expected
