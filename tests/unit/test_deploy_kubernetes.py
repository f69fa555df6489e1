"""deploy/kubernetes/ and deploy/Containerfile, checked: every manifest against the Kubernetes API
schemas (kubernetes-validate, strict: an unknown field is an error), every kustomization's
resources present, and the contract between the manifests and the gateway's configuration (the
probes on the admin port, the grace period above the drain, the sandbox)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
VERSION = "1.30.0"


def _documents():
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, doc


def _by_kind() -> dict[str, dict]:
    return {doc["kind"]: doc for path, doc in _documents() if "base" in path.parts}


@pytest.mark.parametrize("path,doc", list(_documents()), ids=lambda v: getattr(v, "name", ""))
def test_every_manifest_validates_against_the_api_schemas(path, doc):
    kubernetes_validate.validate(doc, VERSION, strict=True)


@pytest.mark.parametrize("kustomization", sorted(K8S.rglob("kustomization.yaml")),
                         ids=lambda p: str(p.parent.relative_to(K8S)))
def test_kustomizations_name_what_exists(kustomization):
    doc = yaml.safe_load(kustomization.read_text())
    assert doc["apiVersion"].startswith("kustomize.config.k8s.io/")
    for resource in doc.get("resources", []):
        target = (kustomization.parent / resource).resolve()
        assert target.exists(), f"{kustomization}: {resource} does not exist"


def test_the_deployment_keeps_the_gateways_contract():
    kinds = _by_kind()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = tomllib.loads(kinds["ConfigMap"]["data"]["gateway.toml"])
    admin_port = int(config["admin"]["bind"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == admin_port
    assert ports["https"] == int(config["listener"][0]["bind"].rsplit(":", 1)[1])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == "admin"
    # the grace period outlasts the preStop's wait plus the whole drain
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "kill -TERM 1" in pre_stop
    waited_before = float(pre_stop.split("sleep ", 1)[1].split(";", 1)[0])
    assert pod["terminationGracePeriodSeconds"] > waited_before + config["gateway"]["drain_timeout_s"]
    # the sandbox: not root, read-only root filesystem, no privilege escalation, one capability
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    # one worker per CPU the container may use
    assert config["gateway"]["workers"] == int(container["resources"]["limits"]["cpu"])
    # keys, CA bundles and CRLs from Secrets, the configuration from the ConfigMap
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert "secret" in volumes["tls"] and "secret" in volumes["trust"]
    assert config["gateway"]["watch_files"] is True


def test_the_service_and_the_disruption_budget():
    kinds = _by_kind()
    service = kinds["Service"]["spec"]
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
    selector = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["selector"] == selector
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector


def test_the_image_has_no_compiler_in_its_final_stage():
    stages = (DEPLOY / "Containerfile").read_text().split("\nFROM ")
    assert len(stages) == 3, "a build stage and a final stage"
    final = stages[-1]
    assert "gcc" in stages[1] and "gcc" not in final and "apt-get" not in final
    assert "USER 10001" in final and 'ENTRYPOINT ["mtls-gateway"]' in final


def test_the_configmaps_configuration_is_valid_but_for_the_mounted_files():
    """What the ConfigMap holds passes the gateway's own check, every problem left being a file
    that only exists once the Secrets are mounted."""
    from gateway import config
    from gateway.errors import ConfigError
    text = _by_kind()["ConfigMap"]["data"]["gateway.toml"]
    with pytest.raises(ConfigError) as exc:
        config.loads(text)
    problems = exc.value.problems
    assert problems and all("file not found: /etc/mtls-gateway/" in str(p) for p in problems), problems
