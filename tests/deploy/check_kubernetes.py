#!/usr/bin/python3
"""Offline checks of deploy/kubernetes/: every manifest parses, has apiVersion/kind/
metadata.name; the Deployment's selector matches its pod labels; the Service and the
ServiceMonitor select those labels and name the container's metrics port; the scrape
annotations point at that port; the PVC and ConfigMap the pod mounts exist; the config
in the ConfigMap binds metrics on that port and uses only documented keys; kustomization
lists every manifest. Usage: check_kubernetes.py REPO_ROOT. Exit 77 without PyYAML.
"""
import sys
import tomllib
from pathlib import Path

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml missing")
    sys.exit(77)

ROOT = Path(sys.argv[1])
K8S = ROOT / "deploy/kubernetes"
errors = []


def check(ok, msg):
    if not ok:
        errors.append(msg)


docs = {}
for path in sorted(K8S.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        for field in ("apiVersion", "kind"):
            check(field in doc, f"{path.name}: no {field}")
        if doc.get("kind") != "Kustomization":
            check(doc.get("metadata", {}).get("name"), f"{path.name}: no metadata.name")
        docs[doc["kind"]] = (path.name, doc)

for kind in ("Deployment", "Service", "PersistentVolumeClaim", "ConfigMap", "ServiceMonitor", "Kustomization"):
    check(kind in docs, f"no {kind}")
if errors:
    print("\n".join("FAIL: " + e for e in errors))
    sys.exit(1)

dep = docs["Deployment"][1]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "Deployment selector does not match pod labels")
check(dep["spec"]["replicas"] == 1, "more than one replica for a single-writer SQLite queue")
container = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
check("metrics" in ports, "container has no port named metrics")
ann = pod["metadata"]["annotations"]
check(ann.get("prometheus.io/scrape") == "true", "pod lacks prometheus.io/scrape")
check(int(ann.get("prometheus.io/port", 0)) == ports.get("metrics"), "prometheus.io/port is not the metrics port")
check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")
sc = container.get("securityContext", {})
check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation not false")
check(sc.get("readOnlyRootFilesystem") is True, "root filesystem writable")
check(pod["spec"].get("securityContext", {}).get("runAsNonRoot") is True, "pod may run as root")

svc = docs["Service"][1]
check(svc["spec"]["selector"].items() <= labels.items(), "Service selector does not match pod labels")
check(any(p.get("name") == "metrics" and p.get("targetPort") in ("metrics", ports.get("metrics"))
          for p in svc["spec"]["ports"]), "Service has no metrics port")
sm = docs["ServiceMonitor"][1]
check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
      "ServiceMonitor does not select the Service")
check(any(e.get("port") == "metrics" for e in sm["spec"]["endpoints"]), "ServiceMonitor scrapes no metrics port")

volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
claims = [v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v]
check(docs["PersistentVolumeClaim"][1]["metadata"]["name"] in claims, "the pod does not mount the PVC")
maps = [v["configMap"]["name"] for v in volumes.values() if "configMap" in v]
cm = docs["ConfigMap"][1]
check(cm["metadata"]["name"] in maps, "the pod does not mount the ConfigMap")
mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
for name in volumes:
    check(name in mounts, f"volume {name} not mounted")

config = tomllib.loads(cm["data"]["ringmail.toml"])
check(config.get("metrics", {}).get("listen", "").endswith(f":{ports.get('metrics')}"),
      "the config's metrics.listen is not the metrics port")
documented = (ROOT / "app/CONFIG.md").read_text()
for table, keys in config.items():
    for key in keys:
        check(f"| `{table}.{key}` |" in documented, f"ConfigMap key {table}.{key} undocumented")
check(mounts.get("config") == "/etc/ringmail" and "/etc/ringmail/ringmail.toml" in container["args"],
      "the container does not read the mounted config")

kust = docs["Kustomization"][1]
listed = set(kust["resources"])
for path in K8S.glob("*.yaml"):
    if path.name != "kustomization.yaml":
        check(path.name in listed, f"kustomization.yaml does not list {path.name}")

if errors:
    print("\n".join("FAIL: " + e for e in errors))
    sys.exit(1)
print(f"OK: {len(docs)} Kubernetes manifests consistent")
