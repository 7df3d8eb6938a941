"""The two images built from the Dockerfile and run as the owner's cluster runs them: the serve
container against a real `mlflow server` and PostgreSQL on loopback (the container on the host's
network), and the train container's weekly job three times. Run with `pytest --images
tests/test_images.py` (CI runs it as a step of its own: it builds two images, minutes).

No container registry is reachable here and the package index is not from inside a container,
so the base image is Debian's packages (mmdebstrap) in place of python:3.11-slim-bookworm, and the
build installs from wheels downloaded on the host (a pip.conf mounted for the build); the
Dockerfile itself is the ordinary one."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reel_driver.commands import retrain
from reel_driver.data import sample
from tests.conftest import REPO, TrackingServer, free_port, insert_rows
from tests.test_owners_cluster import _parity
from tests.test_retrain import Owner, _main_with_its_run
from tests.test_scoring import hold_out_raw
from tests.test_serve import MediaPipeline, Server, items_of, requests, scraped, wait_for

pytestmark = [pytest.mark.images, pytest.mark.timeout(2400)]
# this machine's cgroups are hybrid: runc and cgroupfs, and limits that need not be raised
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
LIMITS = ["--ulimit", "nofile=10000:20000", "--ulimit", "nproc=4096:4096"]
BASE = "localhost/reel-driver-test-base:bookworm"
UID = 10001  # the images' user


def podman(*args: str, timeout: float = 600, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    assert not ok or done.returncode == 0, f"podman {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def report(pytestconfig: pytest.Config):
    """Figures for the CI log (the sizes, the build times, the job's exit codes), past pytest's capture."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def line(text: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\nimages: {text}", flush=True)

    return line


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, report) -> Iterator[dict[str, str]]:
    for tool in ("podman", "mmdebstrap", "runc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed: apt-get install podman runc mmdebstrap")
    work = tmp_path_factory.mktemp("images")
    started = time.monotonic()
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3,python3-venv,ca-certificates,git,libgomp1",
                    "bookworm", str(work / "rootfs.tar")], check=True, timeout=900)
    podman("import", str(work / "rootfs.tar"), BASE)
    report(f"base image (mmdebstrap bookworm minbase, python3, git, libgomp1) in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-r", str(REPO / "requirements.lock"), "setuptools",
                    "-w", str(work / "wheels")], check=True, timeout=1800)
    report(f"wheels of requirements.lock on the host in {time.monotonic() - started:.0f} s")
    (work / "pip.conf").write_text("[global]\nno-index = true\nfind-links = /wheels\n")
    built = {}
    try:
        yield _built(work, built, report)
    finally:  # gigabytes a run: a machine that runs the suite often would fill its disk
        podman("rmi", "--force", *built.values(), BASE, ok=False)


def _built(work: Path, built: dict[str, str], report) -> dict[str, str]:
    """Both targets, tagged as they are built (so that a failed second build still removes the first)."""
    for target in ("serve", "train"):
        started = time.monotonic()
        tag = f"localhost/reel-driver-{target}:test"
        built[target] = tag
        # docker format: OCI images drop HEALTHCHECK; no layers kept: nothing of the build outlives the test
        podman("build", "--format", "docker", "--layers=false", "--target", target, "--build-arg", f"BASE_IMAGE={BASE}", *LIMITS,
               "--volume", f"{work / 'wheels'}:/wheels:ro", "--volume", f"{work / 'pip.conf'}:/etc/pip.conf:ro",
               "--tag", tag, str(REPO), timeout=1800)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        report(f"{target} image built in {time.monotonic() - started:.0f} s: {size / 2**20:.0f} MiB")
    return built


def _reachable(path: Path) -> None:
    """The container's user may pass through ``path``'s folders (pytest's are the owner's alone)."""
    for folder in [path, *path.parents]:
        if folder == Path("/tmp") or folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o711)


def _writable(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        item.chmod(item.stat().st_mode | (0o777 if item.is_dir() else 0o666))


def test_the_serve_image_is_what_the_owner_runs(images: dict[str, str], report) -> None:
    inspected = json.loads(podman("image", "inspect", images["serve"]).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}" and config["StopSignal"] == "SIGTERM"
    assert config["Cmd"] == ["reel-driver", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/reel-driver/health" in " ".join(inspected["Healthcheck"]["Test"])
    train = json.loads(podman("image", "inspect", images["train"]).stdout)[0]["Config"]
    assert train["User"] == f"{UID}:{UID}" and train["Cmd"] == ["reel-driver", "retrain"]
    for image in images.values():  # the ensemble's members load (LightGBM needs the system's OpenMP)
        loaded = podman("run", "--rm", *LIMITS, image, "python", "-c",
                        "import catboost, lightgbm, xgboost; print(lightgbm.__version__)", ok=False)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
    # what the serve image weighs, by package: the report's line for the note
    largest = podman("run", "--rm", *LIMITS, images["serve"], "sh", "-c",
                     "du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | head -10").stdout.split("\n")
    report("serve image's largest packages (MiB): " + ", ".join(
        f"{Path(path).name} {size}" for size, path in (row.split("\t") for row in largest if row)))


def test_the_images_serve_and_retrain_on_the_owners_servers(images: dict[str, str], atp_db: str,
                                                            tmp_path: Path, report) -> None:
    insert_rows(atp_db, sample.generate(1200, 7))
    tracking = TrackingServer(f"sqlite:///{tmp_path / 'mlflow.db'}", free_port(), tmp_path / "mlflow.log",
                              artifacts=tmp_path / "artifacts")
    tracking.start()
    serve_name, job_name = f"reel-driver-serve-{os.getpid()}", f"reel-driver-retrain-{os.getpid()}"
    try:
        owner = Owner(tmp_path, atp_db, tracking)
        _main_with_its_run(owner)
        main = tmp_path / "main"
        for path in (tmp_path, Path(atp_db.split("host=")[1].split("&")[0])):  # the database's socket folder
            _reachable(path)
        _writable(owner.origin)
        (tmp_path / "gitconfig").write_text("[safe]\n\tdirectory = *\n")
        _writable(tmp_path / "dvc-remote")
        # what the ConfigMap and the Secret give the pods; the folders under /tmp are the git and DVC
        # remotes' and the database's socket (the owner's are URLs)
        pod_env = {"MLFLOW_TRACKING_URI": tracking.uri, "REEL_DRIVER_PG_DSN": atp_db,
                   retrain.GIT_URL: owner.origin.as_uri(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                   # the remotes here belong to the test's user, not the image's (a global config: git's
                   # local transport drops GIT_CONFIG_COUNT)
                   "GIT_CONFIG_GLOBAL": str(tmp_path / "gitconfig")}
        env_args = [argument for key, value in pod_env.items() for argument in ("--env", f"{key}={value}")]
        common = ["--network", "host", "--volume", "/tmp:/tmp", *LIMITS, *env_args]

        # ---- the serve container: the contract, parity with evaluate, /metrics ----
        # the image's own command, on its own port (the host's network: 8000 must be free here)
        port = 8000
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "port 8000 is taken: the serve image listens there"
        settings = (main / "params.yaml").read_text().replace("poll_seconds: 30 ", "poll_seconds: 1 ")
        (tmp_path / "serve-params.yaml").write_text(settings)
        podman("run", "--detach", "--name", serve_name, *common,
               "--volume", f"{tmp_path / 'serve-params.yaml'}:/app/params.yaml:ro", images["serve"])
        server = Server(port, {}, tmp_path / "unused.log", tracking.uri)

        def health() -> int:
            try:
                return server.client().call("GET", "/reel-driver/health").status
            except OSError:
                return 0

        wait_for(lambda: health() == 200, 180, "the serve container did not load the champion")
        assert podman("healthcheck", "run", serve_name, ok=False).returncode == 0  # the image's own check
        hold_out = hold_out_raw(main)
        gap = _parity(server.client(), hold_out, main)
        report(f"serve container: parity with evaluate on {hold_out.height} hold-out movies, largest gap {gap:.1e}")
        assert gap <= 1e-6
        one = server.client().call("POST", "/reel-driver/api/predict", items_of(hold_out.head(1))[0])
        assert one.status == 200 and set(one.json) == {"imdb_id", "probability", "prediction"}, one.text
        assert one.headers["x-model-version"] == "1"
        metrics = scraped(server)
        assert metrics[requests("/reel-driver/api/predict_batch", 200)] == 1
        assert metrics[requests("/reel-driver/api/predict", 200)] == 1
        assert metrics[("reel_driver_served_model_version", ())] == 1
        assert metrics[("reel_driver_items_scored_total", ())] == hold_out.height + 1

        # ---- the media pipeline's calls, the whole time the jobs run ----
        calls = MediaPipeline(server, items_of(hold_out.head(20)))
        calls.start()

        def job() -> subprocess.CompletedProcess:
            started = time.monotonic()
            # named: a job that outlives its timeout is removed in the end like the serve container
            done = podman("run", "--rm", "--name", job_name, *common, images["train"], timeout=1200, ok=False)
            report(f"train container's job: exit {done.returncode} in {time.monotonic() - started:.0f} s")
            return done

        def swapped_to(version: str) -> None:
            try:
                wait_for(lambda: version in calls.served, 60, f"the serve container did not swap to version {version}")
            except AssertionError as error:
                logs = podman("logs", serve_name, ok=False)
                raise AssertionError(f"{error}; calls failed: {calls.failures[-5:]}; the server's log: "
                                     f"{(logs.stdout + logs.stderr)[-3000:]}") from None

        # ---- the weekly job three times: a relabeled row, then nothing, then another ----
        owner.relabel(owner.published_ids("out_of_fold", "would_not_watch"))
        first = job()
        assert first.returncode == retrain.PROMOTED, first.stderr[-3000:]
        assert owner.champion() == "2"
        swapped_to("2")
        second = job()
        assert second.returncode == retrain.NOTHING_TO_RETRAIN, second.stderr[-3000:]
        assert "did not change since retrain/" in second.stderr and owner.champion() == "2"
        assert len(owner.client.search_model_versions()) == 2  # its last run was the first job's branch: no train
        owner.relabel(owner.published_ids("out_of_fold", "would_not_watch"))
        third = job()
        assert third.returncode == retrain.PROMOTED, third.stderr[-3000:]
        swapped_to("3")
        calls.stop()
        assert calls.failures == [] and calls.served == {"1", "2", "3"}, (calls.failures, calls.served)
        assert len([name for name in owner.branches() if name.startswith(retrain.BRANCH_PREFIX)]) == 2
        report(f"served versions {sorted(calls.served)} with no failed request across two swaps")

        # ---- SIGTERM under load: every request the server took is answered ----
        answered, refused, failed = _load_through_sigterm(port, items_of(hold_out.head(50)), serve_name)
        report(f"SIGTERM under load: {answered} answered, {failed} failed, then {refused} connections refused or "
               "reset before the server took them")
        assert failed == 0 and answered > 0 and refused > 0
        assert podman("wait", serve_name, timeout=60).stdout.strip() == "0"
    finally:
        podman("rm", "--force", serve_name, job_name, ok=False)
        tracking.stop()


def _load_through_sigterm(port: int, items: list[dict], container: str) -> tuple[int, int, int]:
    """Four clients, each request on a new connection, until the server stops accepting; SIGTERM
    half a second in. A request the server took and did not answer with a 200 is a failure. A
    connection reset (RST) is one the kernel had queued and the server never took: closing its
    listener resets those, as Kubernetes avoids by taking the pod out of the Service first (the
    Deployment's preStop); it counts with the refused ones."""
    body = json.dumps({"items": items})
    counts = {"answered": 0, "refused": 0, "failed": 0}
    lock = threading.Lock()

    def client() -> None:
        while True:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.connect()
                connection.request("POST", "/reel-driver/api/predict_batch", body=body,
                                   headers={"Content-Type": "application/json", "Connection": "close"})
                outcome = "answered" if connection.getresponse().status == 200 else "failed"
            except (ConnectionRefusedError, ConnectionResetError):
                with lock:
                    counts["refused"] += 1
                return
            except OSError:  # taken, then closed without an answer (http.client.RemoteDisconnected, a timeout)
                outcome = "failed"
            finally:
                connection.close()
            with lock:
                counts[outcome] += 1

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(0.5)
    podman("kill", "--signal", "TERM", container)
    for thread in clients:
        thread.join(timeout=60)
    return counts["answered"], counts["refused"], counts["failed"]

