"""`reel-driver`: commands around the pipeline (the pipeline itself is `dvc repro`)."""

import argparse
import html
import json
import subprocess
import sys
from pathlib import Path

import vl_convert

from stages.errors import PipelineError, run_stage
from stages.outputs import write_text

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
    return root


def main() -> None:
    arguments = parser().parse_args()
    run_stage(lambda: arguments.handler(arguments))


if __name__ == "__main__":
    main()
