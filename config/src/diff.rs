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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_str, Config, Format};

    fn config(text: &str) -> Config {
        match load_str(text, Format::Yaml, None, &[]) {
            Ok(config) => config,
            Err(e) => panic!("{e}"),
        }
    }

    fn names(list: &[ServerName]) -> Vec<&str> {
        list.iter().map(ServerName::as_str).collect()
    }

    const BASE: &str = "
servers:
  a: { url: 'http://a/mcp' }
  b: { url: 'http://b/mcp' }
  c: { command: npx, args: [x] }
";

    #[test]
    fn identical_configs_change_nothing() {
        let old = config(BASE);
        let diff = diff_servers(&old.servers, &config(BASE).servers);
        assert!(diff.is_empty());
        assert_eq!(names(&diff.unchanged), ["a", "b", "c"]);
    }

    #[test]
    fn added_removed_changed_unchanged() {
        let old = config(BASE);
        let new = config(
            "
servers:
  d: { url: 'http://d/mcp' }
  c: { command: npx, args: [y] }
  a: { url: 'http://a/mcp' }
",
        );
        let diff = diff_servers(&old.servers, &new.servers);
        assert_eq!(names(&diff.added), ["d"]);
        assert_eq!(names(&diff.removed), ["b"]);
        assert_eq!(names(&diff.changed), ["c"]);
        assert_eq!(names(&diff.unchanged), ["a"]);
        assert!(!diff.is_empty());
    }

    #[test]
    fn a_global_setting_changes_the_servers_that_inherit_it() {
        let old = config(BASE);
        // `a` keeps its own poll_interval, so the new global one does not
        // reach it; `b` and `c` inherit it and must restart.
        let old_with_override = config(&BASE.replace(
            "a: { url: 'http://a/mcp' }",
            "a: { url: 'http://a/mcp', poll_interval: 1m }",
        ));
        let new = config(&format!(
            "discovery: {{ poll_interval: 2m }}\n{}",
            BASE.replace(
                "a: { url: 'http://a/mcp' }",
                "a: { url: 'http://a/mcp', poll_interval: 1m }"
            )
        ));
        let diff = diff_servers(&old_with_override.servers, &new.servers);
        assert_eq!(names(&diff.changed), ["b", "c"]);
        assert_eq!(names(&diff.unchanged), ["a"]);

        let diff = diff_servers(
            &old.servers,
            &config(&format!("discovery: {{ max_pages: 7 }}\n{BASE}")).servers,
        );
        assert_eq!(names(&diff.changed), ["a", "b", "c"]);
    }

    #[test]
    fn secrets_and_filters_count_as_changes() {
        let with = |token: &str, deny: &str| {
            config(&format!(
                "servers:\n  a: {{ url: 'http://a/mcp', auth: {{ type: bearer, token: {token} }}, tools: {{ deny: ['{deny}'] }} }}\n"
            ))
        };
        let old = with("t1", "x");
        assert!(diff_servers(&old.servers, &with("t1", "x").servers).is_empty());
        assert_eq!(
            names(&diff_servers(&old.servers, &with("t2", "x").servers).changed),
            ["a"]
        );
        assert_eq!(
            names(&diff_servers(&old.servers, &with("t1", "y").servers).changed),
            ["a"]
        );
    }

    #[test]
    fn from_and_to_nothing() {
        let empty = IndexMap::new();
        let full = config(BASE).servers;
        assert_eq!(names(&diff_servers(&empty, &full).added), ["a", "b", "c"]);
        assert_eq!(names(&diff_servers(&full, &empty).removed), ["a", "b", "c"]);
        assert!(diff_servers(&empty, &empty).is_empty());
    }
}

/// Settings a running service cannot change: each difference between the
/// running `old` and a reloaded `new` is an error, and the reload is
/// rejected whole (no half-applied config).
pub fn restart_required(old: &crate::Config, new: &crate::Config) -> Vec<crate::ConfigError> {
    let mut errors = Vec::new();
    if old.listen != new.listen {
        errors.push(crate::ConfigError::new(
            new.source.as_deref(),
            "listen",
            format!(
                "changing `listen` needs a restart (running on {}, the file now says {}). \
                 Hint: restart the service to move it, or set `listen` back to {}",
                old.listen, new.listen, old.listen
            ),
        ));
    }
    errors
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn only_listen_needs_a_restart() {
        let old = crate::Config::embedded_defaults();
        let mut new = old.clone();
        new.discovery.poll_interval = std::time::Duration::from_secs(1);
        assert!(restart_required(&old, &new).is_empty());
        new.listen = "127.0.0.1:9999".parse().unwrap();
        let errors = restart_required(&old, &new);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "listen");
        assert!(errors[0].message.contains("127.0.0.1:9999"));
        assert!(errors[0].message.contains("restart"));
    }
}
