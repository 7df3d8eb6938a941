"""bench/extract.py at a small size, so that the benchmark cannot rot."""

import ast
import importlib.util
import re
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import REPO

BENCH = REPO / "bench" / "extract.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_extract", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_runs_every_method_and_a_missed_target_fails_it() -> None:
    pytest.importorskip("psycopg2", reason="the dev extra: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "2000", "--repeat", "2"], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    for method in ("project", "adbc", "adbc-stream", "adbc-sorted", "psycopg2", "copy"):
        assert re.search(rf"^{method} +[\d.]+ +\d+ +[\d.]+", result.stdout, flags=re.MULTILINE), result.stdout
    assert "check: the 2 project runs give the same parquet bytes: yes" in result.stdout
    assert "check: project output equals what ADBC reads: yes" in result.stdout
    # at 2,000 rows interpreter start and imports decide the seconds: which targets hold here does
    # not matter, that a missed one is the exit code and the last line does
    targets = re.findall(r"^target (.+): (met|NOT met)$", result.stdout, flags=re.MULTILINE)
    assert len(targets) == 5, result.stdout
    missed = [label for label, state in targets if state == "NOT met"]
    assert result.returncode == (1 if missed else 0), result.stderr[-2000:]
    if missed:
        assert result.stderr.strip().splitlines()[-1] == f"missed targets: {'; '.join(missed)}"


@pytest.mark.parametrize(
    ("name", "modules"),
    [("adbc", {"adbc_driver_postgresql", "pyarrow"}), ("adbc-stream", {"adbc_driver_postgresql", "pyarrow"}),
     ("adbc-sorted", {"adbc_driver_postgresql", "pyarrow"}), ("psycopg2", {"polars", "psycopg2"}), ("copy", {"psycopg"})],
)
def test_each_reference_imports_only_its_own_libraries(name: str, modules: set[str]) -> None:
    nodes = list(ast.walk(ast.parse(load_bench().REFERENCES[name][0])))
    imported = {alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in nodes if isinstance(node, ast.ImportFrom)}
    assert {module.split(".")[0] for module in imported} - {"sys"} == modules


def test_sample_rows_have_unique_ids_and_fit_the_production_types() -> None:
    rows = load_bench().sample_rows(250, seed=3)  # a block of 250, all of it
    assert rows.height == 250 and rows.get_column("imdb_id").is_unique().all()
    assert rows.get_column("tmdb_votes").max() < 2**31


def test_array_literal_quotes_elements_and_keeps_nulls() -> None:
    frame = pl.DataFrame({"a": [["x", None, 'say "hi", \\ok'], [], None]})
    literal = frame.select(load_bench()._array_literal("a")).get_column("a").to_list()
    assert literal == ['{"x",NULL,"say \\"hi\\", \\\\ok"}', "{}", None]


def test_content_check_names_the_column_that_differs(tmp_path, atp_db: str) -> None:
    bench = load_bench()
    bench.fill(atp_db, 300, seed=1)
    cwd, command = bench.project_workdir(tmp_path / "project")
    env = {"REEL_DRIVER_PG_DSN": atp_db, "PYTHONPATH": str(REPO), "PATH": ""}
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    adbc = tmp_path / "adbc.parquet"
    subprocess.run([sys.executable, "-c", bench.REFERENCES["adbc"][0], atp_db, str(adbc)], check=True)
    ours = cwd / "data" / "raw" / "training.parquet"
    assert bench.content_differences(ours, adbc) == []
    changed = pl.read_parquet(ours).with_columns(pl.col("imdb_rating") + 0.01)
    changed.write_parquet(tmp_path / "changed.parquet")
    (difference,) = bench.content_differences(tmp_path / "changed.parquet", adbc)
    assert difference.startswith("imdb_rating: imdb_id tt")
