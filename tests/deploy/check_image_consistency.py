"""Checks that the manifests run what deploy/Dockerfile builds: the same
entrypoint and arguments, port, user id, state directory and config path,
in deploy/k8s, the Helm chart (rendered with helm, path in $HELM) and
deploy/systemd; and that deploy/config.yaml (baked into the image) listens
on that port and keeps its store in that directory. The image itself is not
built here (no registry serves its base images on this machine).

    check_image_consistency.py ROOT   (run by scripts/check-deploy.sh)
"""

import json
import os
import re
import shlex
import subprocess
import sys

import yaml

ROOT = sys.argv[1]
errors = []


def check(what, got, want):
    if got != want:
        errors.append(f"{what}: {got!r}, the image has {want!r}")


def dockerfile():
    """The runtime stage's USER, EXPOSE, ENTRYPOINT, CMD, ENV and the path
    the binary is copied to."""
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = re.split(r"^FROM ", text, flags=re.M)
    runtime = stages[-1]
    image = {"env": {}}
    for line in runtime.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op == "USER":
            image["user"] = rest.strip()
        elif op == "EXPOSE":
            image["port"] = int(rest.split("/")[0])
        elif op == "ENTRYPOINT":
            image["entrypoint"] = json.loads(rest)
        elif op == "CMD":
            image["cmd"] = json.loads(rest)
        elif op == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                image["env"][key] = value
        elif op == "COPY" and "--from=builder" in rest:
            image["binary"] = rest.split()[-1]
    return image


def deployment_container(docs):
    deployments = [d for d in docs if d and d.get("kind") == "Deployment"]
    if len(deployments) != 1:
        errors.append(f"{len(deployments)} Deployments, want 1")
        return None, None
    spec = deployments[0]["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def check_pod(name, docs, image):
    pod, container = deployment_container(docs)
    if container is None:
        return
    uid, gid = (int(x) for x in image["user"].split(":"))
    check(f"{name}: runAsUser", pod["securityContext"].get("runAsUser"), uid)
    check(f"{name}: runAsGroup", pod["securityContext"].get("runAsGroup"), gid)
    check(f"{name}: fsGroup", pod["securityContext"].get("fsGroup"), gid)
    check(f"{name}: command", container.get("command"), None)  # the ENTRYPOINT runs
    args = container["args"]
    check(f"{name}: args[:3]", args[:3], image["cmd"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(f"{name}: containerPort http", ports.get("http"), image["port"])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    state = image["env"]["MCP_DISCOVERY_STATE_DIR"]
    check(f"{name}: MCP_DISCOVERY_STATE_DIR", env.get("MCP_DISCOVERY_STATE_DIR"), state)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    if state not in mounts:
        errors.append(f"{name}: no volume on the state directory {state}")
    config_dir = os.path.dirname(image["cmd"][2])
    if config_dir not in mounts:
        errors.append(f"{name}: no ConfigMap mounted on {config_dir} (a directory, for hot reload)")
    elif mounts[config_dir].get("subPath"):
        errors.append(f"{name}: the config is mounted with subPath: a ConfigMap edit would never reach the pod")


def main():
    image = dockerfile()
    for key in ("user", "port", "entrypoint", "cmd", "binary"):
        if key not in image:
            errors.append(f"deploy/Dockerfile: no {key} in the runtime stage")
    if errors:
        report()
    check("Dockerfile ENTRYPOINT", image["entrypoint"], [os.path.basename(image["binary"])])
    check("Dockerfile CMD[:2]", image["cmd"][:2], ["serve", "--config"])

    with open(os.path.join(ROOT, "deploy", "config.yaml")) as f:
        baked = yaml.safe_load(f)
    check("deploy/config.yaml listen port", int(baked["listen"].rsplit(":", 1)[1]), image["port"])
    store = baked.get("store", {}).get("url", "")
    state = image["env"]["MCP_DISCOVERY_STATE_DIR"]
    if store and not store.startswith(f"sqlite://{state}/"):
        errors.append(f"deploy/config.yaml store.url {store!r} is not in the state directory {state}")

    k8s = []
    for file in sorted(os.listdir(os.path.join(ROOT, "deploy", "k8s"))):
        if file.endswith(".yaml") and file != "kustomization.yaml":
            with open(os.path.join(ROOT, "deploy", "k8s", file)) as f:
                k8s.extend(yaml.safe_load_all(f))
    check_pod("deploy/k8s", k8s, image)

    helm = os.environ["HELM"]
    for values in ([], ["--values", os.path.join(ROOT, "tests", "deploy", "helm-values-postgres.yaml")]):
        rendered = subprocess.run(
            [helm, "template", "x", os.path.join(ROOT, "deploy", "helm", "mcp-discovery"), *values],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        check_pod(f"helm {' '.join(values) or 'default values'}", list(yaml.safe_load_all(rendered)), image)

    unit = {}
    with open(os.path.join(ROOT, "deploy", "systemd", "mcp-discovery.service")) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                unit.setdefault(key, []).append(value)
    exec_start = shlex.split(unit["ExecStart"][0])
    check("systemd ExecStart binary", exec_start[0], image["binary"])
    check("systemd ExecStart args", exec_start[1:], image["cmd"])
    check("systemd StateDirectory", "/var/lib/" + unit["StateDirectory"][0], state)
    env = dict(e.split("=", 1) for e in unit.get("Environment", []))
    check("systemd MCP_DISCOVERY_STATE_DIR", env.get("MCP_DISCOVERY_STATE_DIR", "").replace("%S", "/var/lib"), state)
    check("systemd MALLOC_ARENA_MAX", env.get("MALLOC_ARENA_MAX"), image["env"].get("MALLOC_ARENA_MAX"))
    report()


def report():
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print("the Dockerfile, deploy/k8s, the Helm chart and the systemd unit agree (entrypoint, port, uid, state directory)")
    sys.exit(0)


if __name__ == "__main__":
    main()
