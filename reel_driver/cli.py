"""`reel-driver`: commands around the pipeline (the pipeline itself is `dvc repro`).

A thin dispatcher: each command's work lives in its own module, imported only when
that command runs (serve and promote load MLflow; predict and params do not).
"""

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

from reel_driver.config import params, paths
from reel_driver.config.errors import run_stage

OFFLINE_PLOTS = Path("dvc_plots/offline.html")
REVIEW_PLOTS = Path("dvc_plots/review")


# each command's module, imported only when the command runs (cli itself imports config alone)
COMMAND_MODULES = {
    "predict": "reel_driver.commands.predict",
    "publish": "reel_driver.commands.publish",
    "promote": "reel_driver.commands.promote",
    "retrain": "reel_driver.commands.retrain",
    "review": "reel_driver.review.report",
    "serve": "reel_driver.serving.api",
}


def _command(name: str) -> ModuleType:
    return importlib.import_module(COMMAND_MODULES[name])


def check_params(arguments: argparse.Namespace) -> None:
    params.check(arguments.overrides)
    setting = f" with {' '.join(arguments.overrides)}" if arguments.overrides else ""
    print(f"{paths.PARAMS}{setting}: valid")


def promote(arguments: argparse.Namespace) -> None:
    print(_command("promote").promote(arguments.version, arguments.force))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="reel-driver", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    offline = commands.add_parser(
        "plots",
        help="render the DVC plots to one HTML file that needs no network",
        description="Render the pipeline's DVC plots (or a diff against revisions) into one self-contained "
        "HTML file with inline SVG. `dvc plots show` writes HTML that loads Vega from a CDN; this does not.",
    )
    offline.add_argument("revisions", nargs="*", help="revisions to compare, as for `dvc plots diff` (e.g. main)")
    offline.add_argument("-o", "--out", type=Path, default=OFFLINE_PLOTS, help=f"output file (default {OFFLINE_PLOTS})")
    offline.set_defaults(handler=lambda a: _command("review").offline_plots(a.revisions, a.out))

    compare = commands.add_parser(
        "review",
        help="the code-review report: recall gate, metrics and params diff, plots as PNG",
        description="Print (or write) the report CI posts on a pull request: the gate on hold-out recall "
        "(review.recall_floor, review.recall_drop_tolerance in params.yaml), `dvc metrics diff BASELINE --md`, "
        "`dvc params diff BASELINE --md` and the DVC plots of both as PNG images, from the committed run: "
        "nothing is re-run, no database is needed. Exits 1 after the report when the gate fails, and before "
        "it, in one line, when dvc.lock does not match the code, params or metrics.",
    )
    compare.add_argument("baseline", nargs="?", default="main", help="revision to compare with (default main)")
    compare.add_argument("-o", "--out", type=Path, help="write the Markdown here instead of printing it")
    compare.add_argument("--plots-dir", type=Path, default=REVIEW_PLOTS,
                         help=f"where the PNG images go (default {REVIEW_PLOTS})")
    compare.set_defaults(handler=lambda a: _command("review").review(a.baseline, a.out, a.plots_dir))

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
    writer.set_defaults(handler=lambda a: _command("publish").publish(a.table))

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
    scorer.set_defaults(handler=lambda a: _command("predict").predict(a.input, a.from_db, a.table, a.all, a.out))

    promoter = commands.add_parser(
        "promote",
        help="make a registered version the champion that reel-driver serve serves, if review's gate passes",
        description="Move the MLflow registry alias `champion` of the model `reel-driver` to VERSION (default: "
        "the newest version of the workspace's models/model.json) when its hold-out recall passes review.* "
        "in params.yaml against the current champion's (with no champion, review.recall_floor alone). "
        "A refusal is one line saying why.",
    )
    promoter.add_argument("version", nargs="?", help="registered version (default: the workspace's model)")
    promoter.add_argument("--force", metavar="REASON",
                          help="promote even if the gate fails; the reason is kept as a tag of the version")
    promoter.set_defaults(handler=promote)

    retrainer = commands.add_parser(
        "retrain",
        help="the weekly job: retrain on the table if its reviewed rows changed, gate, promote and publish",
        description="Clone $REEL_DRIVER_GIT_URL (branch $REEL_DRIVER_GIT_BRANCH, default main), dvc pull, "
        "dvc repro on the table; only when train ran: dvc push, the run to a branch retrain/..., then promote's "
        "gate: passed, atp.prediction is replaced and the champion moves together. Exit codes: 0 promoted, "
        "3 nothing to retrain, 4 refused by the gate, 1 failed (nothing changed). Settings from the "
        "environment: docs/deploying.md.",
    )
    retrainer.set_defaults(handler=lambda a: sys.exit(_command("retrain").retrain()))

    server = commands.add_parser(
        "serve",
        help="serve the champion over the media pipeline's prediction API (/reel-driver/...)",
        description="Answer POST /reel-driver/api/predict and /reel-driver/api/predict_batch, "
        "GET /reel-driver/health and /reel-driver/api/model with the registry's champion version, "
        "swapping in a new champion within serve.poll_seconds of a promote. Defaults from serve.* in params.yaml.",
    )
    server.add_argument("--host", help="interface to listen on (default serve.host)")
    server.add_argument("--port", type=int, help="port (default serve.port)")
    server.add_argument("--log-requests", action="store_true", help="one line per request (default serve.log_requests)")
    server.set_defaults(handler=lambda a: _command("serve").serve(a.host, a.port, a.log_requests))
    return root


def main() -> None:
    arguments = parser().parse_args()
    run_stage(lambda: arguments.handler(arguments))


if __name__ == "__main__":
    main()
