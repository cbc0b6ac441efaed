//! The aggregated tool catalog: an immutable snapshot, pre-serialized so the
//! HTTP workers only hand out bytes.
//!
//! Building is split in two so a change to one server does not re-serialize
//! the others: [`ServerTools::build`] filters-in, namespaces and serializes
//! one server's tools into one contiguous buffer (on the upstream's own
//! arbiter thread); [`Catalog::assemble`] only lists the per-server parts.
//! The body of `GET /v1/tools` is those buffers in order ([`Body`]), so the
//! catalog holds each tool's JSON exactly once: what the memory budget of
//! 1000 upstreams x 100 tools needs (docs/adr/0004).

use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::mcp::Tool;

/// One tool as the catalog shows it. Its JSON lives in the owning
/// [`ServerTools`] buffer.
#[derive(Debug)]
pub struct CatalogEntry {
    /// `<server><separator><tool>`, unique by construction.
    pub name: String,
    /// Where the upstream's own name starts in `name`.
    upstream_at: usize,
    /// This entry's JSON object in the server's buffer.
    json: Range<usize>,
    /// The upstream tool object (verbatim) in the server's buffer.
    tool: Range<usize>,
    /// Lower-cased name and description, for `?q=`.
    search_text: Box<str>,
    /// Hash of `name`: the registry's cross-server clash check counts these.
    pub(crate) name_hash: u64,
}

impl CatalogEntry {
    /// The tool's name on its upstream.
    pub fn upstream_name(&self) -> &str {
        &self.name[self.upstream_at..]
    }
}

/// One server's part of the catalog.
#[derive(Debug)]
pub struct ServerTools {
    pub server: String,
    pub stale: bool,
    entries: Vec<CatalogEntry>,
    /// Every entry's JSON, joined by `,` (a JSON array without brackets).
    buf: Bytes,
    /// Content hash of `buf`, for the catalog's ETag.
    hash: u64,
    /// The tools [`Self::find`] handed out, kept so that each call does not
    /// copy and re-validate its tool's JSON (filled on demand: only tools
    /// that are called cost the memory).
    found: std::sync::Mutex<std::collections::HashMap<String, Tool>>,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    name: &'a str,
    server: &'a str,
    upstream_name: &'a str,
    stale: bool,
    // Last on purpose: the entry then ends with `<tool>}`, which is how
    // `build` finds the tool's range without parsing.
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
        let items = tools.iter().map(|t| (t.name.as_str(), t.raw.as_ref()));
        Self::build_from(server, separator, stale, items)
    }

    fn build_from<'a>(
        server: &str,
        separator: &str,
        stale: bool,
        tools: impl Iterator<Item = (&'a str, &'a RawValue)>,
    ) -> Self {
        let mut buf: Vec<u8> = Vec::new();
        let mut entries = Vec::with_capacity(tools.size_hint().0);
        for (upstream_name, raw) in tools {
            let name = format!("{server}{separator}{upstream_name}");
            if !entries.is_empty() {
                buf.push(b',');
            }
            let start = buf.len();
            let entry = EntryJson {
                name: &name,
                server,
                upstream_name,
                stale,
                tool: raw,
            };
            if serde_json::to_writer(&mut buf, &entry).is_err() {
                // Only an I/O error of the writer can fail here, and a Vec
                // has none; drop the entry rather than the catalog.
                buf.truncate(start.saturating_sub(1));
                continue;
            }
            let end = buf.len();
            let tool_end = end - 1;
            let description = serde_json::from_str::<DescriptionOnly<'_>>(raw.get())
                .ok()
                .and_then(|d| d.description)
                .unwrap_or_default();
            entries.push(CatalogEntry {
                name_hash: name_hash(&name),
                upstream_at: name.len() - upstream_name.len(),
                search_text: format!("{upstream_name} {description}")
                    .to_lowercase()
                    .into_boxed_str(),
                name,
                json: start..end,
                tool: tool_end - raw.get().len()..tool_end,
            });
        }
        // Held for as long as the server's tools do not change: keep no
        // growth slack (up to half of the buffer; at 10k upstreams the
        // largest single item of the heap profile, ADR 0023).
        buf.shrink_to_fit();
        entries.shrink_to_fit();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        buf.hash(&mut hasher);
        Self {
            server: server.to_owned(),
            stale,
            entries,
            buf: Bytes::from(buf),
            hash: hasher.finish(),
            found: std::sync::Mutex::default(),
        }
    }

    /// The same tools with another `stale` flag.
    pub fn with_stale(&self, separator: &str, stale: bool) -> Self {
        let items = self
            .entries
            .iter()
            .filter_map(|e| Some((e.upstream_name(), self.raw_tool(e)?)));
        Self::build_from(&self.server, separator, stale, items)
    }

    /// The same part without the entries whose public name is in `names`
    /// (the registry leaves out both sides of a cross-server clash).
    pub fn without(&self, names: &std::collections::HashSet<&str>) -> Self {
        let separator = self.entries.first().map_or("", |e| {
            e.name
                .get(self.server.len()..e.upstream_at)
                .unwrap_or_default()
        });
        let items = self
            .entries
            .iter()
            .filter(|e| !names.contains(e.name.as_str()))
            .filter_map(|e| Some((e.upstream_name(), self.raw_tool(e)?)));
        Self::build_from(&self.server, separator, self.stale, items)
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The upstream tool object of `entry`, verbatim.
    pub fn tool_json(&self, entry: &CatalogEntry) -> &str {
        std::str::from_utf8(&self.buf[entry.tool.clone()]).unwrap_or_default()
    }

    fn raw_tool(&self, entry: &CatalogEntry) -> Option<&RawValue> {
        serde_json::from_str(self.tool_json(entry)).ok()
    }

    /// The listed tool named `upstream_name` on its server, with its JSON
    /// verbatim (a `tools/call` needs its schema for `x-mcp-header`). A
    /// scan and a copy the first time, a map lookup after that.
    pub fn find(&self, upstream_name: &str) -> Option<Tool> {
        let mut found = crate::lock(&self.found);
        if let Some(tool) = found.get(upstream_name) {
            return Some(tool.clone());
        }
        let entry = self
            .entries
            .iter()
            .find(|e| e.upstream_name() == upstream_name)?;
        let raw = RawValue::from_string(self.tool_json(entry).to_owned()).ok()?;
        let tool = Tool {
            name: upstream_name.to_owned(),
            raw: Arc::from(raw),
        };
        found.insert(upstream_name.to_owned(), tool.clone());
        Some(tool)
    }

    /// Every entry's JSON joined by `,`: the inside of a JSON array.
    pub fn entries_json(&self) -> Bytes {
        self.buf.clone()
    }

    /// Whether these are exactly `tools` (same names and same JSON, in
    /// order): the upstream's "did anything change" test.
    pub fn same_tools(&self, tools: &[Tool]) -> bool {
        self.entries.len() == tools.len()
            && self
                .entries
                .iter()
                .zip(tools)
                .all(|(e, t)| e.upstream_name() == t.name && self.tool_json(e) == t.raw.get())
    }
}

/// The hash [`CatalogEntry::name_hash`] holds (fixed keys: the same name
/// hashes alike on every arbiter thread).
pub(crate) fn name_hash(name: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// A response body as pre-serialized pieces (no copy of the catalog).
#[derive(Clone, Debug)]
pub struct Body {
    pub chunks: Vec<Bytes>,
    pub len: usize,
}

impl Body {
    fn new(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(Bytes::len).sum();
        Self { chunks, len }
    }

    /// One contiguous buffer (tests, small bodies).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            chunks => {
                let mut out = BytesMut::with_capacity(self.len);
                for c in chunks {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }
}

/// An immutable catalog snapshot.
#[derive(Debug)]
pub struct Catalog {
    pub version: u64,
    /// Strong ETag (quoted), derived from the version and the content.
    pub etag: String,
    servers: Vec<Arc<ServerTools>>,
    tool_count: usize,
    prefix: Bytes,
}

const SUFFIX: &[u8] = b"]}";
const COMMA: &[u8] = b",";

impl Catalog {
    /// The catalog before any discovery: version 0, no tools.
    pub fn empty() -> Self {
        Self::assemble(0, Vec::new())
    }

    /// A snapshot of `servers`' parts (empty parts are left out).
    pub fn assemble(version: u64, mut servers: Vec<Arc<ServerTools>>) -> Self {
        servers.retain(|s| !s.is_empty());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for s in &servers {
            s.server.hash(&mut hasher);
            s.hash.hash(&mut hasher);
        }
        let etag = format!("\"{version}-{:016x}\"", hasher.finish());
        let tool_count = servers.iter().map(|s| s.len()).sum();
        Self {
            prefix: Bytes::from(format!("{{\"version\":{version},\"tools\":[")),
            version,
            etag,
            servers,
            tool_count,
        }
    }

    /// The whole `{"version":N,"tools":[...]}` body.
    pub fn body(&self) -> Body {
        self.body_of(self.servers.iter().map(|s| s.as_ref()))
    }

    fn body_of<'a>(&self, servers: impl Iterator<Item = &'a ServerTools>) -> Body {
        let mut chunks = vec![self.prefix.clone()];
        for (i, s) in servers.enumerate() {
            if i > 0 {
                chunks.push(Bytes::from_static(COMMA));
            }
            chunks.push(s.buf.clone());
        }
        chunks.push(Bytes::from_static(SUFFIX));
        Body::new(chunks)
    }

    pub fn tool_count(&self) -> usize {
        self.tool_count
    }

    /// The non-empty server parts as shared handles, in config order (an
    /// unchanged server keeps the same `Arc` from version to version, so
    /// derived forms can be cached by it).
    pub fn parts(&self) -> &[Arc<ServerTools>] {
        &self.servers
    }

    /// The non-empty server parts, in config order.
    pub fn servers(&self) -> impl Iterator<Item = &ServerTools> {
        self.servers.iter().map(|s| s.as_ref())
    }

    /// Whether `parts` are the very parts of this catalog (pointer
    /// equality, empty parts ignored): then there is nothing to publish.
    pub fn has_parts(&self, parts: &[Arc<ServerTools>]) -> bool {
        let mut mine = self.servers.iter();
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .all(|p| mine.next().is_some_and(|m| Arc::ptr_eq(m, p)))
            && mine.next().is_none()
    }

    /// One server's part, if it has tools.
    pub fn server(&self, name: &str) -> Option<&ServerTools> {
        self.servers().find(|s| s.server == name)
    }

    /// A body restricted to one server and/or a case-insensitive substring
    /// of the tool's name or description.
    pub fn render_filtered(&self, server: Option<&str>, q: Option<&str>) -> Body {
        let servers = self
            .servers()
            .filter(|s| server.is_none_or(|want| s.server == want));
        let Some(q) = q else {
            return self.body_of(servers);
        };
        let q = q.to_lowercase();
        let mut out = BytesMut::new();
        out.extend_from_slice(&self.prefix);
        let mut first = true;
        for s in servers {
            for e in s.entries.iter().filter(|e| e.search_text.contains(&q)) {
                if !first {
                    out.extend_from_slice(COMMA);
                }
                first = false;
                out.extend_from_slice(&s.buf[e.json.clone()]);
            }
        }
        out.extend_from_slice(SUFFIX);
        Body::new(vec![out.freeze()])
    }
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

    fn json(body: Body) -> serde_json::Value {
        serde_json::from_slice(&body.to_bytes()).unwrap()
    }

    #[test]
    fn namespaces_and_keeps_unknown_fields_verbatim() {
        let st = ServerTools::build(
            "search",
            "__",
            false,
            &[tool("find", ",\"x-custom\":{\"a\":1}")],
        );
        assert_eq!(
            st.tool_json(&st.entries()[0]),
            r#"{"name":"find","description":"Does find","x-custom":{"a":1}}"#
        );
        assert_eq!(st.entries()[0].upstream_name(), "find");
        let cat = Catalog::assemble(3, vec![Arc::new(st)]);
        let v = json(cat.body());
        assert_eq!(v["version"], 3);
        assert_eq!(v["tools"][0]["name"], "search__find");
        assert_eq!(v["tools"][0]["server"], "search");
        assert_eq!(v["tools"][0]["upstream_name"], "find");
        assert_eq!(v["tools"][0]["stale"], false);
        assert_eq!(v["tools"][0]["tool"]["x-custom"]["a"], 1);
        assert_eq!(cat.body().len, cat.body().to_bytes().len());
    }

    #[test]
    fn find_hands_out_the_listed_tool_and_keeps_it_for_the_next_call() {
        let st = ServerTools::build(
            "s",
            "__",
            false,
            &[
                tool("a", ""),
                tool("b", ",\"inputSchema\":{\"type\":\"object\"}"),
            ],
        );
        let first = st.find("b").unwrap();
        assert_eq!(first.name, "b");
        assert_eq!(
            first.raw.get(),
            r#"{"name":"b","description":"Does b","inputSchema":{"type":"object"}}"#
        );
        let again = st.find("b").unwrap();
        assert!(
            Arc::ptr_eq(&first.raw, &again.raw),
            "kept, not copied again"
        );
        assert_eq!(
            st.find("a").unwrap().raw.get(),
            r#"{"name":"a","description":"Does a"}"#
        );
        // Only listed tools: an unknown name is neither found nor kept.
        assert!(st.find("zz").is_none());
        assert!(st.find("s__b").is_none());
        assert_eq!(st.found.lock().unwrap().len(), 2);
    }

    #[test]
    fn names_needing_escapes_stay_valid_json() {
        let raw = RawValue::from_string(r#"{"name":"a\"b"}"#.into()).unwrap();
        let t = Tool {
            name: "a\"b".into(),
            raw: Arc::from(raw),
        };
        let st = ServerTools::build("s", "__", false, &[t.clone(), tool("c", "")]);
        assert_eq!(st.tool_json(&st.entries()[0]), r#"{"name":"a\"b"}"#);
        let v = json(Catalog::assemble(1, vec![Arc::new(st)]).body());
        assert_eq!(v["tools"][0]["name"], "s__a\"b");
        assert_eq!(v["tools"][1]["upstream_name"], "c");
    }

    #[test]
    fn etag_changes_with_content_and_not_otherwise() {
        let a = Arc::new(ServerTools::build("a", "__", false, &[tool("t1", "")]));
        let c1 = Catalog::assemble(1, vec![a.clone()]);
        let c1b = Catalog::assemble(1, vec![a.clone()]);
        assert_eq!(c1.etag, c1b.etag);
        let b = Arc::new(a.with_stale("__", true));
        let c2 = Catalog::assemble(1, vec![b.clone()]);
        assert_ne!(c1.etag, c2.etag, "stale flag is content");
        assert_eq!(json(c2.body())["tools"][0]["stale"], true);
        assert!(b.same_tools(&[tool("t1", "")]));
        assert!(!b.same_tools(&[tool("t1", ",\"x\":1")]));
        assert!(!b.same_tools(&[]));
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
        let empty = Arc::new(ServerTools::build("c", "__", false, &[]));
        let cat = Catalog::assemble(1, vec![a.clone(), empty.clone(), b.clone()]);
        let names = |body: Body| -> Vec<String> {
            json(body)["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(cat.body()), ["a__alpha", "a__beta", "b__gamma"]);
        assert_eq!(names(cat.render_filtered(Some("b"), None)), ["b__gamma"]);
        assert_eq!(names(cat.render_filtered(None, Some("BET"))), ["a__beta"]);
        assert_eq!(
            names(cat.render_filtered(None, Some("does gamma"))),
            ["b__gamma"]
        );
        assert!(names(cat.render_filtered(Some("zzz"), None)).is_empty());
        assert!(names(cat.render_filtered(None, Some("zzz"))).is_empty());
        assert_eq!(cat.tool_count(), 3);
        assert!(cat.has_parts(&[a.clone(), empty, b.clone()]));
        assert!(!cat.has_parts(&[b, a]));
        assert!(Catalog::empty().has_parts(&[]));
        assert_eq!(
            json(Catalog::empty().body())["tools"],
            serde_json::json!([])
        );
    }
}
