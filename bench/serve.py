"""Benchmark: `reel-driver serve` against `mlflow models serve` on the same model and rows.

    pip install -e '.[dev]'
    python bench/serve.py [--sample] [--seconds S]

In one run:

  1. A scratch copy of this repository (the working tree) runs the pipeline on the
     real export (../shared/data/atp_training.parquet; the embedded sample where it
     is absent, or with --sample), registers the model in the scratch's own MLflow
     store and promotes it: both servers serve that one registered version.
  2. Bodies from the hold-out rows, encoded once beforehand: single movies, and
     batches of 50. reel-driver gets what the media pipeline sends (its 18 fields,
     every number a JSON float); MLflow gets `dataframe_records` of the columns its
     signature declares (the 17 the model reads), so its bodies are the smaller.
  3. Each server runs alone in its own process: `reel-driver serve`, then
     `mlflow models serve --env-manager local` (one uvicorn worker each, both
     defaults). A separate load process (threads on keep-alive connections, only
     http.client imported) sends the bodies with 1 and 4 concurrent clients for S
     seconds after a 1 s warm-up: p50/p99 latency, requests/s and items/s. The
     server's RSS (its whole process tree) is read at the end.
  4. The floor: a fresh process with only the scorer's imports times the feature
     build and the model (booster and ensemble members) on the same 50-row batches, already in a frame (no HTTP, no
     JSON, no validation).
  5. /metrics on: during reel-driver's load a Prometheus stand-in scrapes /metrics
     once a second, and at the end every request sent must be counted there. What
     the instrumentation costs a request: a fresh process with only the telemetry
     imports calls an ASGI app that answers at once, with and without the
     middleware (the best of five runs of 20,000 requests each).

The first batch's probabilities must agree between the two servers (1e-6). Then
the ratios and the targets: a 50-item batch's p50 latency (1 client) <= 0.5 x the
reference's, and items/s with 4 clients >= 2 x the reference's. A missed target
or a failed request exits 1.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BATCH = 50
CLIENTS = (1, 4)


# ---------------------------------------------------------------- the load process (http.client only)


def _load(port: int, path: str, bodies_file: str, clients: int, seconds: float, scrape: str = "") -> None:
    bodies = Path(bodies_file).read_bytes().splitlines()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    warm_until = time.perf_counter() + 1.0
    stop_at = warm_until + seconds
    scrapes = 0

    def prometheus() -> None:  # a scrape a second: the owner's Prometheus scrapes every 15 to 60 s
        nonlocal scrapes
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < stop_at:
            connection.request("GET", scrape)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures.append(f"{scrape} {response.status}")
            scrapes += 1
            time.sleep(1.0)

    sent = [0]  # warm-up included: what the server's own counter must show

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        n = index
        while (started := time.perf_counter()) < stop_at:
            connection.request("POST", path, body=bodies[n % len(bodies)], headers=headers)
            response = connection.getresponse()
            response.read()
            sent[0] += 1
            if response.status != 200:
                failures.append(f"{response.status}")
            if started >= warm_until:
                latencies[index].append(time.perf_counter() - started)
            n += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads += [threading.Thread(target=prometheus)] if scrape else []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(latency for per_client in latencies for latency in per_client)
    print(json.dumps({"requests": len(every), "seconds": seconds, "failures": len(failures),
                      "p50": every[len(every) // 2], "p99": every[min(len(every) - 1, int(len(every) * 0.99))],
                      "sent": sent[0], "scrapes": scrapes}))


# ---------------------------------------------------------------- the floor (scorer imports only)


def _floor(workspace: str, seconds: float) -> None:
    import polars as pl

    from reel_driver.config import paths
    from reel_driver.model import scoring

    os.chdir(workspace)
    scorer = scoring.Scorer.load(paths.FEATURES, paths.NORMALIZATION, paths.MODEL, paths.ENSEMBLE)
    held = pl.read_parquet(paths.PREDICTIONS).get_column("imdb_id")
    raw = pl.read_parquet(paths.RAW).filter(pl.col("imdb_id").is_in(held.implode()))
    batches = [raw.slice(start, BATCH) for start in range(0, raw.height - BATCH + 1, BATCH)]
    timings, n, stop_at = [], 0, time.perf_counter() + seconds
    while (started := time.perf_counter()) < stop_at:
        scorer.scored(batches[n % len(batches)], 0.35)
        timings.append(time.perf_counter() - started)
        n += 1
    timings.sort()
    print(json.dumps({"requests": len(timings), "seconds": sum(timings), "failures": 0,
                      "p50": timings[len(timings) // 2], "p99": timings[int(len(timings) * 0.99)]}))


# ---------------------------------------------------------------- the instrumentation (telemetry imports only)


def _instrumentation(requests: int) -> None:
    """What the /metrics middleware adds to one request: an ASGI app that answers at once, called
    with and without it, as uvicorn calls the server's (its counter and histogram by route and status)."""
    import asyncio

    from reel_driver.serving.telemetry import Instrumented, Telemetry

    class Route:
        path = "/reel-driver/api/predict_batch"

    async def bare(scope, receive, send) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message) -> None:
        pass

    async def seconds_per_request(app) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await app({"type": "http", "method": "POST", "path": Route.path}, receive, send)
        return (time.perf_counter() - started) / requests

    instrumented = Instrumented(bare, Telemetry())
    best = {"bare": float("inf"), "instrumented": float("inf")}
    for _ in range(5):  # the best of five: the least disturbed by the machine
        best["bare"] = min(best["bare"], asyncio.run(seconds_per_request(bare)))
        best["instrumented"] = min(best["instrumented"], asyncio.run(seconds_per_request(instrumented)))
    print(json.dumps(best))


def scraped_requests(port: int, route: str) -> float:
    """reel_driver_requests_total of ``route``'s 200s, read with prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "reel_driver_requests_total" and sample.labels["route"] == route
               and sample.labels["status"] == "200")


# ---------------------------------------------------------------- the run


def run(command: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (mlflow models serve starts uvicorn as a child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def post(port: int, path: str, body: bytes) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return json.loads(response.read())


def wait_until_up(port: int, path: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            sys.exit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"the server did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bodies(workspace: Path, env: dict) -> dict[str, Path]:
    """Each server's single and batch bodies, one JSON document per line, written by a child
    process with the project's imports (the load process has none)."""
    code = f"""
import json, polars as pl
from reel_driver.config import paths
from reel_driver.model import scoring
from reel_driver.preparation import features
from reel_driver.serving import api
held = pl.read_parquet(paths.PREDICTIONS).get_column("imdb_id")
raw = pl.read_parquet(paths.RAW).filter(pl.col("imdb_id").is_in(held.implode()))
sent = [f for f in api.Movie.model_fields if f != "production_companies"]  # what the media pipeline sends
items = [{{k: float(v) if isinstance(v, int) else v for k, v in row.items()}} for row in raw.select(sent).iter_rows(named=True)]
spec = features.FeatureSpec.load(paths.FEATURES, paths.NORMALIZATION)
declared = raw.select(scoring.required_columns(spec)).with_columns(pl.col(features.CONTINUOUS).cast(pl.Float64))
records = json.loads(declared.write_json())
n = {BATCH}
batches = [range(s, s + n) for s in range(0, len(items) - n + 1, n)]
write = lambda name, docs: open(name, "w").write("\\n".join(json.dumps(d) for d in docs) + "\\n")
write("ours_single.jsonl", items)
write("ours_batch.jsonl", [{{"items": [items[i] for i in b]}} for b in batches])
write("mlflow_single.jsonl", [{{"dataframe_records": [r]}} for r in records])
write("mlflow_batch.jsonl", [{{"dataframe_records": [records[i] for i in b]}} for b in batches])
print(len(items), len(batches))
"""
    rows, batches = run([sys.executable, "-c", code], workspace, env).split()
    print(f"bodies: {rows} hold-out rows as single movies, {batches} batches of {BATCH}")
    return {name: workspace / f"{name}.jsonl" for name in ("ours_single", "ours_batch", "mlflow_single", "mlflow_batch")}


def measure_server(name: str, command: list[str], ready: str, routes: dict[str, str], files: dict[str, Path], kind: str,
                   workspace: Path, env: dict, seconds: float, port: int, scrape: str = "") -> dict:
    log = workspace / f"{name}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=workspace, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_up(port, ready, process, log)
        figures = {}
        for size, suffix in ((1, "single"), (BATCH, "batch")):
            for clients in CLIENTS:
                out = run([sys.executable, __file__, "_load", str(port), routes[suffix],
                           str(files[f"{kind}_{suffix}"]), str(clients), str(seconds), scrape], workspace, env)
                figures[(size, clients)] = json.loads(out)
        figures["rss"] = tree_rss_mib(process.pid)
        if scrape:  # every request sent to a route, counted by the server
            figures["counted"] = {suffix: (scraped_requests(port, routes[suffix]),
                                           sum(figures[(size, clients)]["sent"] for clients in CLIENTS))
                                  for size, suffix in ((1, "single"), (BATCH, "batch"))}
        first_batch = files[f"{kind}_batch"].read_bytes().splitlines()[0]
        figures["first_batch"] = post(port, routes["batch"], first_batch)
        return figures
    finally:
        process.terminate()
        process.wait(timeout=30)


def line(name: str, size: int, clients: int, f: dict) -> str:
    per_second = f["requests"] / f["seconds"]
    return (f"  {name:<22} {size:>5} {clients:>7}  p50 {f['p50'] * 1000:7.2f} ms  p99 {f['p99'] * 1000:7.2f} ms  "
            f"{per_second:8.1f} req/s  {per_second * size:9.1f} items/s  failed {f['failures']}")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from search import (  # the scratch repository bench/search.py builds
        REAL_EXPORT,
        dvc,
        prepare,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load level (after 1 s warm-up)")
    parser.add_argument("--sample", action="store_true", help="the embedded sample even where the real export is")
    arguments = parser.parse_args()

    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        workspace = Path(scratch) / "repo"
        data = prepare(workspace, 42, REAL_EXPORT.exists() and not arguments.sample)
        store = f"sqlite:///{workspace / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI")}
        env |= {"MLFLOW_TRACKING_URI": store, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
        for stage in ("train", "evaluate"):  # -s: extract would replace the real rows with the sample's
            dvc(workspace, "repro", "-s", "-f", stage)
        print(f"model: {data}, split.seed 42; " + run([sys.executable, "-m", "reel_driver.cli", "promote"], workspace, env).strip())
        files = bodies(workspace, env)

        ours_port, theirs_port = free_port(), free_port()
        ours = measure_server("reel-driver serve", [sys.executable, "-m", "reel_driver.cli", "serve", "--port", str(ours_port)],
                              "/reel-driver/health", {"single": "/reel-driver/api/predict", "batch": "/reel-driver/api/predict_batch"}, files, "ours", workspace, env,
                              arguments.seconds, ours_port, scrape="/metrics")
        theirs = measure_server(
            "mlflow models serve",
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/reel-driver@champion", "-h", "127.0.0.1",
             "-p", str(theirs_port), "--env-manager", "local"],
            "/ping", {"single": "/invocations", "batch": "/invocations"}, files, "mlflow", workspace, env, arguments.seconds, theirs_port)
        floor = json.loads(run([sys.executable, __file__, "_floor", str(workspace), str(arguments.seconds)],
                               workspace, env))
        instrumentation = json.loads(run([sys.executable, __file__, "_instrumentation", "20000"], workspace, env))

    answered = ours.pop("first_batch"), theirs.pop("first_batch")
    if "results" not in answered[0] or "predictions" not in answered[1]:
        sys.exit(f"a server refused the first batch: {str(answered)[:3000]}")
    served = [r["probability"] for r in answered[0]["results"]]
    reference = [r["probability"] for r in answered[1]["predictions"]]
    agree = len(served) == len(reference) == BATCH and max(abs(a - b) for a, b in zip(served, reference)) <= 1e-6

    print(f"\n  {'server':<22} {'items':>5} {'clients':>7}")
    for (size, clients) in [(s, c) for s in (1, BATCH) for c in CLIENTS]:
        print(line("reel-driver serve", size, clients, ours[(size, clients)]))
        print(line("mlflow models serve", size, clients, theirs[(size, clients)]))
    print(line("floor (build+model)", BATCH, 1, floor))
    print(f"\n  server RSS at the end: reel-driver serve {ours['rss']:.0f} MiB, mlflow models serve {theirs['rss']:.0f} MiB "
          f"({ours['rss'] / theirs['rss']:.2f} x)")

    def rate(f: dict) -> float:
        return f["requests"] / f["seconds"]

    ratios = {}
    for size in (1, BATCH):
        for clients in CLIENTS:
            p50 = ours[(size, clients)]["p50"] / theirs[(size, clients)]["p50"]
            throughput = rate(ours[(size, clients)]) / rate(theirs[(size, clients)])
            ratios[(size, clients)] = (p50, throughput)
            print(f"  ratio {size:>2} item(s), {clients} client(s): p50 {p50:.3f} x reference, requests/s {throughput:.2f} x")
    print(f"  floor: a 50-row batch's build+booster p50 {floor['p50'] * 1000:.2f} ms = "
          f"{floor['p50'] / ours[(BATCH, 1)]['p50']:.2f} of reel-driver's request p50")
    cost = instrumentation["instrumented"] - instrumentation["bare"]
    print(f"  /metrics instrumentation: {cost * 1e6:.1f} us a request (ASGI app alone "
          f"{instrumentation['bare'] * 1e6:.1f} us, with the middleware {instrumentation['instrumented'] * 1e6:.1f} us) = "
          f"{cost / ours[(1, 1)]['p50']:.4f} of a single movie's p50, {cost / ours[(BATCH, 1)]['p50']:.4f} of a batch's; "
          f"scraped once a second during the load ({sum(ours[k]['scrapes'] for k in ratios)} scrapes)")
    counted = ours.pop("counted")
    print("  requests counted in /metrics / sent: " + ", ".join(
        f"{route} {int(seen)} / {sent}" for route, (seen, sent) in counted.items()))

    checks = [
        ("the two servers give the same probabilities on the first batch (1e-6)", agree),
        ("no request failed", all(f["failures"] == 0 for f in (*[ours[k] for k in ratios], *[theirs[k] for k in ratios]))),
        ("/metrics counted every request reel-driver answered", all(seen == sent for seen, sent in counted.values())),
        ("p50 of a 50-item batch (1 client) <= 0.5 x reference", ratios[(BATCH, 1)][0] <= 0.5),
        ("items/s of 50-item batches with 4 clients >= 2 x reference", ratios[(BATCH, 4)][1] >= 2.0),
    ]
    print("\n".join(f"  {'pass' if ok else 'FAIL'}  {name}" for name, ok in checks))
    if not all(ok for _, ok in checks):
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_load"]:
        _load(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]), sys.argv[7])
    elif sys.argv[1:2] == ["_floor"]:
        _floor(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1:2] == ["_instrumentation"]:
        _instrumentation(int(sys.argv[2]))
    else:
        main()
