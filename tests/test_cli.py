"""reel-driver: a thin dispatcher; a command loads only what it uses."""

import subprocess
import sys

import pytest

from reel_driver import cli
from tests.conftest import REPO

COMMANDS = ("plots", "review", "params", "publish", "predict", "promote", "serve")


def test_every_command_parses_to_its_handler(capsys) -> None:
    parser = cli.parser()
    assert parser.parse_args(["plots", "main", "-o", "x.html"]).revisions == ["main"]
    promote = parser.parse_args(["promote", "7", "--force", "the owner relabeled the hold-out"])
    assert (promote.version, promote.force, promote.handler) == ("7", "the owner relabeled the hold-out", cli.promote)
    serve = parser.parse_args(["serve", "--port", "8123"])
    assert (serve.host, serve.port, serve.log_requests) == (None, 8123, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["train"])
    assert "invalid choice: 'train'" in capsys.readouterr().err
    parser.print_help()
    listed = capsys.readouterr().out
    assert all(f"    {command} " in listed for command in COMMANDS)


# what each command imports when it runs, by module; MLflow takes 2 s to import
IMPORTS = """
import sys
import reel_driver.cli
from reel_driver.cli import COMMAND_MODULES
if "{module}" != "cli":
    __import__(COMMAND_MODULES["{module}"])
print(" ".join(sorted(m for m in ("adbc_driver_manager", "mlflow", "psycopg", "vl_convert", "xgboost") if m in sys.modules)))
"""


@pytest.mark.parametrize(("module", "loaded"), [
    ("cli", ""), ("predict", "adbc_driver_manager xgboost"), ("publish", "adbc_driver_manager psycopg"), ("review", "vl_convert"),
    ("promote", "mlflow xgboost"), ("serve", "mlflow xgboost"),
])
def test_a_command_imports_only_what_it_uses(module: str, loaded: str) -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTS.format(module=module)], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == loaded.split()


def test_params_check_names_the_key(tmp_path) -> None:
    ok = subprocess.run([sys.executable, "-m", "reel_driver.cli", "params", "check", "scale_pos_weight=9"], cwd=REPO,
                        capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (0, "params.yaml with scale_pos_weight=9: valid\n")
    bad = subprocess.run([sys.executable, "-m", "reel_driver.cli", "params", "check", "serve.port=0"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "serve.port = 0" in bad.stderr
