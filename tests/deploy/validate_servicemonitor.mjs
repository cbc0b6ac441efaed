// Validates ServiceMonitor objects (JSON array on stdin) with the model
// @kubernetes-models/prometheus-operator generates from the Prometheus
// Operator's CRD: types, required fields, patterns (durations, ...).
// Copied next to its node_modules by scripts/check-deploy.sh; run by
// tests/deploy/validate_objects.py. Prints one line per object, exits 1 on
// the first invalid one.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const object of objects) {
  const name = `servicemonitor/${object?.metadata?.name}`;
  try {
    new ServiceMonitor(object).validate();
    console.log(`ok ${name}`);
  } catch (err) {
    console.log(`ERROR ${name}: ${err.message}`);
    failed += 1;
  }
}
process.exit(failed ? 1 : 0);
