"""What changed in the training rows between two revisions, by imdb_id."""

import polars as pl

from reel_driver.review import data_diff


def sides(train: dict[str, int], test: dict[str, int]) -> pl.DataFrame:
    frame = lambda rows: pl.DataFrame(  # noqa: E731
        {"imdb_id": list(rows), "media_title": [f"Title {i[-1]}" for i in rows], "label": list(rows.values())},
        schema={"imdb_id": pl.String, "media_title": pl.String, "label": pl.Int8},
    )
    return data_diff.labeled_rows(frame(train), frame(test))


def test_added_removed_and_relabeled_rows_are_counted_and_named() -> None:
    old = sides({"tt0000001": 0, "tt0000002": 1, "tt0000003": 0}, {"tt0000004": 0, "tt0000005": 1})
    new = sides({"tt0000001": 1, "tt0000002": 1, "tt0000006": 0}, {"tt0000004": 1, "tt0000005": 0, "tt0000007": 0})
    text = data_diff.changes(old, new, "main")
    assert text.splitlines()[:5] == [
        "Training rows: 6 (main: 5); 2 added, 1 removed.",
        "",
        "3 labels changed: 2 to would_watch, 1 to would_not_watch (2 of them in the hold-out).",
        "",
        "Hold-out: 3 rows, 1 new since main (a movie's side never changes).",
    ]
    assert "| Title 4 | tt0000004 | hold-out | would_watch | would_not_watch |" in text
    assert "| Title 5 | tt0000005 | hold-out | would_not_watch | would_watch |" in text
    assert "| Title 1 | tt0000001 | train | would_watch | would_not_watch |" in text
    assert "tt0000002" not in text  # unchanged


def test_nothing_changed_lists_nothing_and_a_long_list_is_cut() -> None:
    same = sides({"tt0000001": 0}, {"tt0000002": 1})
    assert "0 labels changed" in data_diff.changes(same, same, "HEAD") and "| title |" not in data_diff.changes(same, same, "HEAD")
    old = sides({f"tt{i:07d}": 0 for i in range(60)}, {"tt9000000": 1})
    new = sides({f"tt{i:07d}": 1 for i in range(60)}, {"tt9000000": 1})
    text = data_diff.changes(old, new, "main", listed=50)
    assert "60 labels changed: 60 to would_watch" in text and text.endswith("… and 10 more.") and text.count("| train |") == 50


def test_both_models_compare_on_the_movies_both_held_out_with_todays_labels() -> None:
    old = pl.DataFrame({"imdb_id": ["tt1", "tt2", "tt3", "tt4"], "label": [1, 0, 0, 1], "probability": [0.9, 0.2, 0.5, 0.1]})
    # tt4 left the table, tt5 is new, tt3 was relabeled to 1
    new = pl.DataFrame({"imdb_id": ["tt1", "tt2", "tt3", "tt5"], "label": [1, 0, 1, 1], "probability": [0.8, 0.4, 0.3, 0.9]})
    text = data_diff.shared_hold_out(old, new, 0.35, "main")
    assert text.startswith("Both models on the 3 movies both held out (today's labels, threshold 0.35):")
    # on tt1..tt3 with labels 1, 0, 1: the old model flags tt1 and tt3 (recall 1.0, precision 1.0),
    # the new one tt1 and tt2 (recall 0.5, precision 0.5)
    assert "| recall | 1.0000 | 0.5000 | -0.5000 |" in text
    assert "| precision | 1.0000 | 0.5000 | -0.5000 |" in text
    one_class = data_diff.shared_hold_out(old, new.filter(pl.col("imdb_id") == "tt1"), 0.35, "main")
    assert one_class.startswith("No comparison on shared hold-out rows: the 1 movies")
