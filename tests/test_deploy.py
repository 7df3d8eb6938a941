"""What the owner deploys: the Dockerfile (hadolint), the kustomize base (the Kubernetes schemas,
through kubernetes-validate), the image workflow (GitHub's workflow schema) and the lock both
images install from. The images themselves are built and run in tests/test_images.py."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO

MANIFESTS = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert found, f"{name} is a dev dependency: pip install -e '.[dev]'"
    return found


def _validate(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("kubernetes-validate"), "--strict", "--quiet", *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def _resources() -> dict[str, dict]:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    return {name: yaml.safe_load((MANIFESTS / name).read_text()) for name in kustomization["resources"]}


def test_the_dockerfile_passes_hadolint() -> None:
    linted = subprocess.run([_tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_every_manifest_passes_the_kubernetes_schemas() -> None:
    files = sorted(MANIFESTS / name for name in _resources())
    assert {path.name for path in MANIFESTS.glob("*.yaml")} == {path.name for path in files} | {"kustomization.yaml"}
    validated = _validate(*files)
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_the_validator_refuses_a_wrong_manifest(tmp_path: Path) -> None:
    cronjob = _resources()["retrain-cronjob.yaml"]
    cronjob["spec"]["jobTemplate"]["spec"]["activeDeadline"] = 7200  # not a field of a Job
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(cronjob))
    validated = _validate(tmp_path / "wrong.yaml")
    assert validated.returncode != 0 and "activeDeadline" in validated.stdout + validated.stderr


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (its kustomize) is not on this machine")
def test_the_kustomize_base_renders_to_valid_resources(tmp_path: Path) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    documents = list(yaml.safe_load_all(rendered.stdout))
    assert sorted(doc["kind"] for doc in documents) == ["ConfigMap", "CronJob", "Deployment", "Service"]
    assert all(doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reel-driver" for doc in documents)
    (tmp_path / "rendered.yaml").write_text(rendered.stdout)
    validated = _validate(tmp_path / "rendered.yaml")
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_the_deployment_is_the_owners() -> None:
    deployment = _resources()["serve-deployment.yaml"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 1
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000",
                                              "prometheus.io/path": "/metrics"}
    serve, = pod["spec"]["containers"]
    assert serve["ports"] == [{"name": "http", "containerPort": 8000}]
    assert serve["readinessProbe"]["httpGet"]["path"] == "/reel-driver/health"
    assert serve["livenessProbe"]["httpGet"]["path"].startswith("/reel-driver/")
    # out of the Service before SIGTERM, and the drain inside the grace period
    assert serve["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 5 + 10
    service = _resources()["serve-service.yaml"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_weekly_job_has_the_owners_limits() -> None:
    cronjob = _resources()["retrain-cronjob.yaml"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 2 * 3600 and job["backoffLimit"] == 1
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    retrain, = job["template"]["spec"]["containers"]
    assert retrain["resources"]["limits"] == {"cpu": "8", "memory": "8Gi"}
    from reel_driver.commands import retrain as job_module

    answers = job["podFailurePolicy"]["rules"][0]
    assert answers["action"] == "FailJob"  # an answer is not retried; only a failure is
    assert sorted(answers["onExitCodes"]["values"]) == sorted([job_module.NOTHING_TO_RETRAIN, job_module.REFUSED])


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]["containers"]


def test_secrets_come_from_a_secret_by_name() -> None:
    resources = _resources()
    assert not [name for name, doc in resources.items() if doc["kind"] == "Secret"]
    for name in ("serve-deployment.yaml", "retrain-cronjob.yaml"):
        container, = _containers(resources[name])
        assert {"secretRef": {"name": "reel-driver-secrets"}} in container["envFrom"], name
        assert "env" not in container, f"{name} sets variables inline"
    config = resources["configmap.yaml"]["data"]
    assert not [key for key in config if any(word in key for word in ("SECRET", "PASSWORD", "TOKEN", "DSN", "KEY"))]


def test_the_image_workflow_passes_githubs_schema() -> None:
    checked = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                              str(REPO / ".github" / "workflows" / "images.yml")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "images.yml").read_text())
    assert workflow["jobs"]["build"]["strategy"]["matrix"]["target"] == ["serve", "train"]


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(line) for line in project["dependencies"] + project["optional-dependencies"]["s3"]]
    pinned = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line)
            pinned[requirement.name.lower().replace("_", "-")] = next(iter(requirement.specifier)).version
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pinned, f"requirements.lock does not pin {name}: uv pip compile again (docs/deploying.md)"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"
