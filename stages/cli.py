"""`reel-driver`: commands around the pipeline (the pipeline itself is `dvc repro`)."""

import argparse
import hashlib
import html
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import vl_convert

from stages import data_diff, database, params, paths, rows, schema, scoring
from stages.errors import PipelineError, run_stage
from stages.outputs import write_bytes, write_parquet_batches, write_text

log = logging.getLogger("reel_driver.cli")

OFFLINE_PLOTS = Path("dvc_plots/offline.html")
REVIEW_PLOTS = Path("dvc_plots/review")


def _dvc(*command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc {' '.join(command)} failed: {' '.join(result.stderr.split())}")
    return result.stdout


def _dvc_plots(revisions: list[str]) -> dict:
    command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
    return json.loads(_dvc(*command, "--json")).get("data", {})


def _vega_specs(plots: dict) -> Iterator[tuple[str, dict]]:
    """(plot id, Vega-Lite spec) for every plot DVC rendered as Vega."""
    for plot_id, renders in plots.items():
        for render in renders:
            if render.get("type") == "vega":
                yield plot_id, render["content"]


def render_offline(plots: dict) -> str:
    """One self-contained HTML page: DVC's own Vega-Lite specs rendered to inline SVG."""
    figures = [
        f"<section><h2>{html.escape(plot_id)}</h2>\n{vl_convert.vegalite_to_svg(spec)}\n</section>"
        for plot_id, spec in _vega_specs(plots)
    ]
    body = "\n".join(figures) or "<p>No plots: run <code>dvc repro</code> first.</p>"
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>reel-driver plots</title>"
        "<style>body{font-family:sans-serif;margin:2em}section{margin-bottom:3em}</style></head>\n"
        f"<body><h1>reel-driver plots</h1>\n{body}\n</body></html>\n"
    )


def write_pngs(plots: dict, directory: Path) -> list[tuple[str, Path]]:
    """Each plot as a PNG image in ``directory``: (plot id, file), in DVC's order."""
    written: list[tuple[str, Path]] = []
    for plot_id, spec in _vega_specs(plots):
        # a plot file by its name (roc.json -> roc), a titled plot by its title
        stem = Path(plot_id).stem if plot_id.endswith(".json") else plot_id
        base = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "plot"
        image, n = directory / f"{base}.png", 1
        while any(image == taken for _, taken in written):  # two plots of one name: roc.png, roc_1.png
            image, n = directory / f"{base}_{n}.png", n + 1
        write_bytes(vl_convert.vegalite_to_png(spec), image)
        written.append((plot_id, image))
    return written


def recall_gate(metrics_diff: dict, settings: params.ReviewParams, baseline: str) -> tuple[str, str | None]:
    """The gate on hold-out recall: (a line for the report, the failure or None).

    ``metrics_diff`` is `dvc metrics diff BASELINE --all --json`.
    """
    recall = metrics_diff.get(str(paths.EVALUATE_METRICS), {}).get("recall", {})
    new, old = recall.get("new"), recall.get("old")
    if new is None:
        return "no hold-out recall in the workspace", f"review: no recall in {paths.EVALUATE_METRICS}: run dvc repro first"
    line = f"hold-out recall {new:.4f}" + (f" ({baseline}: {old:.4f})" if old is not None else f" ({baseline} has none)")
    limits = f"review.recall_floor {settings.recall_floor:g}, review.recall_drop_tolerance {settings.recall_drop_tolerance:g}"
    if new < settings.recall_floor:
        failure = f"review: hold-out recall {new:.4f} is below review.recall_floor {settings.recall_floor:g}"
    elif old is not None and old - new > settings.recall_drop_tolerance:
        failure = (f"review: hold-out recall fell {old - new:.4f} below {baseline}'s {old:.4f} "
                   f"(review.recall_drop_tolerance {settings.recall_drop_tolerance:g})")
    else:
        failure = None
    return f"{line}; {limits}: **{'fail' if failure else 'pass'}**", failure


def _table(markdown: str) -> str:
    """A Markdown table, or "" when it has a header and no rows (DVC prints one when nothing changed)."""
    lines = markdown.strip().splitlines()
    return "\n".join(lines) if len(lines) > 2 else ""


def _read_at(path: Path, columns: list[str], baseline: str | None) -> pl.DataFrame:
    """A DVC-tracked parquet file of the workspace, or of a revision from the DVC cache (or its remote)."""
    if baseline is None:
        return pl.read_parquet(path, columns=columns)
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        with dvc.api.open(str(path), rev=baseline, mode="rb") as file:
            return pl.read_parquet(file, columns=columns)
    except (DvcException, FileNotFoundError) as error:
        raise PipelineError(f"{baseline}'s {path} is not in the DVC cache ({type(error).__name__}): "
                            "`dvc fetch` it, or run `dvc repro` at that revision") from None


def data_section(baseline: str, threshold: float) -> str:
    """The review's data section: which movies the changes in metrics/data.json are, and the
    two models compared on the movies both held out."""
    try:
        old, new = (data_diff.labeled_rows(*(_read_at(path, data_diff.KEY, rev) for path in data_diff.SIDES.values()))
                    for rev in (baseline, None))
        changes = data_diff.changes(old, new, baseline)
        shared = data_diff.shared_hold_out(_read_at(paths.PREDICTIONS, data_diff.SCORED, baseline),
                                           _read_at(paths.PREDICTIONS, data_diff.SCORED, None), threshold, baseline)
    except PipelineError as error:
        return f"No row-by-row comparison: {error}."
    return f"{changes}\n\n{shared}"


def review_report(baseline: str, images: list[tuple[str, Path]], image_base: Path, gate: str, data: str) -> str:
    """The code-review comment: metrics and params of the workspace against ``baseline``, what
    changed in the data, the plots (images relative to ``image_base``, where the report is
    read) and the gate."""
    metrics = _table(_dvc("metrics", "diff", baseline, "--md")) or "No metric changed."
    params_ = _table(_dvc("params", "diff", baseline, "--md")) or "No param changed."
    figures = "\n\n".join(
        f"![{plot_id}]({Path(os.path.relpath(image, image_base)).as_posix()})" for plot_id, image in images
    ) or "No plots."
    return (
        f"## Recall gate\n\n{gate}\n\n## Metrics against {baseline}\n\n{metrics}\n\n"
        f"## Data against {baseline}\n\n{data}\n\n"
        f"## Params against {baseline}\n\n{params_}\n\n## Plots: workspace and {baseline}\n\n{figures}\n"
    )


def plots(arguments: argparse.Namespace) -> None:
    write_text(render_offline(_dvc_plots(arguments.revisions)), arguments.out)
    print(f"wrote {arguments.out} (no network needed to view it)")


def review(arguments: argparse.Namespace) -> None:
    settings = params.load()
    images = write_pngs(_dvc_plots([arguments.baseline]), arguments.plots_dir)
    diff = json.loads(_dvc("metrics", "diff", arguments.baseline, "--all", "--json") or "{}")
    gate, failure = recall_gate(diff, settings.review, arguments.baseline)
    image_base = arguments.out.parent if arguments.out else Path(".")
    data = data_section(arguments.baseline, settings.evaluate.threshold)
    report = review_report(arguments.baseline, images, image_base, gate, data)
    if arguments.out:
        write_text(report, arguments.out)
    else:
        print(report, end="")
    if failure:  # after the report: the reader sees why
        raise PipelineError(failure)


def check_params(arguments: argparse.Namespace) -> None:
    params.check(arguments.overrides)
    setting = f" with {' '.join(arguments.overrides)}" if arguments.overrides else ""
    print(f"{paths.PARAMS}{setting}: valid")


def publish(arguments: argparse.Namespace) -> None:
    settings = params.load()
    labeled = scoring.labeled(
        pl.read_parquet(paths.OUT_OF_FOLD), pl.read_parquet(paths.PREDICTIONS), settings.evaluate.threshold
    ).with_columns(model_sha256=pl.lit(hashlib.sha256(paths.MODEL.read_bytes()).hexdigest()))
    table = database.identifier(arguments.table or settings.publish.table)
    with database.connect() as conn:
        written = database.replace_rows(
            conn, table, scoring.predictions_table(table), labeled.iter_slices(settings.publish.batch_rows)
        )
    log.info("%d training rows -> %s (threshold %.2f; the hold-out's by the model, the rest out of fold)",
             written, arguments.table or settings.publish.table, settings.evaluate.threshold)


def _table_rows(table_name: str, scorer: scoring.Scorer, settings: params.Params, every: bool) -> Iterator[pl.DataFrame]:
    """Rows of a table in the atp.training shape with their label and kind: the backlog
    (stages/rows.py: kept media types that are not training rows), or ``every`` row."""
    table = database.identifier(table_name)
    needed = [*scoring.required_columns(scorer.spec), "media_type"]
    with database.connect() as conn:
        available = database.table_columns(conn, table)
        missing = [c for c in needed if c not in available]
        if missing:
            raise PipelineError(f"table {table_name} lacks required column(s) {', '.join(missing)}")
        # the label and the flags that decide a row's kind, where the table has them
        columns = [c for c in schema.COLUMNS if c.name in needed or (c.name in rows.DECIDING and c.name in available)]
        query = database.select_query(table, columns, available)
        with closing(database.read_frames(conn, query, columns, settings.publish.batch_rows)) as frames:
            for frame in frames:
                if "label" not in frame.columns:  # a table of new movies only
                    frame = frame.with_columns(label=pl.lit(None, pl.String))
                classified = rows.classify(frame, settings.prep)
                yield classified if every else classified.filter(rows.BACKLOG)


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
        batches = _table_rows(arguments.table or settings.extract.table, scorer, settings, arguments.all)
        kept = ["label", rows.KIND]
    elif arguments.input:
        batches = _file_rows(arguments.input, batch_rows)
        kept = []
    else:
        raise PipelineError("predict needs an input parquet file or --from-db")
    written = write_parquet_batches(
        (scorer.scored(batch, settings.evaluate.threshold).with_columns(batch.select(kept)) for batch in batches),
        arguments.out,
    )
    which = "every row" if arguments.all else "the backlog (no label, or a label no person confirmed)"
    log.info("%d rows scored -> %s (threshold %.2f; %s)", written, arguments.out, settings.evaluate.threshold,
             which if arguments.from_db else arguments.input)


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
        help="the code-review report: recall gate, metrics and params diff, plots as PNG",
        description="Print (or write) the report CI posts on a pull request: the gate on hold-out recall "
        "(review.recall_floor, review.recall_drop_tolerance in params.yaml), `dvc metrics diff BASELINE --md`, "
        "`dvc params diff BASELINE --md` and the DVC plots of both as PNG images. Exits 1 after the report "
        "when the gate fails. Run `dvc repro` first.",
    )
    compare.add_argument("baseline", nargs="?", default="main", help="revision to compare with (default main)")
    compare.add_argument("-o", "--out", type=Path, help="write the Markdown here instead of printing it")
    compare.add_argument("--plots-dir", type=Path, default=REVIEW_PLOTS,
                         help=f"where the PNG images go (default {REVIEW_PLOTS})")
    compare.set_defaults(handler=review)

    checker = commands.add_parser(
        "params", help="check params.yaml, with KEY=VALUE overrides as dvc exp run -S would set them",
        description="`reel-driver params check [KEY=VALUE ...]` validates params.yaml (with the overrides "
        "applied, nothing written) and names a mistyped key's nearest match; DVC itself stops an unknown "
        "-S key with no suggestion.",
    )
    checker.add_argument("action", choices=["check"])
    checker.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. scale_pos_weight=9 evaluate.threshold=0.3")
    checker.set_defaults(handler=check_params)

    writer = commands.add_parser(
        "publish",
        help="write a prediction for every training row (a label a person confirmed) to PostgreSQL",
        description="Write one row per training row (imdb_id, prediction, probability, cm_value at "
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
                        help="score the backlog of --table (default extract.table): rows of prep.media_types with "
                        "no label or a label no person confirmed (reviewed FALSE); the output keeps label and kind")
    scorer.add_argument("--table", help="schema-qualified table for --from-db")
    scorer.add_argument("--all", action="store_true", help="with --from-db: score every row, training rows too")
    scorer.add_argument("-o", "--out", type=Path, required=True, help="output parquet file")
    scorer.set_defaults(handler=predict)
    return root


def main() -> None:
    arguments = parser().parse_args()
    run_stage(lambda: arguments.handler(arguments))


if __name__ == "__main__":
    main()
