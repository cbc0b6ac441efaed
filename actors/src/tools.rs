//! Validation of a server's listed tools, so one bad tool never hides the
//! others (docs/adr/0016-tool-validation.md).
//!
//! A listing is taken whole ([`from_listing`] keeps every item, however
//! broken), then [`check`] sorts it: a tool is published only when
//! - its `name` is a string of 1 to 128 characters, unique on the server
//!   (copies that differ are all left out, so neither silently shadows the
//!   other; byte-identical copies, as a page overlap gives, are one tool);
//! - its `inputSchema` is a JSON object;
//! - every `x-mcp-header` annotation in that schema is valid per SEP-2243
//!   (MCP 2026-07-28, `server/tools.mdx#x-mcp-header`): a non-empty RFC 9110
//!   token, case-insensitively unique in the schema, on an integer, string
//!   or boolean property reachable from the root through `properties` keys
//!   alone. The spec says an HTTP client MUST drop such a tool; it is
//!   checked whatever the transport, since the catalog's readers may call
//!   the tool over HTTP.
//!
//! The others are reported ([`ToolProblem`], at most [`MAX_REPORTED`] of
//! them, the count in full). Public names outside the form LLM APIs accept
//! (`^[A-Za-z0-9_.-]{1,64}$`) are published and flagged in `name_warnings`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::mcp::error::clip;
use crate::mcp::Tool;

/// Longest tool name accepted, in characters (the spec's SHOULD, enforced).
pub const NAME_MAX_CHARS: usize = 128;
/// Longest public name the common LLM APIs accept.
pub const LLM_SAFE_MAX_CHARS: usize = 64;
/// At most this many problems of each kind are listed in a server's view
/// (the gauge `mcp_discovery_invalid_tools` has the full count).
pub const MAX_REPORTED: usize = 100;
/// A name is shown clipped to this many characters in a report.
const SHOWN_NAME_MAX: usize = 128;
/// A reason is clipped to this many characters.
const REASON_MAX: usize = 300;
/// A property key is clipped to this many characters in a reason's path.
const PATH_KEY_MAX: usize = 40;

/// Why one tool is not published (or, in `name_warnings`, why its public
/// name may be refused by an LLM API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ToolProblem {
    /// The tool's name on its upstream (`invalid_tools`) or its public name
    /// (`name_warnings`), clipped; `None` when the tool has no string name.
    pub name: Option<String>,
    pub reason: String,
}

impl ToolProblem {
    fn new(name: Option<&str>, reason: impl AsRef<str>) -> Self {
        Self {
            name: name.map(|n| clip(n, SHOWN_NAME_MAX)),
            reason: clip(reason.as_ref(), REASON_MAX),
        }
    }
}

/// What a server's view shows about the tools it listed but the catalog
/// does not (or only with a warning) publish.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ToolReport {
    /// Tools left out of the catalog, at most [`MAX_REPORTED`].
    pub invalid_tools: Vec<ToolProblem>,
    /// Published tools whose public name is outside `^[A-Za-z0-9_.-]{1,64}$`,
    /// at most [`MAX_REPORTED`].
    pub name_warnings: Vec<ToolProblem>,
    /// How many tools were left out in all (the list may be capped).
    #[serde(skip)]
    pub invalid_total: usize,
}

impl ToolReport {
    /// Adds problems found outside the listing (a public-name clash with
    /// another server, found when the catalog is built).
    pub fn with_more_invalid(&self, more: &[ToolProblem]) -> Self {
        let mut out = self.clone();
        out.invalid_total += more.len();
        for p in more {
            if out.invalid_tools.len() >= MAX_REPORTED {
                break;
            }
            out.invalid_tools.push(p.clone());
        }
        out
    }

    /// Logs the invalid tools that `previous` did not have (the spec asks
    /// for a warning with the tool's name and the reason), a few at most.
    pub fn log_news(&self, previous: &ToolReport) {
        const MAX_LOGGED: usize = 10;
        let new = self
            .invalid_tools
            .iter()
            .filter(|p| !previous.invalid_tools.contains(p));
        for p in new.take(MAX_LOGGED) {
            tracing::warn!(
                tool = ?p.name.as_deref().unwrap_or("<no name>"),
                reason = %p.reason,
                "Left an invalid tool out of the catalog; the server's other tools are published."
            );
        }
    }
}

/// A sorted listing.
#[derive(Debug, Default)]
pub struct Checked {
    /// The tools to publish, in listing order.
    pub tools: Vec<Tool>,
    pub report: ToolReport,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "inputSchema")]
    input_schema: Option<&'a RawValue>,
}

/// Every item of a `tools/list` result as a [`Tool`], even a broken one
/// (its `name` is then empty): [`check`] decides and reports, so nothing
/// is dropped unseen.
pub fn from_listing(items: Vec<Box<RawValue>>) -> Vec<Tool> {
    items
        .into_iter()
        .map(|raw| Tool {
            name: string_name(&raw).unwrap_or_default(),
            raw: Arc::from(raw),
        })
        .collect()
}

fn string_name(raw: &RawValue) -> Option<String> {
    let head = serde_json::from_str::<Head<'_>>(raw.get()).ok()?;
    serde_json::from_str::<String>(head.name?.get()).ok()
}

/// Sorts `tools` (a whole listing) into the ones to publish under `server`
/// and the report. Tools whose name `allows` refuses are neither published
/// nor reported (the operator filtered them out).
pub fn check(
    tools: Vec<Tool>,
    server: &str,
    separator: &str,
    allows: impl Fn(&str) -> bool,
) -> Checked {
    let mut verdicts: Vec<(Tool, Option<String>, Result<(), String>)> = tools
        .into_iter()
        .filter_map(|tool| {
            let name = string_name(&tool.raw);
            if name.as_deref().is_some_and(|n| !allows(n)) {
                return None;
            }
            let verdict = check_tool(&tool.raw);
            Some((tool, name, verdict))
        })
        .collect();

    // Copies of one name: identical ones are one tool; differing ones are
    // all left out, each reported.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, name, _)) in verdicts.iter().enumerate() {
        if let Some(n) = name {
            by_name.entry(n.as_str()).or_default().push(i);
        }
    }
    let mut duplicate: Vec<Option<String>> = vec![None; verdicts.len()];
    let mut repeat = vec![false; verdicts.len()];
    for indexes in by_name.values().filter(|v| v.len() > 1) {
        let first = verdicts[indexes[0]].0.raw.get();
        if indexes.iter().all(|&i| verdicts[i].0.raw.get() == first) {
            for &i in &indexes[1..] {
                repeat[i] = true;
            }
        } else {
            for &i in indexes {
                duplicate[i] = Some(format!(
                    "the server lists {} different tools with this name; none is published",
                    indexes.len()
                ));
            }
        }
    }

    let mut out = Checked::default();
    for (i, (tool, name, verdict)) in verdicts.drain(..).enumerate() {
        if repeat[i] {
            continue;
        }
        let problem = match (verdict, duplicate[i].take()) {
            (Err(reason), _) => Some(reason),
            (Ok(()), Some(reason)) => Some(reason),
            (Ok(()), None) => None,
        };
        match problem {
            Some(reason) => {
                out.report.invalid_total += 1;
                if out.report.invalid_tools.len() < MAX_REPORTED {
                    out.report
                        .invalid_tools
                        .push(ToolProblem::new(name.as_deref(), reason));
                }
            }
            None => {
                let public = format!("{server}{separator}{}", tool.name);
                if let Some(reason) = llm_unsafe(&public) {
                    if out.report.name_warnings.len() < MAX_REPORTED {
                        out.report
                            .name_warnings
                            .push(ToolProblem::new(Some(&public), reason));
                    }
                }
                out.tools.push(tool);
            }
        }
    }
    out
}

/// Why `public` is outside `^[A-Za-z0-9_.-]{1,64}$`, if it is.
pub fn llm_unsafe(public: &str) -> Option<String> {
    if let Some(bad) = public
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!(
            "the public name contains {bad:?}; LLM APIs commonly accept only [A-Za-z0-9_.-]"
        ));
    }
    let len = public.chars().count();
    (len > LLM_SAFE_MAX_CHARS).then(|| {
        format!(
            "the public name has {len} characters; LLM APIs commonly accept at most {LLM_SAFE_MAX_CHARS}"
        )
    })
}

/// Checks one tool on its own (not its uniqueness): the reason it must not
/// be published, if any.
pub fn check_tool(raw: &RawValue) -> Result<(), String> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err("the tool is not a JSON object".into());
    }
    let head = serde_json::from_str::<Head<'_>>(text)
        .map_err(|e| format!("the tool is not a well-formed object: {e}"))?;
    let name = match head.name {
        None => return Err("the tool has no `name`".into()),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map_err(|_| format!("`name` is {}, not a string", json_kind(raw.get())))?,
    };
    let chars = name.chars().count();
    if chars == 0 {
        return Err("`name` is empty".into());
    }
    if chars > NAME_MAX_CHARS {
        return Err(format!(
            "`name` has {chars} characters; at most {NAME_MAX_CHARS} are allowed"
        ));
    }
    let schema = match head.input_schema {
        None => return Err("`inputSchema` is missing (or null)".into()),
        Some(s) if !s.get().trim_start().starts_with('{') => {
            return Err(format!(
                "`inputSchema` is {}, not a JSON object",
                json_kind(s.get())
            ))
        }
        Some(s) => s.get(),
    };
    if may_hold_header_annotation(schema) {
        let value: Value = serde_json::from_str(schema)
            .map_err(|e| format!("`inputSchema` is not well-formed: {e}"))?;
        check_headers(&value)?;
    }
    Ok(())
}

/// Whether a tool's JSON text may hold an `x-mcp-header` annotation
/// (possibly spelled with escapes). Most schemas have none: callers skip
/// the full parse when this is false.
pub(crate) fn may_hold_header_annotation(text: &str) -> bool {
    text.contains("x-mcp-header") || text.contains("\\u")
}

fn json_kind(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Validates every `x-mcp-header` annotation of an input schema (SEP-2243).
pub fn check_headers(schema: &Value) -> Result<(), String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    walk(schema, Reach::Root, &mut String::new(), &mut seen)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The schema itself: not a property, so no annotation here.
    Root,
    /// Reached from the root through `properties` keys alone.
    Static,
    /// Reached through any other keyword.
    Not,
}

/// Keywords whose value is a map of subschemas.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];
/// Keywords whose value is a subschema or an array of them.
const SCHEMA_KEYWORDS: &[&str] = &[
    "items",
    "prefixItems",
    "additionalItems",
    "contains",
    "unevaluatedItems",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
];

fn walk(
    node: &Value,
    reach: Reach,
    path: &mut String,
    seen: &mut HashMap<String, String>,
) -> Result<(), String> {
    let Value::Object(map) = node else {
        return Ok(());
    };
    if let Some(header) = map.get("x-mcp-header") {
        check_annotation(map, header, reach, path, seen)?;
    }
    for (keyword, value) in map {
        let keyword = keyword.as_str();
        if SCHEMA_MAPS.contains(&keyword) {
            let Value::Object(children) = value else {
                continue;
            };
            for (key, child) in children {
                let child_reach = if keyword == "properties" && reach != Reach::Not {
                    Reach::Static
                } else {
                    Reach::Not
                };
                let len = path.len();
                path.push('/');
                path.push_str(keyword);
                path.push('/');
                path.push_str(&clip(key, PATH_KEY_MAX));
                walk(child, child_reach, path, seen)?;
                path.truncate(len);
            }
        } else if SCHEMA_KEYWORDS.contains(&keyword) {
            let len = path.len();
            path.push('/');
            path.push_str(keyword);
            match value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let at = path.len();
                        path.push_str(&format!("/{i}"));
                        walk(item, Reach::Not, path, seen)?;
                        path.truncate(at);
                    }
                }
                other => walk(other, Reach::Not, path, seen)?,
            }
            path.truncate(len);
        }
    }
    Ok(())
}

fn check_annotation(
    map: &serde_json::Map<String, Value>,
    header: &Value,
    reach: Reach,
    path: &str,
    seen: &mut HashMap<String, String>,
) -> Result<(), String> {
    let at = if path.is_empty() {
        "the schema root".to_owned()
    } else {
        path.to_owned()
    };
    let header = match header {
        Value::String(h) => h,
        other => {
            return Err(format!(
                "`x-mcp-header` at {at} is {}, not a string",
                json_kind(&other.to_string())
            ))
        }
    };
    if reach != Reach::Static {
        return Err(format!(
            "`x-mcp-header` at {at} is not on a property reachable from the root through \
             `properties` alone (no items, composition, if/then/else or $ref)"
        ));
    }
    if header.is_empty() {
        return Err(format!("`x-mcp-header` at {at} is empty"));
    }
    if let Some(bad) = header.chars().find(|c| !is_tchar(*c)) {
        return Err(format!(
            "`x-mcp-header` {:?} at {at} is not an HTTP field-name token (RFC 9110): it contains {bad:?}",
            clip(header, PATH_KEY_MAX)
        ));
    }
    if !primitive_type(map.get("type")) {
        let shown = map
            .get("type")
            .map_or_else(|| "no type".to_owned(), |t| format!("type {t}"));
        return Err(format!(
            "`x-mcp-header` {header:?} at {at} is on a property with {}; only integer, string or boolean are allowed",
            clip(&shown, PATH_KEY_MAX)
        ));
    }
    let key = header.to_ascii_lowercase();
    if let Some(first) = seen.get(&key) {
        return Err(format!(
            "`x-mcp-header` {header:?} at {at} repeats the one at {first} (header names are case-insensitive)"
        ));
    }
    seen.insert(key, at);
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// `type` is integer, string or boolean, or an array of those (with
/// `null` allowed beside them: a null value only omits the header).
fn primitive_type(ty: Option<&Value>) -> bool {
    const ALLOWED: &[&str] = &["integer", "string", "boolean"];
    match ty {
        Some(Value::String(t)) => ALLOWED.contains(&t.as_str()),
        Some(Value::Array(ts)) => {
            let names: Option<Vec<&str>> = ts.iter().map(Value::as_str).collect();
            names.is_some_and(|names| {
                names.iter().any(|n| ALLOWED.contains(n))
                    && names.iter().all(|n| ALLOWED.contains(n) || *n == "null")
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(v: &Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn tool(name: &str, schema: Value) -> Value {
        json!({"name": name, "description": "d", "inputSchema": schema})
    }

    fn listing(items: &[Value]) -> Vec<Tool> {
        from_listing(items.iter().map(raw).collect())
    }

    fn reason(v: &Value) -> String {
        check_tool(&raw(v)).unwrap_err()
    }

    fn header_ok(schema: Value) -> bool {
        check_tool(&raw(&tool("t", schema))).is_ok()
    }

    #[test]
    fn names_must_be_strings_of_1_to_128_characters() {
        assert!(reason(&json!({"inputSchema": {}})).contains("no `name`"));
        assert!(reason(&json!({"name": 7, "inputSchema": {}})).contains("a number, not a string"));
        assert!(reason(&json!({"name": null, "inputSchema": {}})).contains("no `name`"));
        assert!(reason(&json!({"name": "", "inputSchema": {}})).contains("empty"));
        let long = "é".repeat(129);
        assert!(reason(&json!({"name": long, "inputSchema": {}})).contains("129 characters"));
        assert!(check_tool(&raw(&json!({"name": "é".repeat(128), "inputSchema": {}}))).is_ok());
        assert!(reason(&json!(["name", "b"])).contains("not a JSON object"));
        assert!(reason(&json!("x")).contains("not a JSON object"));
    }

    #[test]
    fn input_schema_must_be_an_object() {
        assert!(reason(&json!({"name": "a"})).contains("`inputSchema` is missing"));
        assert!(reason(&json!({"name": "a", "inputSchema": null})).contains("missing"));
        assert!(reason(&json!({"name": "a", "inputSchema": "object"}))
            .contains("`inputSchema` is a string, not a JSON object"));
        assert!(reason(&json!({"name": "a", "inputSchema": []})).contains("an array"));
        assert!(reason(&json!({"name": "a", "inputSchema": true})).contains("a boolean"));
        assert!(check_tool(&raw(
            &json!({"name": "a", "inputSchema": {"type": "object"}})
        ))
        .is_ok());
    }

    /// Every tool of the conformance scenario `http-invalid-tool-headers`
    /// (modelcontextprotocol/conformance, src/scenarios/client/
    /// http-custom-headers.ts): the valid one kept, each invalid one
    /// dropped with its reason.
    #[test]
    fn conformance_http_invalid_tool_headers() {
        let one = |prop: Value| json!({"type": "object", "properties": {"value": prop}});
        let cases = [
            (
                "invalid_empty_header",
                one(json!({"type": "string", "x-mcp-header": ""})),
                "is empty",
            ),
            (
                "invalid_object_header",
                one(json!({"type": "object", "x-mcp-header": "Data"})),
                "type \"object\"",
            ),
            (
                "invalid_array_header",
                one(json!({"type": "array", "items": {"type": "string"}, "x-mcp-header": "Items"})),
                "type \"array\"",
            ),
            (
                "invalid_null_header",
                one(json!({"type": "null", "x-mcp-header": "Nil"})),
                "type \"null\"",
            ),
            (
                "invalid_duplicate_same_case",
                json!({"type": "object", "properties": {
                "field1": {"type": "string", "x-mcp-header": "Region"},
                "field2": {"type": "string", "x-mcp-header": "Region"}}}),
                "repeats",
            ),
            (
                "invalid_duplicate_diff_case",
                json!({"type": "object", "properties": {
                "field1": {"type": "string", "x-mcp-header": "MyField"},
                "field2": {"type": "string", "x-mcp-header": "myfield"}}}),
                "repeats",
            ),
            (
                "invalid_space_in_name",
                one(json!({"type": "string", "x-mcp-header": "My Region"})),
                "contains ' '",
            ),
            (
                "invalid_colon_in_name",
                one(json!({"type": "string", "x-mcp-header": "Region:Primary"})),
                "contains ':'",
            ),
            (
                "invalid_non_ascii_name",
                one(json!({"type": "string", "x-mcp-header": "Région"})),
                "contains 'é'",
            ),
            (
                "invalid_control_char_name",
                one(json!({"type": "string", "x-mcp-header": "Region\t1"})),
                "contains '\\t'",
            ),
        ];
        let mut items = vec![tool(
            "valid_tool",
            json!({"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}, "required": ["region"]}),
        )];
        items.extend(cases.iter().map(|(n, s, _)| tool(n, s.clone())));
        let checked = check(listing(&items), "s", "__", |_| true);
        let kept: Vec<&str> = checked.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(kept, ["valid_tool"]);
        assert_eq!(checked.report.invalid_total, cases.len());
        for ((name, _, want), got) in cases.iter().zip(&checked.report.invalid_tools) {
            assert_eq!(got.name.as_deref(), Some(*name));
            assert!(got.reason.contains(want), "{name}: {}", got.reason);
        }
    }

    #[test]
    fn headers_only_on_statically_reachable_primitives() {
        // Nested objects through `properties` alone are fine.
        assert!(header_ok(
            json!({"type": "object", "properties": {"a": {"type": "object",
            "properties": {"b": {"type": "integer", "x-mcp-header": "B"}}}}})
        ));
        assert!(header_ok(
            json!({"properties": {"a": {"type": "boolean", "x-mcp-header": "A"}}})
        ));
        assert!(header_ok(
            json!({"properties": {"a": {"type": ["string", "null"], "x-mcp-header": "A"}}})
        ));
        // A property named like the keyword is not an annotation.
        assert!(header_ok(
            json!({"properties": {"x-mcp-header": {"type": "object"}}})
        ));
        // Data keywords are not schemas.
        assert!(header_ok(
            json!({"properties": {"a": {"type": "object", "default": {"x-mcp-header": 1}}}})
        ));
        let unreachable = [
            json!({"type": "string", "x-mcp-header": "Root"}),
            json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"properties": {"a": {"type": "array", "prefixItems": [{"type": "string", "x-mcp-header": "A"}]}}}),
            json!({"properties": {"a": {"oneOf": [{"type": "string", "x-mcp-header": "A"}]}}}),
            json!({"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"allOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"not": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"if": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"then": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"else": {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"$defs": {"d": {"type": "string", "x-mcp-header": "A"}}, "properties": {"a": {"$ref": "#/$defs/d"}}}),
            json!({"additionalProperties": {"type": "string", "x-mcp-header": "A"}}),
            json!({"patternProperties": {"^a": {"type": "string", "x-mcp-header": "A"}}}),
        ];
        for schema in unreachable {
            let r = reason(&tool("t", schema.clone()));
            assert!(r.contains("not on a property reachable"), "{schema}: {r}");
        }
        // `$ref` beside the annotation: the type is not known here.
        let r = reason(&tool(
            "t",
            json!({"properties": {"a": {"$ref": "#/$defs/d", "x-mcp-header": "A"}}}),
        ));
        assert!(r.contains("no type"), "{r}");
        for ty in [
            json!("number"),
            json!(["string", "object"]),
            json!(["null"]),
        ] {
            let r = reason(&tool(
                "t",
                json!({"properties": {"a": {"type": ty, "x-mcp-header": "A"}}}),
            ));
            assert!(r.contains("only integer, string or boolean"), "{r}");
        }
        let r = reason(&tool(
            "t",
            json!({"properties": {"a": {"type": "string", "x-mcp-header": 5}}}),
        ));
        assert!(r.contains("not a string"), "{r}");
        // RFC 9110 tchar punctuation is fine.
        assert!(header_ok(
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A!#$%&'*+-.^_`|~9"}}})
        ));
        // An escaped key is still seen.
        let text = r#"{"name":"t","inputSchema":{"properties":{"a":{"type":"object","x-mcp-h\u0065ader":"A"}}}}"#;
        assert!(check_tool(&RawValue::from_string(text.into()).unwrap()).is_err());
    }

    #[test]
    fn differing_copies_are_all_left_out_identical_ones_are_one_tool() {
        let a1 = tool("a", json!({"type": "object"}));
        let a2 = tool("a", json!({"type": "object", "properties": {}}));
        let b = tool("b", json!({}));
        let checked = check(
            listing(&[a1, b.clone(), a2, b.clone(), b]),
            "s",
            "__",
            |_| true,
        );
        let kept: Vec<&str> = checked.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(kept, ["b"]);
        assert_eq!(checked.report.invalid_total, 2);
        for p in &checked.report.invalid_tools {
            assert_eq!(p.name.as_deref(), Some("a"));
            assert!(p.reason.contains("2 different tools"), "{}", p.reason);
        }
    }

    #[test]
    fn filtered_out_tools_are_not_reported_and_broken_ones_are() {
        let items = [
            tool("keep", json!({})),
            json!({"name": "hidden"}),
            json!({"title": "no name"}),
            json!({"name": 7}),
        ];
        let checked = check(listing(&items), "s", "__", |n| n != "hidden");
        assert_eq!(checked.tools.len(), 1);
        let names: Vec<Option<&str>> = checked
            .report
            .invalid_tools
            .iter()
            .map(|p| p.name.as_deref())
            .collect();
        assert_eq!(names, [None, None]);
        // Verbatim JSON is kept for the published ones.
        assert_eq!(checked.tools[0].raw.get(), raw(&items[0]).get());
    }

    #[test]
    fn reports_are_capped_and_names_clipped() {
        let long = "x".repeat(500);
        let mut items: Vec<Value> = (0..150).map(|i| json!({"name": format!("t{i}")})).collect();
        items.push(json!({"name": long, "inputSchema": {}}));
        let checked = check(listing(&items), "s", "__", |_| true);
        assert_eq!(checked.report.invalid_total, 151);
        assert_eq!(checked.report.invalid_tools.len(), MAX_REPORTED);
        let clipped = clip(&long, SHOWN_NAME_MAX);
        assert_eq!(
            ToolProblem::new(Some(&long), "r").name.as_deref(),
            Some(clipped.as_str())
        );
        let more = checked
            .report
            .with_more_invalid(&[ToolProblem::new(None, "clash")]);
        assert_eq!(more.invalid_total, 152);
        assert_eq!(more.invalid_tools.len(), MAX_REPORTED);
    }

    #[test]
    fn public_names_outside_the_llm_safe_form_are_flagged_not_dropped() {
        let items = [
            tool("ok.tool-1", json!({})),
            tool("has space", json!({})),
            tool(&"y".repeat(62), json!({})),
        ];
        let checked = check(listing(&items), "srv", "__", |_| true);
        assert_eq!(checked.tools.len(), 3);
        let w = &checked.report.name_warnings;
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].name.as_deref(), Some("srv__has space"));
        assert!(w[0].reason.contains("' '"), "{}", w[0].reason);
        assert!(w[1].reason.contains("67 characters"), "{}", w[1].reason);
        assert!(llm_unsafe(&"a".repeat(64)).is_none());
        assert!(llm_unsafe("a::b").is_some());
    }
}
