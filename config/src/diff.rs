//! Diff of two server maps by name; "changed" is `PartialEq` on the
//! effective [`ServerSpec`], so an unchanged server is never restarted.

use indexmap::IndexMap;

use crate::{ServerName, ServerSpec};

/// What a new config means for the running servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub added: Vec<ServerName>,
    pub removed: Vec<ServerName>,
    pub changed: Vec<ServerName>,
    pub unchanged: Vec<ServerName>,
}

impl ConfigDiff {
    /// True when applying it would touch nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares `old` and `new`: added and changed in `new`'s order, removed in
/// `old`'s.
pub fn diff_servers(
    old: &IndexMap<ServerName, ServerSpec>,
    new: &IndexMap<ServerName, ServerSpec>,
) -> ConfigDiff {
    let mut diff = ConfigDiff::default();
    for (name, spec) in new {
        match old.get(name) {
            None => diff.added.push(name.clone()),
            Some(prev) if prev != spec => diff.changed.push(name.clone()),
            Some(_) => diff.unchanged.push(name.clone()),
        }
    }
    diff.removed = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .cloned()
        .collect();
    diff
}
