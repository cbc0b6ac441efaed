"""Validates every Kubernetes object of the given YAML files (several
documents each) in strict mode against each --kubernetes-version, with
kubernetes-validate's offline schemas; ServiceMonitors (a CRD those schemas
do not have) with the Prometheus Operator's model (validate_servicemonitor.mjs
in --node-dir). An object of any other unknown kind is an error, not a
warning. Run by scripts/check-deploy.sh."""

import argparse
import json
import os
import subprocess
import sys

import yaml
from kubernetes_validate import utils

CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def objects(path):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                yield doc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes-version", action="append", required=True)
    parser.add_argument("--node-dir", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    if len(args.kubernetes_version) < 2:
        sys.exit("validate against at least two Kubernetes versions")

    errors, checked, monitors = [], 0, []
    for path in args.files:
        for obj in objects(path):
            what = f"{os.path.relpath(path)}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            if (obj.get("apiVersion"), obj.get("kind")) in CRD_KINDS:
                monitors.append((what, obj))
                continue
            for version in args.kubernetes_version:
                try:
                    utils.validate(obj, version, strict=True)
                except utils.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    errors.append(f"{what} against {version}: {where}: {e.message}")
                except utils.SchemaNotFoundError as e:
                    errors.append(f"{what}: no schema in Kubernetes {version}: {e.message}")
            checked += 1
    if monitors:
        script = os.path.join(args.node_dir, "validate_servicemonitor.mjs")
        run = subprocess.run(
            ["node", script],
            input=json.dumps([obj for _, obj in monitors]),
            capture_output=True,
            text=True,
            cwd=args.node_dir,
        )
        if run.returncode != 0:
            errors.append(f"ServiceMonitor: {run.stdout.strip()} {run.stderr.strip()}")
        checked += len(monitors)
    for error in errors:
        print(f"ERROR {error}", file=sys.stderr)
    if errors:
        sys.exit(1)
    if checked == 0:
        sys.exit("no Kubernetes object found")
    print(
        f"{checked} objects valid (strict, Kubernetes {', '.join(args.kubernetes_version)};"
        f" {len(monitors)} ServiceMonitor by the Prometheus Operator's model)"
    )


if __name__ == "__main__":
    main()
