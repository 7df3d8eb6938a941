"""`reel-driver review` and `reel-driver plots`: the code-review report (recall gate, metrics,
data and params against a baseline revision, the plots as PNG) and the plots as one offline page."""

import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import vl_convert

from reel_driver.config import params, paths
from reel_driver.config.errors import PipelineError
from reel_driver.data.outputs import write_bytes, write_text
from reel_driver.model import metrics
from reel_driver.review import data_diff, lock


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
    failure = metrics.recall_gate(new, old, settings.recall_floor, settings.recall_drop_tolerance, baseline)
    return f"{line}; {limits}: **{'fail' if failure else 'pass'}**", failure and f"review: {failure}"


def _table(markdown: str) -> str:
    """A Markdown table, or "" when it has a header and no rows (DVC prints one when nothing changed)."""
    lines = markdown.strip().splitlines()
    return "\n".join(lines) if len(lines) > 2 else ""


def _read_at(path: Path, columns: list[str], revision: str | None) -> pl.DataFrame:
    """A DVC-tracked parquet file at ``revision`` (None: the workspace). DVC reads it from the
    workspace, its cache or the default remote, so a clone with a remote needs no `dvc pull`."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        with dvc.api.open(str(path), rev=revision, mode="rb") as file:
            return pl.read_parquet(file, columns=columns)
    except (DvcException, FileNotFoundError) as error:
        raise PipelineError(f"{revision or 'the workspace'}'s {path} is neither here nor in a DVC remote "
                            f"({type(error).__name__}): `dvc pull` it from the remote that holds it, "
                            "or run `dvc repro` at that revision") from None


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


def offline_plots(revisions: list[str], out: Path) -> None:
    write_text(render_offline(_dvc_plots(revisions)), out)
    print(f"wrote {out} (no network needed to view it)")


def review(baseline: str, out: Path | None, plots_dir: Path) -> None:
    settings = params.load()
    lock.check()  # the metrics below must be this code's and params': refuse a stale run
    images = write_pngs(_dvc_plots([baseline]), plots_dir)
    diff = json.loads(_dvc("metrics", "diff", baseline, "--all", "--json") or "{}")
    gate, failure = recall_gate(diff, settings.review, baseline)
    image_base = out.parent if out else Path(".")
    report = review_report(baseline, images, image_base, gate, data_section(baseline, settings.evaluate.threshold))
    if out:
        write_text(report, out)
    else:
        print(report, end="")
    if failure:  # after the report: the reader sees why
        raise PipelineError(failure)
