"""What changed in the training rows between two revisions, by imdb_id: rows added and
removed, labels a person changed, and how much of the hold-out is new.

`dvc metrics diff` shows that the counts in metrics/data.json moved; this says which
movies moved them, so the owner's relabel loop closes: review lists point at movies,
the owner fixes labels in the review screens, the next review names them.
"""

import polars as pl

from reel_driver.config import paths
from reel_driver.data import schema
from reel_driver.model import metrics

KEY = ["imdb_id", "media_title", "label"]
SIDES = {"train": paths.PREPARED_TRAIN, "hold-out": paths.PREPARED_TEST}
# evaluate's per-row hold-out probabilities, to compare two models on the movies both held out
SCORED = ["imdb_id", "label", "probability"]
COMPARED = ("recall", "precision", "f2", "average_precision")


def labeled_rows(train: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    """imdb_id, media_title, label (1/0) and side of every prepared training row."""
    return pl.concat([train.select(KEY).with_columns(side=pl.lit("train")),
                      test.select(KEY).with_columns(side=pl.lit("hold-out"))])


def _name(label: int) -> str:
    return schema.LABELS[0] if label else schema.LABELS[1]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def changes(old: pl.DataFrame, new: pl.DataFrame, baseline: str, listed: int = 50) -> str:
    """Markdown: rows added and removed, changed labels (listed by title), new hold-out rows.

    ``old`` and ``new`` are ``labeled_rows`` of the baseline and the workspace.
    """
    joined = new.join(old, on="imdb_id", how="full", suffix="_old", coalesce=True)
    added = joined.filter(pl.col("label_old").is_null())
    removed = joined.filter(pl.col("label").is_null())
    changed = joined.filter(pl.col("label").is_not_null() & pl.col("label_old").is_not_null()
                            & (pl.col("label") != pl.col("label_old"))).sort("side", "media_title")
    to_watch = int(changed.get_column("label").sum())
    hold_out = new.filter(pl.col("side") == "hold-out").height
    new_hold_out = added.filter(pl.col("side") == "hold-out").height
    changed_hold_out = changed.filter(pl.col("side") == "hold-out").height
    lines = [
        f"Training rows: {new.height} ({baseline}: {old.height}); {added.height} added, {removed.height} removed.",
        "",
        f"{changed.height} label{'' if changed.height == 1 else 's'} changed: {to_watch} to would_watch, "
        f"{changed.height - to_watch} to would_not_watch"
        f" ({changed_hold_out} of them in the hold-out).",
        "",
        f"Hold-out: {hold_out} rows, {new_hold_out} new since {baseline} (a movie's side never changes).",
    ]
    if changed.height:
        lines += ["", "| title | imdb_id | side | label now | was |", "|---|---|---|---|---|"]
        lines += [
            f"| {_cell(row['media_title'])} | {row['imdb_id']} | {row['side']} | {_name(row['label'])} | {_name(row['label_old'])} |"
            for row in changed.head(listed).iter_rows(named=True)
        ]
        if changed.height > listed:
            lines.append(f"\n… and {changed.height - listed} more.")
    return "\n".join(lines)


def shared_hold_out(old: pl.DataFrame, new: pl.DataFrame, threshold: float, baseline: str) -> str:
    """Markdown: both models' metrics on the movies both revisions held out, with today's
    labels and one threshold, so that new or relabeled hold-out rows do not move the
    comparison. ``old`` and ``new``: evaluate's hold-out predictions (``SCORED`` columns)."""
    both = new.select(SCORED).join(old.select("imdb_id", pl.col("probability").alias("old")), on="imdb_id")
    if both.get_column("label").n_unique() < 2:
        return f"No comparison on shared hold-out rows: the {both.height} movies both held out are not of both labels."
    labels = both.get_column("label").to_numpy()
    scores = {name: metrics.evaluation(labels, both.get_column(column).to_numpy(), threshold)
              for name, column in ((baseline, "old"), ("workspace", "probability"))}
    lines = [f"Both models on the {both.height} movies both held out (today's labels, threshold {threshold:g}):", "",
             f"| metric | {baseline} | workspace | change |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {scores[baseline][name]:.4f} | {scores['workspace'][name]:.4f} | "
              f"{scores['workspace'][name] - scores[baseline][name]:+.4f} |" for name in COMPARED]
    return "\n".join(lines)
