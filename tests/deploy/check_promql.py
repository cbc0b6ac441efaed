"""Checks the Grafana dashboard and the Prometheus rules against what the
engine exports.

- The dashboard validates against the JSON Schemas generated from
  @grafana/schema (--schemas, made by scripts/check-deploy.sh): the
  dashboard, and each panel's options and field config against its panel
  type's own types. A panel type without a schema is an error.
- Every PromQL expression (panel targets, annotations, the query
  variables' label_values selectors, every rule of the rules file) parses
  with promql-parser, and every metric name it selects is exported by the
  engine: a name in the real scrape (--scrape), or a contract name of
  DESIGN.md section 8 not exported yet (--pending; histograms count with
  their _bucket, _sum and _count), or a recording rule of the rules file,
  or `up` (Prometheus's own).
- The pending list only shrinks: a pending name the scrape has is an
  error (remove it from the list); with --design, each pending name must be
  in DESIGN.md section 8, and every other name of that section in the
  scrape.
- Every alert has a summary, a description naming what it is about
  ($labels.server, .instance or .job) and a runbook_url whose anchor is a
  heading of docs/operations.md (--operations).
"""

import argparse
import json
import os
import re
import sys

import jsonschema
import promql_parser
import yaml

PANEL_SCHEMAS = {
    "timeseries": ("CheckedTimeSeriesOptions", "CheckedTimeSeriesFieldConfig"),
    "state-timeline": ("CheckedStateTimelineOptions", "CheckedStateTimelineFieldConfig"),
    "stat": ("CheckedStatOptions", None),
    "table": ("CheckedTableOptions", "CheckedTableFieldConfig"),
}
PROMETHEUS_OWN = {"up"}
errors = []


def error(message):
    errors.append(message)


def load_schemas(folder):
    schemas = {}
    for file in os.listdir(folder):
        if file.endswith(".json"):
            with open(os.path.join(folder, file)) as f:
                schemas[file[:-5]] = json.load(f)
    return schemas


def validate(schema, instance, what):
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in e.absolute_path)
        error(f"{what}: /{where}: {e.message[:300]}")


def exported_names(scrape_path, pending_path):
    with open(scrape_path) as f:
        scrape = f.read()
    scraped = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            scraped |= expand(name, kind)
        elif line and not line.startswith("#"):
            scraped.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    pending = {}
    with open(pending_path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, kind = line.split()
                pending[name] = kind
    for name, kind in pending.items():
        if expand(name, kind) & scraped:
            error(f"{name} is exported now: remove it from {os.path.basename(pending_path)}")
    pending_names = set()
    for name, kind in pending.items():
        pending_names |= expand(name, kind)
    return scraped, pending, pending_names


def expand(name, kind):
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    return {name}


def metric_names(node):
    """Every metric name a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        names = {node.name} if node.name else set()
        for m in node.matchers.matchers:
            if m.name == "__name__":
                names.add(m.value)
        if not names:
            error(f"a selector without a metric name: {node}")
        return names
    names = set()
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names |= metric_names(child)
    for child in getattr(node, "args", None) or []:
        names |= metric_names(child)
    return names


def grafana_to_promql(expr):
    """Grafana's variables replaced by values PromQL accepts."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+(:\w+)?\}?", "x", expr)


def check_expr(what, expr, allowed):
    try:
        parsed = promql_parser.parse(expr)
    except Exception as e:  # the parser raises ValueError, or its own
        error(f"{what}: does not parse: {e}: {expr}")
        return set()
    names = metric_names(parsed)
    for name in sorted(names - allowed):
        error(f"{what}: {name} is not a metric the engine exports: {expr}")
    return names


def panels_of(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check_dashboard(path, schemas, allowed, used):
    with open(path) as f:
        dashboard = json.load(f)
    validate(schemas["CheckedDashboard"], dashboard, "dashboard")
    ids, count = set(), 0
    for panel in panels_of(dashboard):
        kind, title = panel.get("type"), panel.get("title")
        what = f"panel {title!r} ({kind})"
        if panel.get("id") in ids:
            error(f"{what}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        if kind == "row":
            continue
        if kind not in PANEL_SCHEMAS:
            error(f"{what}: no schema for panel type {kind} (add it to tests/deploy/grafana-schema.ts)")
            continue
        options, field_config = PANEL_SCHEMAS[kind]
        validate(schemas[options], panel.get("options", {}), f"{what} options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if field_config and custom is not None:
            validate(schemas[field_config], custom, f"{what} fieldConfig.defaults.custom")
        elif custom is not None:
            error(f"{what}: fieldConfig.defaults.custom, but {kind} has no field config of its own")
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            error(f"{what}: datasource is not the ${{datasource}} variable")
        targets = panel.get("targets", [])
        if not targets:
            error(f"{what}: no query")
        for target in targets:
            if target.get("datasource", {}).get("uid") != "${datasource}":
                error(f"{what} {target.get('refId')}: datasource is not the ${{datasource}} variable")
            used |= check_expr(f"{what} {target.get('refId')}", grafana_to_promql(target["expr"]), allowed)
            count += 1
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            used |= check_expr(f"annotation {annotation.get('name')!r}", grafana_to_promql(annotation["expr"]), allowed)
            count += 1
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        if not m:
            error(f"variable {variable['name']}: not label_values(selector, label): {query}")
            continue
        used |= check_expr(f"variable {variable['name']}", grafana_to_promql(m.group(1)), allowed)
        count += 1
    for name in ("datasource", "job", "instance", "server"):
        if name not in variables:
            error(f"dashboard: no variable {name}")
    return count


def anchors(markdown_path):
    with open(markdown_path) as f:
        headings = [line.lstrip("#").strip() for line in f if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def check_rules(path, allowed_metrics, operations, used):
    with open(path) as f:
        rules = yaml.safe_load(f)
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    allowed = allowed_metrics | records
    docs = anchors(operations)
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            used |= check_expr(f"rule {name}", rule["expr"], allowed)
            count += 1
            if "alert" not in rule:
                continue
            notes = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not notes.get(key):
                    error(f"alert {name}: no {key}")
            if not re.search(r"\$labels\.(server|instance|job)", notes.get("description", "")):
                error(f"alert {name}: the description names neither the server, the instance nor the job")
            url = notes.get("runbook_url", "")
            doc, _, anchor = url.partition("#")
            if doc != "docs/operations.md" or anchor not in docs:
                error(f"alert {name}: runbook_url {url} is not a heading of docs/operations.md")
            if "severity" not in rule.get("labels", {}):
                error(f"alert {name}: no severity label")
    return count, records


def check_design(pending, scraped, design):
    with open(design) as f:
        text = f.read()
    section = re.search(r"^## 8\..*?(?=^## 9\.)", text, flags=re.S | re.M)
    if not section:
        error(f"{design}: no section 8")
        return
    contract = set(re.findall(r"`(mcp_discovery_[a-z_]+)", section.group(0)))
    for name in pending:
        if name not in contract:
            error(f"{name} (pending) is not a contract name of DESIGN.md section 8")
    # Every other contract name is in the scrape: the scrape is complete
    # and the pending list hides nothing the engine should export.
    for name in sorted(contract - set(pending)):
        if not ({name, f"{name}_bucket"} & scraped):
            error(f"{name} (DESIGN.md section 8) is neither in the engine's scrape nor pending")
    return len(contract)


def main():
    parser = argparse.ArgumentParser()
    for arg in ("scrape", "pending", "schemas", "dashboard", "rules", "operations"):
        parser.add_argument("--" + arg, required=True)
    parser.add_argument("--design")
    args = parser.parse_args()

    scraped, pending, pending_names = exported_names(args.scrape, args.pending)
    if args.design and os.path.exists(args.design):
        contract = check_design(pending, scraped, args.design)
        print(f"DESIGN.md section 8: {contract} contract names, {contract - len(pending)} in the scrape, {len(pending)} pending")
    else:
        print(f"note: {args.design or 'DESIGN.md'} not found, pending names not compared with it")
    allowed = scraped | pending_names | PROMETHEUS_OWN
    used = set()
    rule_count, records = check_rules(args.rules, allowed, args.operations, used)
    queries = check_dashboard(args.dashboard, load_schemas(args.schemas), allowed | records, used)
    for error_line in errors:
        print(f"ERROR {error_line}", file=sys.stderr)
    if errors:
        sys.exit(1)
    not_yet = sorted(used & pending_names)
    print(
        f"dashboard: {queries} queries and {rule_count} rules parse and use only exported names"
        f" ({len(used)} names; {len(scraped)} in the engine's scrape)."
    )
    if pending:
        print(
            f"Pending contract names (tests/deploy/contract-metrics-pending.txt, not exported yet): {', '.join(sorted(pending))};"
            f" used: {', '.join(not_yet) or 'none'}"
        )


if __name__ == "__main__":
    main()
