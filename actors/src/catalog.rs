//! The aggregated tool catalog: an immutable snapshot, pre-serialized so the
//! HTTP workers only copy bytes.
//!
//! Building is split in two so a change to one server does not re-serialize
//! the others: [`ServerTools::build`] namespaces, filters and serializes one
//! server's tools; [`Catalog::assemble`] concatenates the per-server parts.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::mcp::Tool;

/// One tool as the catalog shows it.
#[derive(Debug)]
pub struct CatalogEntry {
    /// `<server><separator><tool>`, unique by construction.
    pub name: String,
    pub upstream_name: String,
    pub tool: Arc<RawValue>,
    /// Lower-cased name and description, for `?q=`.
    search_text: String,
    /// This entry serialized, as it appears in the `tools` array.
    json: String,
}

/// One server's part of the catalog.
#[derive(Debug)]
pub struct ServerTools {
    pub server: String,
    pub stale: bool,
    pub entries: Vec<CatalogEntry>,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    name: &'a str,
    server: &'a str,
    upstream_name: &'a str,
    stale: bool,
    tool: &'a RawValue,
}

#[derive(serde::Deserialize)]
struct DescriptionOnly<'a> {
    #[serde(borrow, default)]
    description: Option<std::borrow::Cow<'a, str>>,
}

impl ServerTools {
    /// Namespaces `tools` (already filtered by the server's allow/deny) under
    /// `server` and serializes each entry once.
    pub fn build(server: &str, separator: &str, stale: bool, tools: &[Tool]) -> Self {
        let entries = tools
            .iter()
            .map(|tool| {
                let name = format!("{server}{separator}{}", tool.name);
                let json = serde_json::to_string(&EntryJson {
                    name: &name,
                    server,
                    upstream_name: &tool.name,
                    stale,
                    tool: &tool.raw,
                })
                .unwrap_or_default();
                let description = serde_json::from_str::<DescriptionOnly<'_>>(tool.raw.get())
                    .ok()
                    .and_then(|d| d.description)
                    .unwrap_or_default();
                let search_text = format!("{} {}", tool.name, description).to_lowercase();
                CatalogEntry {
                    name,
                    upstream_name: tool.name.clone(),
                    tool: tool.raw.clone(),
                    search_text,
                    json,
                }
            })
            .collect();
        Self {
            server: server.to_owned(),
            stale,
            entries,
        }
    }
}

/// An immutable catalog snapshot.
#[derive(Debug)]
pub struct Catalog {
    pub version: u64,
    /// Strong ETag (quoted), derived from the content.
    pub etag: String,
    servers: Vec<Arc<ServerTools>>,
    tool_count: usize,
    /// The full `GET /v1/tools` body.
    body: Bytes,
}

impl Catalog {
    /// The catalog before any discovery: version 0, no tools.
    pub fn empty() -> Self {
        Self::assemble(0, Vec::new())
    }

    /// Concatenates the per-server parts into the response body.
    pub fn assemble(version: u64, servers: Vec<Arc<ServerTools>>) -> Self {
        let body = render(version, servers.iter().map(|s| s.as_ref()), |_| true);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let etag = format!("\"{version}-{:016x}\"", hasher.finish());
        let tool_count = servers.iter().map(|s| s.entries.len()).sum();
        Self {
            version,
            etag,
            servers,
            tool_count,
            body: Bytes::from(body),
        }
    }

    /// The whole `{"version":N,"tools":[...]}` body.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    pub fn tool_count(&self) -> usize {
        self.tool_count
    }

    pub fn servers(&self) -> impl Iterator<Item = &ServerTools> {
        self.servers.iter().map(|s| s.as_ref())
    }

    /// Whether the tool part (not the version) equals `other`'s.
    pub fn same_tools(&self, other: &Catalog) -> bool {
        self.servers.len() == other.servers.len()
            && self
                .servers
                .iter()
                .zip(&other.servers)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// A body restricted to one server and/or a case-insensitive substring
    /// of the tool's name or description.
    pub fn render_filtered(&self, server: Option<&str>, q: Option<&str>) -> Bytes {
        if server.is_none() && q.is_none() {
            return self.body();
        }
        let q = q.map(str::to_lowercase);
        let servers = self
            .servers
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| server.is_none_or(|want| s.server == want));
        Bytes::from(render(self.version, servers, |e| {
            q.as_deref().is_none_or(|q| e.search_text.contains(q))
        }))
    }
}

fn render<'a>(
    version: u64,
    servers: impl Iterator<Item = &'a ServerTools>,
    keep: impl Fn(&CatalogEntry) -> bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"version\":");
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(b",\"tools\":[");
    let mut first = true;
    for entry in servers.flat_map(|s| s.entries.iter()).filter(|e| keep(e)) {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(entry.json.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, extra: &str) -> Tool {
        let raw = RawValue::from_string(format!(
            "{{\"name\":\"{name}\",\"description\":\"Does {name}\"{extra}}}"
        ))
        .unwrap();
        Tool {
            name: name.into(),
            raw: Arc::from(raw),
        }
    }

    #[test]
    fn namespaces_and_keeps_unknown_fields_verbatim() {
        let st = ServerTools::build(
            "search",
            "__",
            false,
            &[tool("find", ",\"x-custom\":{\"a\":1}")],
        );
        let cat = Catalog::assemble(3, vec![Arc::new(st)]);
        let v: serde_json::Value = serde_json::from_slice(&cat.body()).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["tools"][0]["name"], "search__find");
        assert_eq!(v["tools"][0]["server"], "search");
        assert_eq!(v["tools"][0]["upstream_name"], "find");
        assert_eq!(v["tools"][0]["stale"], false);
        assert_eq!(v["tools"][0]["tool"]["x-custom"]["a"], 1);
    }

    #[test]
    fn etag_changes_with_content_and_not_otherwise() {
        let a = Arc::new(ServerTools::build("a", "__", false, &[tool("t1", "")]));
        let c1 = Catalog::assemble(1, vec![a.clone()]);
        let c1b = Catalog::assemble(1, vec![a.clone()]);
        assert_eq!(c1.etag, c1b.etag);
        let b = Arc::new(ServerTools::build("a", "__", true, &[tool("t1", "")]));
        let c2 = Catalog::assemble(1, vec![b]);
        assert_ne!(c1.etag, c2.etag, "stale flag is content");
    }

    #[test]
    fn filters_by_server_and_query() {
        let a = Arc::new(ServerTools::build(
            "a",
            "__",
            false,
            &[tool("alpha", ""), tool("beta", "")],
        ));
        let b = Arc::new(ServerTools::build("b", "__", false, &[tool("gamma", "")]));
        let cat = Catalog::assemble(1, vec![a, b]);
        let names = |body: Bytes| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            v["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(cat.render_filtered(Some("b"), None)), ["b__gamma"]);
        assert_eq!(names(cat.render_filtered(None, Some("BET"))), ["a__beta"]);
        assert_eq!(
            names(cat.render_filtered(None, Some("does gamma"))),
            ["b__gamma"]
        );
        assert!(names(cat.render_filtered(Some("zzz"), None)).is_empty());
        assert_eq!(cat.tool_count(), 3);
    }
}
