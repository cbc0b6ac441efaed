//! Small helpers over the generic `serde_json::Value` tree that validation
//! works on: key paths as users write them (`servers.search.args[1]`),
//! dropping a bad node so the rest can still be checked, and "null means
//! absent".

use std::fmt::Write as _;

use serde_json::Value;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders `base` followed by `segs` as a dotted path with `[i]` indexes.
pub(crate) fn render(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_owned();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                // An empty key would vanish from the path (`servers..url`,
                // or the whole-file path "" at the top): quote it.
                if k.is_empty() {
                    out.push_str("\"\"");
                } else {
                    out.push_str(k);
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Appends one key to a dotted path.
pub(crate) fn join(base: &str, key: &str) -> String {
    render(base, &[Seg::Key(key.to_owned())])
}

/// The segments of a `serde_path_to_error` path.
pub(crate) fn from_serde_path(path: &serde_path_to_error::Path) -> Vec<Seg> {
    path.iter()
        .filter_map(|seg| match seg {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {
                None
            }
        })
        .collect()
}

/// Removes the node at `segs`, or rather the deepest *map entry* on that
/// path: removing a list element would shift the indexes of the elements
/// after it and make later messages point at the wrong one, so a bad element
/// drops its whole list. Returns the length of the removed path, or `None`
/// if nothing could be removed (an empty path, or a path that is not there).
pub(crate) fn remove(root: &mut Value, segs: &[Seg]) -> Option<usize> {
    let last_key = segs.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    let mut node = root;
    for seg in &segs[..last_key] {
        node = match (seg, node) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Seg::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    match (&segs[last_key], node) {
        (Seg::Key(k), Value::Object(map)) => map.shift_remove(k).map(|_| last_key + 1),
        _ => None,
    }
}

/// Drops every map entry whose value is `null`, at any depth: a key written
/// with no value (`servers:` or `token: ~`) means "not set", like an absent
/// key, instead of a type error.
pub(crate) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// What a value is, in the words of the config file.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Seg {
        Seg::Key(k.into())
    }

    #[test]
    fn renders_dotted_paths_with_indexes() {
        let segs = [key("args"), Seg::Index(2)];
        assert_eq!(render("servers.a", &segs), "servers.a.args[2]");
        assert_eq!(render("", &[key("listen")]), "listen");
        assert_eq!(join("", "x"), "x");
    }

    #[test]
    fn removes_the_deepest_map_entry() {
        let mut v = json!({"a": {"b": [1, 2], "c": 3}});
        assert_eq!(
            remove(&mut v, &[key("a"), key("b"), Seg::Index(1)]),
            Some(2)
        );
        assert_eq!(v, json!({"a": {"c": 3}}));
        assert_eq!(remove(&mut v, &[key("a"), key("zz")]), None);
        assert_eq!(remove(&mut v, &[]), None);
    }

    #[test]
    fn nulls_in_maps_mean_absent() {
        let mut v = json!({"a": null, "b": {"c": null, "d": 1}, "e": [null]});
        strip_nulls(&mut v);
        assert_eq!(v, json!({"b": {"d": 1}, "e": [null]}));
    }
}
