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


def _dvc_plots(revisions: list[str]) -> dict:
    command = ["plots", "diff", *revisions] if revisions else ["plots", "show"]
    result = subprocess.run([sys.executable, "-m", "dvc", *command, "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc {' '.join(command)} failed: {' '.join(result.stderr.split())}")
    return json.loads(result.stdout).get("data", {})


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
    return root


def main() -> None:
    arguments = parser().parse_args()
    run_stage(lambda: arguments.handler(arguments))


if __name__ == "__main__":
    main()
