//! `tools/list` of the MCP endpoint, pre-serialized once per catalog
//! version and scope (the whole catalog, one server, one view): serving a
//! listing only hands out `Bytes`, like `GET /v1/tools`.
//!
//! Each server's part is turned into MCP tool objects once (the upstream's
//! tool verbatim, its `name` replaced by the public name, or kept for
//! `/mcp/{server}`), cached by the part's `Arc` (an unchanged server keeps
//! its part across catalog versions). The whole-catalog listing is those
//! buffers joined; a view's is filtered once into its own buffer; pages
//! (`mcp.page_size`) are cut once per listing.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, Mutex, Weak};

use super::lock;

use bytes::Bytes;
use discovery_actors::catalog::ServerTools;
use discovery_actors::Catalog;
use discovery_config::{Config, ViewSpec};
use serde_json::{Map, Value};

/// What a listing covers: the path it is served on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/mcp`: every tool under its public name.
    All,
    /// `/mcp/{server}`: one server's tools under their upstream names.
    Server(String),
    /// `/mcp/{view}`: `views.<name>`, public names.
    View(String),
}

impl Scope {
    /// Whether tools are shown under their public names.
    pub fn public_names(&self) -> bool {
        !matches!(self, Scope::Server(_))
    }

    /// Whether `server` contributes to this scope under `config`.
    pub fn covers(&self, server: &str, config: &Config) -> bool {
        match self {
            Scope::All => true,
            Scope::Server(s) => s == server,
            Scope::View(v) => config
                .views
                .get(v.as_str())
                .is_some_and(|v| v.covers(server)),
        }
    }
}

/// One server's tools as MCP tool objects, both ways of naming them.
struct McpPart {
    /// Tool objects under public names, joined by `,`.
    public: Bytes,
    public_tools: Vec<Range<usize>>,
    /// Tool objects under upstream names, joined by `,`.
    plain: Bytes,
    plain_tools: Vec<Range<usize>>,
    /// Public name of each tool, in order.
    names: Vec<String>,
    public_hash: u64,
    plain_hash: u64,
}

impl McpPart {
    fn build(part: &ServerTools) -> Self {
        let mut public = Vec::new();
        let mut plain = Vec::new();
        let mut public_tools = Vec::with_capacity(part.len());
        let mut plain_tools = Vec::with_capacity(part.len());
        let mut names = Vec::with_capacity(part.len());
        for entry in part.entries() {
            // The catalog only holds objects it parsed, so this parses; a
            // tool that somehow does not is left out rather than sent broken.
            let Ok(mut tool) = serde_json::from_str::<Map<String, Value>>(part.tool_json(entry))
            else {
                continue;
            };
            for (buf, ranges, name) in [
                (&mut public, &mut public_tools, entry.name.as_str()),
                (&mut plain, &mut plain_tools, entry.upstream_name()),
            ] {
                tool.insert("name".into(), Value::String(name.to_owned()));
                if !buf.is_empty() {
                    buf.push(b',');
                }
                let start = buf.len();
                if serde_json::to_writer(&mut *buf, &tool).is_err() {
                    buf.truncate(start.saturating_sub(1));
                    continue;
                }
                ranges.push(start..buf.len());
            }
            names.push(entry.name.clone());
        }
        Self {
            public_hash: hash_of(&public),
            plain_hash: hash_of(&plain),
            public: Bytes::from(public),
            public_tools,
            plain: Bytes::from(plain),
            plain_tools,
            names,
        }
    }
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A listing of one scope at one catalog version.
pub struct Listing {
    /// The catalog version it was cut from.
    pub version: u64,
    /// The configuration it was cut under (views, page size).
    config: Weak<Config>,
    /// Identifies the content (not the version): a catalog change that
    /// leaves this scope alone keeps it, so its listeners hear nothing and
    /// its cursors stay valid.
    pub fingerprint: u64,
    pub tool_count: usize,
    /// The inside of the `tools` array, in pieces (no copy of the parts).
    pub body: Vec<Bytes>,
    /// With `mcp.page_size`: each page's inside of the array.
    pub pages: Vec<Bytes>,
}

impl Listing {
    /// The pieces and their total length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }
}

/// A part's MCP form, keyed by the part's address (checked against the
/// weak handle, since a freed address can be reused).
type PartCache = HashMap<usize, (Weak<ServerTools>, Arc<McpPart>)>;

/// The per-part and per-scope caches, shared by every worker.
#[derive(Default)]
pub struct Listings {
    parts: Mutex<PartCache>,
    scopes: Mutex<HashMap<Scope, Arc<Listing>>>,
}

impl Listings {
    /// The listing of `scope` in `catalog` (built on the first ask for
    /// this version, then shared). `config` gives the views and the page
    /// size; None when the scope is a view that no longer exists.
    pub fn get(
        &self,
        catalog: &Catalog,
        scope: &Scope,
        config: &Arc<Config>,
    ) -> Option<Arc<Listing>> {
        let view = match scope {
            Scope::View(v) => Some(config.views.get(v.as_str())?),
            _ => None,
        };
        let page_size = config.mcp.page_size as usize;
        if let Some(hit) = lock(&self.scopes).get(scope) {
            let same_config = hit
                .config
                .upgrade()
                .is_some_and(|c| Arc::ptr_eq(&c, config));
            if hit.version == catalog.version && same_config {
                return Some(hit.clone());
            }
        }
        // Built outside the lock: two workers may build the same listing
        // at once, which costs time, never correctness.
        let mut listing = self.build(catalog, scope, view, page_size);
        listing.config = Arc::downgrade(config);
        let listing = Arc::new(listing);
        lock(&self.scopes).insert(scope.clone(), listing.clone());
        Some(listing)
    }

    /// Forgets cached scopes whose view is gone and parts no catalog holds.
    pub fn prune(&self, config: &Config) {
        lock(&self.parts).retain(|_, (weak, _)| weak.strong_count() > 0);
        lock(&self.scopes).retain(|scope, _| match scope {
            Scope::View(v) => config.views.contains_key(v.as_str()),
            _ => true,
        });
    }

    fn part(&self, part: &Arc<ServerTools>) -> Arc<McpPart> {
        let key = Arc::as_ptr(part) as usize;
        if let Some((weak, built)) = lock(&self.parts).get(&key) {
            // The address of a freed part can be reused: check it is the same.
            if weak.upgrade().is_some_and(|p| Arc::ptr_eq(&p, part)) {
                return built.clone();
            }
        }
        let built = Arc::new(McpPart::build(part));
        lock(&self.parts).insert(key, (Arc::downgrade(part), built.clone()));
        built
    }

    fn build(
        &self,
        catalog: &Catalog,
        scope: &Scope,
        view: Option<&ViewSpec>,
        page_size: usize,
    ) -> Listing {
        let mut hasher = DefaultHasher::new();
        let mut body = Vec::new();
        // Each tool's bytes, for pages.
        let mut tools: Vec<Bytes> = Vec::new();
        let mut tool_count = 0;
        let mut push = |bytes: Bytes, hash: u64, count: usize, body: &mut Vec<Bytes>| {
            if bytes.is_empty() {
                return;
            }
            if !body.is_empty() {
                body.push(Bytes::from_static(b","));
            }
            hash.hash(&mut hasher);
            tool_count += count;
            body.push(bytes);
        };
        for part in catalog.parts() {
            let server = part.server.as_str();
            let keep = match (scope, view) {
                (Scope::All, _) => true,
                (Scope::Server(s), _) => s == server,
                (Scope::View(_), Some(v)) => v.covers(server),
                (Scope::View(_), None) => false,
            };
            if !keep {
                continue;
            }
            let mcp = self.part(part);
            let (buf, ranges, hash) = if scope.public_names() {
                (&mcp.public, &mcp.public_tools, mcp.public_hash)
            } else {
                (&mcp.plain, &mcp.plain_tools, mcp.plain_hash)
            };
            match view {
                Some(v) => {
                    let kept: Vec<&Range<usize>> = ranges
                        .iter()
                        .zip(&mcp.names)
                        .filter(|(_, name)| v.tools.allows(name))
                        .map(|(r, _)| r)
                        .collect();
                    let mut joined = Vec::new();
                    for r in &kept {
                        if !joined.is_empty() {
                            joined.push(b',');
                        }
                        joined.extend_from_slice(&buf[(*r).clone()]);
                        if page_size > 0 {
                            tools.push(buf.slice((*r).clone()));
                        }
                    }
                    let h = hash_of(&joined);
                    push(Bytes::from(joined), h, kept.len(), &mut body);
                }
                None => {
                    if page_size > 0 {
                        tools.extend(ranges.iter().map(|r| buf.slice(r.clone())));
                    }
                    push(buf.clone(), hash, ranges.len(), &mut body);
                }
            }
        }
        let pages = if page_size > 0 {
            tools
                .chunks(page_size)
                .map(|page| {
                    let mut out = Vec::with_capacity(page.iter().map(|t| t.len() + 1).sum());
                    for (i, t) in page.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(t);
                    }
                    Bytes::from(out)
                })
                .collect()
        } else {
            Vec::new()
        };
        Listing {
            version: catalog.version,
            config: Weak::new(),
            fingerprint: hasher.finish(),
            tool_count,
            body,
            pages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use discovery_actors::mcp::Tool;
    use serde_json::json;

    fn tools(names: &[&str]) -> Vec<Tool> {
        names
            .iter()
            .map(|n| {
                let raw = json!({"name": n, "description": format!("does {n}"), "inputSchema": {"type": "object"}});
                Tool {
                    name: (*n).to_owned(),
                    raw: serde_json::value::to_raw_value(&raw).unwrap().into(),
                }
            })
            .collect()
    }

    fn catalog(version: u64, parts: &[Arc<ServerTools>]) -> Catalog {
        Catalog::assemble(version, parts.to_vec())
    }

    fn names(listing: &Listing) -> Vec<String> {
        let mut all = Vec::new();
        let text: String = listing
            .body
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect();
        let v: Vec<Value> = serde_json::from_str(&format!("[{text}]")).unwrap();
        for t in v {
            all.push(t["name"].as_str().unwrap().to_owned());
        }
        all
    }

    fn config(yaml: &str) -> Arc<Config> {
        Arc::new(
            discovery_config::load_str(yaml, discovery_config::Format::Yaml, None, &[]).unwrap(),
        )
    }

    #[test]
    fn scopes_name_tools_their_way_and_views_filter_by_public_name() {
        let a = Arc::new(ServerTools::build(
            "a",
            "__",
            false,
            &tools(&["x", "drop_y"]),
        ));
        let b = Arc::new(ServerTools::build("b", "__", false, &tools(&["z"])));
        let cat = catalog(3, &[a.clone(), b.clone()]);
        let cfg = config("views:\n  ops:\n    servers: [a]\n    tools: {deny: ['a__drop_*']}\n");
        let l = Listings::default();
        let all = l.get(&cat, &Scope::All, &cfg).unwrap();
        assert_eq!(names(&all), ["a__x", "a__drop_y", "b__z"]);
        assert_eq!(all.tool_count, 3);
        let one = l.get(&cat, &Scope::Server("a".into()), &cfg).unwrap();
        assert_eq!(names(&one), ["x", "drop_y"]);
        let ops = l.get(&cat, &Scope::View("ops".into()), &cfg).unwrap();
        assert_eq!(names(&ops), ["a__x"]);
        assert!(l.get(&cat, &Scope::View("nope".into()), &cfg).is_none());
        // The rest of the tool object is the upstream's, verbatim.
        let text = std::str::from_utf8(&one.body[0]).unwrap().to_owned();
        assert!(text.contains(r#""description":"does x""#), "{text}");
    }

    #[test]
    fn a_change_elsewhere_keeps_a_scope_fingerprint_and_reuses_parts() {
        let a = Arc::new(ServerTools::build("a", "__", false, &tools(&["x"])));
        let b1 = Arc::new(ServerTools::build("b", "__", false, &tools(&["z"])));
        let b2 = Arc::new(ServerTools::build("b", "__", false, &tools(&["z", "w"])));
        let cfg = config("views:\n  only-a:\n    servers: [a]\n");
        let l = Listings::default();
        let v1 = catalog(1, &[a.clone(), b1]);
        let v2 = catalog(2, &[a.clone(), b2]);
        let all1 = l.get(&v1, &Scope::All, &cfg).unwrap().fingerprint;
        let view1 = l
            .get(&v1, &Scope::View("only-a".into()), &cfg)
            .unwrap()
            .fingerprint;
        let a1 = l.get(&v1, &Scope::Server("a".into()), &cfg).unwrap();
        let all2 = l.get(&v2, &Scope::All, &cfg).unwrap().fingerprint;
        let view2 = l
            .get(&v2, &Scope::View("only-a".into()), &cfg)
            .unwrap()
            .fingerprint;
        let a2 = l.get(&v2, &Scope::Server("a".into()), &cfg).unwrap();
        assert_ne!(all1, all2);
        assert_eq!(view1, view2);
        assert_eq!(a1.fingerprint, a2.fingerprint);
        assert_eq!(a2.version, 2);
        // The part of `a` was turned into MCP objects once: same buffer.
        assert_eq!(a1.body[0].as_ptr(), a2.body[0].as_ptr());
        // A new config (a reload) cuts the listing again, under its views.
        let narrower = config("views:\n  only-a:\n    servers: [a]\n    tools: {deny: ['*']}\n");
        let view3 = l
            .get(&v2, &Scope::View("only-a".into()), &narrower)
            .unwrap();
        assert_eq!(view3.tool_count, 0);
        assert_ne!(view3.fingerprint, view2);
        // A stale flag is not part of what MCP clients see.
        let stale = Arc::new(a.with_stale("__", true));
        let v3 = catalog(
            3,
            &[
                stale,
                Arc::new(ServerTools::build("b", "__", false, &tools(&["z", "w"]))),
            ],
        );
        assert_eq!(l.get(&v3, &Scope::All, &cfg).unwrap().fingerprint, all2);
    }

    #[test]
    fn pages_cover_every_tool_once_in_order() {
        let a = Arc::new(ServerTools::build(
            "a",
            "__",
            false,
            &tools(&["t1", "t2", "t3"]),
        ));
        let b = Arc::new(ServerTools::build("b", "__", false, &tools(&["t4", "t5"])));
        let cfg = config("mcp: {page_size: 2}\n");
        let l = Listings::default();
        let listing = l.get(&catalog(1, &[a, b]), &Scope::All, &cfg).unwrap();
        let pages: Vec<Vec<String>> = listing
            .pages
            .iter()
            .map(|p| {
                let v: Vec<Value> =
                    serde_json::from_str(&format!("[{}]", std::str::from_utf8(p).unwrap()))
                        .unwrap();
                v.iter()
                    .map(|t| t["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            pages,
            [
                vec!["a__t1", "a__t2"],
                vec!["a__t3", "b__t4"],
                vec!["b__t5"]
            ]
        );
    }
}
