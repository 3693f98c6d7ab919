"""deploy/kubernetes/, checked without a cluster: the manifests parse, have the kinds and
keys a DaemonSet deployment needs, agree with each other, and carry the same rules as
deploy/prometheus/rules/."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY_DIR, RULES_DIR, run_monitor

KUBE_DIR = DEPLOY_DIR / "kubernetes"
APP_LABELS = {"app.kubernetes.io/name": "drift-monitor"}


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource in the kustomization, by kind."""
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBE_DIR / name).read_text()):
            assert document["kind"] not in by_kind, f"two {document['kind']}s"
            by_kind[document["kind"]] = document
    return by_kind


def daemon_config() -> dict[str, Any]:
    return yaml.safe_load(manifests()["ConfigMap"]["data"]["config.yaml"])


def pod_spec() -> dict[str, Any]:
    return manifests()["DaemonSet"]["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (main,) = pod_spec()["containers"]
    return main


def mounts() -> dict[str, dict[str, Any]]:
    return {mount["mountPath"]: mount for mount in container()["volumeMounts"]}


def volumes() -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod_spec()["volumes"]}


def test_kustomization_lists_every_manifest_in_the_folder():
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    on_disk = {path.name for path in KUBE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_manifests_have_the_expected_kinds_in_one_namespace():
    resources = manifests()
    assert set(resources) == {"Namespace", "ConfigMap", "DaemonSet", "Service",
                              "ServiceMonitor", "PrometheusRule", "NetworkPolicy"}
    namespace = resources.pop("Namespace")["metadata"]["name"]
    for kind, resource in resources.items():
        assert resource["metadata"]["namespace"] == namespace, kind
        assert resource["metadata"]["labels"].items() >= APP_LABELS.items(), kind


def test_daemonset_reads_host_logs_read_only_and_keeps_state_on_the_node():
    logs = volumes()["logs"]["hostPath"]
    state = volumes()["state"]["hostPath"]
    by_name = {mount["name"]: mount for mount in container()["volumeMounts"]}
    assert by_name["logs"]["readOnly"] is True
    assert state["type"] == "DirectoryOrCreate"
    assert logs["path"].startswith("/var/log/")
    config = daemon_config()
    assert by_name["state"]["mountPath"] == config["state_dir"]
    for source in config["sources"]:
        assert source["path"].startswith(by_name["logs"]["mountPath"] + "/"), source


def test_daemonset_runs_the_image_command_with_the_configmap():
    assert container()["args"] == ["drift-monitor", "run", "--config",
                                   "/etc/drift-monitor/config.yaml"]
    config_mount = mounts()["/etc/drift-monitor"]
    assert config_mount["readOnly"] is True
    assert volumes()[config_mount["name"]]["configMap"]["name"] == \
        manifests()["ConfigMap"]["metadata"]["name"]


def test_daemonset_container_is_locked_down():
    context = container()["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]


def test_daemonset_probes_use_healthz_and_readyz_on_the_metrics_port():
    port = container()["ports"][0]
    listen_port = int(daemon_config()["listen"].rsplit(":", 1)[1])
    assert port["containerPort"] == listen_port
    assert daemon_config()["listen"].startswith("0.0.0.0:"), "the pod IP must reach it"
    assert container()["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert container()["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}


def test_daemonset_selector_matches_its_pods():
    spec = manifests()["DaemonSet"]["spec"]
    assert spec["template"]["metadata"]["labels"].items() >= spec["selector"]["matchLabels"].items()


def test_service_and_servicemonitor_make_the_job_drift_monitor():
    resources = manifests()
    service, monitor = resources["Service"], resources["ServiceMonitor"]
    pod_labels = resources["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    # The Prometheus Operator names the job after the Service.
    assert service["metadata"]["name"] == "drift-monitor"
    assert service["spec"]["clusterIP"] == "None"
    assert pod_labels.items() >= service["spec"]["selector"].items()
    assert service["metadata"]["labels"].items() >= monitor["spec"]["selector"]["matchLabels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] == container()["ports"][0]["name"]


def test_prometheusrule_carries_the_rule_files_groups():
    groups = [group for path in sorted(RULES_DIR.glob("*.yml"))
              for group in yaml.safe_load(path.read_text())["groups"]]
    assert manifests()["PrometheusRule"]["spec"]["groups"] == groups


def test_prometheusrule_file_is_what_the_renderer_writes():
    spec = importlib.util.spec_from_file_location("render", KUBE_DIR / "render_prometheusrule.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert (KUBE_DIR / "prometheusrule.yaml").read_text() == render.render(), \
        "stale: run python deploy/kubernetes/render_prometheusrule.py"


def test_configmap_config_passes_check_config(tmp_path):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(manifests()["ConfigMap"]["data"]["config.yaml"])
    result = run_monitor("check-config", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomize_builds_the_manifests_with_the_image_set():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: the kustomize build is checked where it is installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBE_DIR)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    built = list(yaml.safe_load_all(result.stdout))
    (daemonset,) = [doc for doc in built if doc["kind"] == "DaemonSet"]
    images = {c["image"] for key in ("containers", "initContainers")
              for c in daemonset["spec"]["template"]["spec"][key]}
    kustomization = yaml.safe_load((KUBE_DIR / "kustomization.yaml").read_text())
    assert images == {f"drift-monitor:{kustomization['images'][0]['newTag']}"}


def test_pods_use_a_loaded_image_without_pulling_it():
    for key in ("containers", "initContainers"):
        for c in pod_spec()[key]:
            assert c["imagePullPolicy"] == "IfNotPresent", c["name"]


def documented_overlay() -> str:
    """The overlay kustomization.yaml that deploy/README.md tells a user to write."""
    text = (DEPLOY_DIR / "README.md").read_text()
    body = text.split("kustomization.yaml <<'EOF'\n", 1)[1].split("    EOF\n", 1)[0]
    return "\n".join(line.removeprefix("    ") for line in body.splitlines()) + "\n"


def test_documented_overlay_points_every_pod_at_the_registry_image(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: the overlay is built where it is installed")
    # As the README does it, in the root of a clone: the overlay folder beside deploy/.
    shutil.copytree(KUBE_DIR, tmp_path / "deploy" / "kubernetes")
    (tmp_path / "drift-monitor-overlay").mkdir()
    (tmp_path / "drift-monitor-overlay" / "kustomization.yaml").write_text(documented_overlay())
    overlay = yaml.safe_load(documented_overlay())
    result = subprocess.run([kubectl, "kustomize", "drift-monitor-overlay"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    (daemonset,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc["kind"] == "DaemonSet"]
    images = {c["image"] for key in ("containers", "initContainers")
              for c in daemonset["spec"]["template"]["spec"][key]}
    (image,) = overlay["images"]
    assert images == {f"{image['newName']}:{image['newTag']}"}


def test_only_prometheus_may_reach_the_plain_http_metrics_port():
    policy = manifests()["NetworkPolicy"]["spec"]
    daemonset = manifests()["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= daemonset.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == ["metrics"]
    assert rule["from"] == [{"namespaceSelector": {}, "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
