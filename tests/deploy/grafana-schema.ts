// The types the dashboard (deploy/grafana/mcp-discovery.json) is checked
// against, all from @grafana/schema: the dashboard itself, and the options
// and field config of each panel type it uses. scripts/check-deploy.sh turns
// every exported type (the `Checked*` ones) into one JSON Schema with ts-json-schema-generator;
// tests/deploy/check_promql.py validates with it.
import type { Dashboard } from "@grafana/schema/dist/types/raw/dashboard/x/types.gen";
import type {
  Options as TimeSeriesOptions,
  FieldConfig as TimeSeriesFieldConfig,
} from "@grafana/schema/dist/types/raw/composable/timeseries/panelcfg/x/types.gen";
import type {
  Options as StateTimelineOptions,
  FieldConfig as StateTimelineFieldConfig,
} from "@grafana/schema/dist/types/raw/composable/statetimeline/panelcfg/x/types.gen";
import type { Options as StatOptions } from "@grafana/schema/dist/types/raw/composable/stat/panelcfg/x/types.gen";
import type {
  Options as TableOptions,
  FieldConfig as TableFieldConfig,
} from "@grafana/schema/dist/types/raw/composable/table/panelcfg/x/types.gen";

export type CheckedDashboard = Dashboard;
export type CheckedTimeSeriesOptions = TimeSeriesOptions;
export type CheckedTimeSeriesFieldConfig = TimeSeriesFieldConfig;
export type CheckedStateTimelineOptions = StateTimelineOptions;
export type CheckedStateTimelineFieldConfig = StateTimelineFieldConfig;
export type CheckedStatOptions = StatOptions;
export type CheckedTableOptions = TableOptions;
export type CheckedTableFieldConfig = TableFieldConfig;
