//! `Mcp-Param-*` headers of a 2026-07-28 `tools/call` (SEP-2243): a tool's
//! `inputSchema` names, with `x-mcp-header`, the arguments an HTTP client
//! mirrors into headers so gateways and load balancers can route on them
//! without reading the body.
//!
//! The rules (`server/tools.mdx#x-mcp-header`): header `Mcp-Param-{name}`;
//! a string argument as it is (the `=?base64?…?=` form when it is not safe
//! in a header, as for `Mcp-Name`), an integer in decimal, a boolean as
//! `true`/`false`; a null or absent argument omits the header. Only
//! properties reachable from the root through `properties` keys carry an
//! annotation; a schema that breaks the rules never gets here (its tool is
//! refused by `crate::tools::check_tool` before any call).

use serde_json::{Map, Value};

use super::modern::header_value;

/// The prefix of every mirrored parameter header.
pub(crate) const PARAM_PREFIX: &str = "Mcp-Param-";

/// The `Mcp-Param-*` headers for calling a tool with `schema` as its
/// `inputSchema` and `arguments` as the call's arguments, in schema order.
/// A value of another kind than the annotation allows (an object, an
/// array, a fractional number) is not mirrored: the server, which checks
/// the headers it recognises against the body, answers for it.
pub(crate) fn param_headers(schema: &Value, arguments: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(schema, Some(arguments), &mut out);
    out
}

fn walk(schema: &Value, arguments: Option<&Value>, out: &mut Vec<(String, String)>) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let arguments = arguments.and_then(Value::as_object);
    for (key, property) in properties {
        let value = arguments.and_then(|a: &Map<String, Value>| a.get(key));
        if let Some(name) = property.get("x-mcp-header").and_then(Value::as_str) {
            if let Some(text) = value.and_then(header_text) {
                out.push((format!("{PARAM_PREFIX}{name}"), text));
            }
        }
        walk(property, value, out);
    }
}

/// One argument as a header value; `None` omits the header.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(header_value(s)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        // 3.0 is the integer 3 in JSON Schema.
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| format!("{f:.0}")),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "priority": {"type": "integer", "x-mcp-header": "Priority"},
                "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
                "debug": {"type": "boolean", "x-mcp-header": "Debug"},
                "empty": {"type": "string", "x-mcp-header": "EmptyVal"},
                "method": {"type": "string", "x-mcp-header": "Method"},
                "non_ascii": {"type": "string", "x-mcp-header": "NonAscii"},
                "edge": {"type": "string", "x-mcp-header": "Whitespace"},
                "inner": {"type": "string", "x-mcp-header": "InternalSpace"},
                "crlf": {"type": "string", "x-mcp-header": "CrLf"},
                "float_val": {"type": "number"},
                "query": {"type": "string"},
                "nested": {
                    "type": "object",
                    "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}
                }
            }
        })
    }

    fn headers(arguments: Value) -> Vec<(String, String)> {
        param_headers(&schema(), &arguments)
    }

    #[test]
    fn strings_integers_and_booleans_are_mirrored() {
        let h = headers(json!({
            "region": "us-east1",
            "priority": 42,
            "verbose": false,
            "debug": true,
            "empty": "",
            "method": "GET",
            "inner": "a b c",
            "query": "SELECT 1",
            "float_val": 1.5,
        }));
        let want: Vec<(String, String)> = [
            ("Mcp-Param-Region", "us-east1"),
            ("Mcp-Param-Priority", "42"),
            ("Mcp-Param-Verbose", "false"),
            ("Mcp-Param-Debug", "true"),
            ("Mcp-Param-EmptyVal", ""),
            ("Mcp-Param-Method", "GET"),
            ("Mcp-Param-InternalSpace", "a b c"),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(h, want, "in schema order; unannotated ones never");
    }

    #[test]
    fn unsafe_strings_take_the_base64_form() {
        let h = headers(json!({"non_ascii": "Région", "edge": " padded ", "crlf": "a\r\nb"}));
        assert_eq!(
            h,
            [
                ("Mcp-Param-NonAscii".to_owned(), header_value("Région")),
                ("Mcp-Param-Whitespace".to_owned(), header_value(" padded ")),
                ("Mcp-Param-CrLf".to_owned(), header_value("a\r\nb")),
            ]
        );
        assert_eq!(h[0].1, "=?base64?UsOpZ2lvbg==?=");
        assert_eq!(h[1].1, "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(h[2].1, "=?base64?YQ0KYg==?=");
    }

    #[test]
    fn null_absent_and_non_primitive_values_omit_the_header() {
        assert!(headers(json!({})).is_empty());
        assert!(headers(json!({"region": null, "verbose": null})).is_empty());
        assert!(headers(json!({"region": {"a": 1}, "priority": [1]})).is_empty());
        assert!(headers(json!({"priority": 1.5})).is_empty());
        assert!(param_headers(&schema(), &Value::Null).is_empty());
        assert!(param_headers(&json!({"type": "object"}), &json!({"region": "x"})).is_empty());
    }

    #[test]
    fn integral_numbers_are_decimal() {
        assert_eq!(headers(json!({"priority": -7}))[0].1, "-7");
        assert_eq!(headers(json!({"priority": 3.0}))[0].1, "3");
        assert_eq!(
            headers(json!({"priority": u64::MAX}))[0].1,
            u64::MAX.to_string()
        );
    }

    #[test]
    fn nested_properties_follow_the_arguments() {
        let h = headers(json!({"nested": {"zone": "b"}, "region": "r"}));
        assert_eq!(
            h,
            [
                ("Mcp-Param-Region".to_owned(), "r".to_owned()),
                ("Mcp-Param-Zone".to_owned(), "b".to_owned()),
            ]
        );
        assert!(headers(json!({"nested": "flat"})).is_empty());
    }
}
