"""`reel-driver`: commands around the pipeline (the pipeline itself is `dvc repro`)."""

import argparse
import html
import json
import subprocess
import sys
from pathlib import Path

import hashlib
import logging
from collections.abc import Iterator
from contextlib import closing

import polars as pl
import pyarrow.parquet as pq
import vl_convert
from psycopg import sql

from stages import database, params, paths, schema, scoring
from stages.errors import PipelineError, run_stage
from stages.outputs import write_parquet_batches, write_text

log = logging.getLogger("reel_driver.cli")

OFFLINE_PLOTS = Path("dvc_plots/offline.html")


def _dvc(*command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc {' '.join(command)} failed: {' '.join(result.stderr.split())}")
    return result.stdout


def _dvc_plots(revisions: list[str]) -> dict:
    command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
    return json.loads(_dvc(*command, "--json")).get("data", {})


def review_report(baseline: str) -> str:
    """The code-review comment: metrics and params of the workspace against ``baseline``."""
    metrics = _dvc("metrics", "diff", baseline, "--md").strip() or "No metric changed."
    params = _dvc("params", "diff", baseline, "--md").strip() or "No param changed."
    return f"## Metrics against {baseline}\n\n{metrics}\n\n## Params against {baseline}\n\n{params}\n"


def render_offline(plots: dict) -> str:
    """One self-contained HTML page: DVC's own Vega-Lite specs rendered to inline SVG."""
    figures = []
    for plot_id, renders in plots.items():
        for render in renders:
            if render.get("type") == "vega":
                svg = vl_convert.vegalite_to_svg(render["content"])
                figures.append(f"<section><h2>{html.escape(plot_id)}</h2>\n{svg}\n</section>")
    body = "\n".join(figures) or "<p>No plots: run <code>dvc repro</code> first.</p>"
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>reel-driver plots</title>"
        "<style>body{font-family:sans-serif;margin:2em}section{margin-bottom:3em}</style></head>\n"
        f"<body><h1>reel-driver plots</h1>\n{body}\n</body></html>\n"
    )


def plots(arguments: argparse.Namespace) -> None:
    write_text(render_offline(_dvc_plots(arguments.revisions)), arguments.out)
    print(f"wrote {arguments.out} (no network needed to view it)")


def review(arguments: argparse.Namespace) -> None:
    report = review_report(arguments.baseline)
    if arguments.out:
        write_text(report, arguments.out)
    else:
        print(report, end="")


def publish(arguments: argparse.Namespace) -> None:
    settings = params.load()
    rows = scoring.labeled(
        pl.read_parquet(paths.OUT_OF_FOLD), pl.read_parquet(paths.PREDICTIONS), settings.evaluate.threshold
    ).with_columns(model_sha256=pl.lit(hashlib.sha256(paths.MODEL.read_bytes()).hexdigest()))
    table = database.identifier(arguments.table or settings.publish.table)
    with database.connect() as conn:
        written = database.replace_rows(
            conn, table, scoring.predictions_table(table), rows.iter_slices(settings.publish.batch_rows)
        )
    log.info("%d labeled movies -> %s (threshold %.2f; training rows scored out of fold)",
             written, arguments.table or settings.publish.table, settings.evaluate.threshold)


def _unlabeled_rows(table_name: str, scorer: scoring.Scorer, batch_rows: int) -> Iterator[pl.DataFrame]:
    """Rows of a table in the atp.training shape that have no label (all rows if it has no label column)."""
    table = database.identifier(table_name)
    needed = scoring.required_columns(scorer.spec)
    with database.connect() as conn:
        available = database.table_columns(conn, table)
        missing = [c for c in needed if c not in available]
        if missing:
            raise PipelineError(f"table {table_name} lacks required column(s) {', '.join(missing)}")
        columns = [schema.BY_NAME[c] for c in needed]
        unlabeled = sql.SQL("label IS NULL") if "label" in available else None
        query = database.select_query(table, columns, unlabeled)
        with closing(database.read_frames(conn, query, columns, batch_rows)) as frames:
            yield from frames


def _file_rows(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    try:
        source = pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read {path} as parquet: {error}") from error
    yielded = False
    for batch in source.iter_batches(batch_size=batch_rows):
        yielded = True
        yield pl.from_arrow(batch)
    if not yielded:  # an empty file still gives an empty, typed output
        yield pl.from_arrow(source.schema_arrow.empty_table())


def predict(arguments: argparse.Namespace) -> None:
    settings = params.load()
    scorer = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL)
    batch_rows = settings.publish.batch_rows
    if arguments.from_db:
        rows = _unlabeled_rows(arguments.table or settings.extract.table, scorer, batch_rows)
    elif arguments.input:
        rows = _file_rows(arguments.input, batch_rows)
    else:
        raise PipelineError("predict needs an input parquet file or --from-db")
    written = write_parquet_batches((scorer.scored(batch, settings.evaluate.threshold) for batch in rows), arguments.out)
    log.info("%d rows scored -> %s (threshold %.2f)", written, arguments.out, settings.evaluate.threshold)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="reel-driver", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    offline = commands.add_parser(
        "plots",
        help="render the DVC plots to one HTML file that needs no network",
        description="Render the pipeline's DVC plots (or a diff against revisions) into one self-contained "
        "HTML file with inline SVG. `dvc plots show` writes HTML that loads Vega from a CDN; this does not.",
    )
    offline.add_argument("revisions", nargs="*", help="revisions to compare, as for `dvc plots diff` (e.g. main)")
    offline.add_argument("-o", "--out", type=Path, default=OFFLINE_PLOTS, help=f"output file (default {OFFLINE_PLOTS})")
    offline.set_defaults(handler=plots)

    compare = commands.add_parser(
        "review",
        help="the code-review report: dvc metrics diff and dvc params diff, as Markdown",
        description="Print (or write) the report CI posts on a pull request: `dvc metrics diff BASELINE --md` "
        "and `dvc params diff BASELINE --md` for the workspace. Run `dvc repro` first.",
    )
    compare.add_argument("baseline", nargs="?", default="main", help="revision to compare with (default main)")
    compare.add_argument("-o", "--out", type=Path, help="write the Markdown here instead of printing it")
    compare.set_defaults(handler=review)

    writer = commands.add_parser(
        "publish",
        help="write a prediction for every labeled movie to PostgreSQL",
        description="Write one row per labeled movie (imdb_id, prediction, probability, cm_value at "
        "evaluate.threshold, scored_by, model_sha256, created_at) to publish.table, replacing its "
        "content in one transaction: a failure leaves the previous rows as they were. Training rows "
        "carry out-of-fold probabilities (from models that did not see them), hold-out rows the "
        "trained model's. Needs `dvc repro` first, and PG* variables or REEL_DRIVER_PG_DSN.",
    )
    writer.add_argument("--table", help="schema-qualified table (default: publish.table in params.yaml)")
    writer.set_defaults(handler=publish)

    scorer = commands.add_parser(
        "predict",
        help="score raw movie rows with exactly the training feature build",
        description="Score rows in the atp.training shape (label optional, extra columns ignored) with "
        "models/features.json, models/normalization.json and models/model.json. Writes imdb_id, "
        "probability and prediction (at evaluate.threshold) to a parquet file.",
    )
    source = scorer.add_mutually_exclusive_group(required=True)
    source.add_argument("input", nargs="?", type=Path, help="parquet file of raw rows")
    source.add_argument("--from-db", action="store_true",
                        help="score the rows of --table (default extract.table) that have no label yet")
    scorer.add_argument("--table", help="schema-qualified table for --from-db")
    scorer.add_argument("-o", "--out", type=Path, required=True, help="output parquet file")
    scorer.set_defaults(handler=predict)
    return root


def main() -> None:
    arguments = parser().parse_args()
    run_stage(lambda: arguments.handler(arguments))


if __name__ == "__main__":
    main()
