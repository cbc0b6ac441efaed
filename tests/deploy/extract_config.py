"""Writes the engine's configuration out of rendered Kubernetes objects:
`data["config.yaml"]` of the one ConfigMap that has it. Run by
scripts/check-deploy.sh, which then runs `mcp-discovery check` on it."""

import sys

import yaml


def main():
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as f:
        found = [
            doc["data"]["config.yaml"]
            for doc in yaml.safe_load_all(f)
            if doc and doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {})
        ]
    if len(found) != 1:
        sys.exit(f"{source}: {len(found)} ConfigMaps with a config.yaml, want 1")
    with open(target, "w") as f:
        f.write(found[0])


if __name__ == "__main__":
    main()
