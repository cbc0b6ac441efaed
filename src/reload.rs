//! Hot reload of the configuration file (DESIGN.md section 9).
//!
//! The [`ConfigWatcher`] actor owns the running configuration. Three
//! triggers send it [`Reload`]: a change in the file's directory (watched
//! with `notify`, debounced), SIGHUP, and `POST /v1/admin/reload`. A reload
//! loads and validates the whole file first; an invalid file, or one that
//! changes a setting that needs a restart (`listen`), is rejected whole and
//! the running configuration stays. A valid one goes to the supervisor as
//! one [`ApplyConfig`], which starts added servers, stops removed ones,
//! restarts changed ones and leaves the others alone.
//!
//! The directory is watched, not the file: editors replace files by rename,
//! and a Kubernetes ConfigMap swaps a `..data` symlink, neither of which a
//! watch on the file itself survives. Only events that concern the file
//! (its name, or the ConfigMap's `..data` link, or the directory itself)
//! count: a log or lock file written next to the config never delays or
//! triggers anything. Events are debounced (a burst of edits is one reload),
//! but never for longer than [`MAX_DEBOUNCE`] after the first one (a
//! steady stream of edits cannot postpone the reload for ever), and a file
//! whose bytes did not change is not reloaded. A directory that is replaced
//! (removed and created again, or another one renamed in its place) is
//! noticed by its identity every [`REARM_CHECK`] and watched again.

use std::ffi::OsStr;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use discovery_actors::supervisor::{ApplyConfig, ApplyError, Supervisor};
use discovery_config::{restart_required, Config, ConfigErrors};
use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{Metrics, ReloadOutcome};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Longest a reload waits after the first event of a burst.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(5);
/// How often the watched directory's identity is checked (re-arm).
pub const REARM_CHECK: Duration = Duration::from_secs(1);
/// The ConfigMap symlink that the kubelet swaps on an update.
const CONFIGMAP_DATA: &str = "..data";

/// What started a reload (for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    File,
    Signal,
    Api,
}

impl ReloadTrigger {
    fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::File => "file",
            ReloadTrigger::Signal => "sighup",
            ReloadTrigger::Api => "api",
        }
    }
}

/// Sent by the file watcher (after the debounce), the SIGHUP handler and
/// `POST /v1/admin/reload`: load, validate and apply the file.
#[derive(Message, Debug)]
#[rtype(result = "Result<ReloadSummary, ReloadError>")]
pub struct Reload {
    pub trigger: ReloadTrigger,
}

/// The answer of an applied reload (also logged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    pub applied: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid, or needs a restart: nothing changed.
    #[error("the configuration was rejected; the running one is unchanged:\n{0}")]
    Rejected(ConfigErrors),
    #[error("the service runs on its embedded defaults: there is no configuration file to reload. Hint: start it with --config PATH")]
    NoFile,
    #[error("the supervisor did not take the new configuration: {0}")]
    Engine(String),
}

/// Sent by the `notify` watcher thread for an event that concerns the
/// config file; `directory` when it names the watched directory itself
/// (removed or renamed: watch it again).
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct FileEvent {
    directory: bool,
}

/// Whether an event on `path` concerns the config file `file` in `dir`.
fn concerns(path: &Path, dir: &Path, file: Option<&OsStr>) -> bool {
    path == dir
        || path
            .file_name()
            .is_some_and(|name| Some(name) == file || name == CONFIGMAP_DATA)
}

/// The debounce delay for an event at `now` when the burst began at
/// `first`: the quiet time, cut so the reload comes at most
/// [`MAX_DEBOUNCE`] after the first event.
fn debounce_wait(first: Instant, now: Instant) -> Duration {
    DEBOUNCE.min(MAX_DEBOUNCE.saturating_sub(now.saturating_duration_since(first)))
}

/// Device and inode of a directory: what changes when it is replaced.
#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|_| (0, 0))
}

/// Owns the running configuration and applies reloads one at a time.
pub struct ConfigWatcher {
    path: Option<PathBuf>,
    supervisor: Addr<Supervisor>,
    metrics: Arc<Metrics>,
    current: watch::Sender<Arc<Config>>,
    /// Hash of the file's bytes as last loaded, to ignore events that did
    /// not change it (other files in the directory, touch).
    last_bytes: Option<u64>,
    debounce: Option<SpawnHandle>,
    /// When the current burst of events began (for [`MAX_DEBOUNCE`]).
    first_event: Option<Instant>,
    /// Identity of the directory the watch is on; None: watch it again.
    watched: Option<(u64, u64)>,
    /// Kept alive for as long as the actor runs.
    watcher: Option<notify::RecommendedWatcher>,
}

impl ConfigWatcher {
    /// `config` is the running configuration; its `source` is the file.
    pub fn new(
        config: Arc<Config>,
        supervisor: Addr<Supervisor>,
        metrics: Arc<Metrics>,
    ) -> (Self, watch::Receiver<Arc<Config>>) {
        let path = config.source.clone();
        let last_bytes = path.as_deref().and_then(file_hash);
        let (current, rx) = watch::channel(config);
        let watcher = Self {
            path,
            supervisor,
            metrics,
            current,
            last_bytes,
            debounce: None,
            first_event: None,
            watched: None,
            watcher: None,
        };
        (watcher, rx)
    }

    fn directory(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        Some(match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }

    fn watch_directory(&mut self, ctx: &mut Context<Self>) {
        let (Some(path), Some(dir)) = (self.path.clone(), self.directory()) else {
            return;
        };
        // Drop the old watch first (a replaced directory's is dead).
        self.watcher = None;
        self.watched = dir_identity(&dir);
        let addr = ctx.address();
        let file = path.file_name().map(OsStr::to_os_string);
        let watched_dir = dir.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            if event.kind.is_access() {
                return;
            }
            let directory = event.paths.iter().any(|p| p == &watched_dir);
            let relevant = event.paths.is_empty()
                || event
                    .paths
                    .iter()
                    .any(|p| concerns(p, &watched_dir, file.as_deref()));
            if relevant {
                addr.do_send(FileEvent { directory });
            }
        };
        let watched = notify::recommended_watcher(handler).and_then(|mut w| {
            notify::Watcher::watch(&mut w, &dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match watched {
            Ok(w) => {
                tracing::info!(dir = %dir.display(), "Watching the configuration directory for changes.");
                self.watcher = Some(w);
            }
            Err(err) => tracing::warn!(
                dir = %dir.display(),
                error = %err,
                "Could not watch the configuration directory; reload with SIGHUP or POST /v1/admin/reload."
            ),
        }
    }

    /// Loads and checks the file; everything that can reject it, before
    /// anything changes.
    fn prepare(&self) -> Result<Arc<Config>, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let new = discovery_config::load_file(path).map_err(ReloadError::Rejected)?;
        let mut restart = restart_required(&self.current.borrow(), &new);
        restart.extend(store_restart_required(&self.current.borrow(), &new));
        if !restart.is_empty() {
            return Err(ReloadError::Rejected(ConfigErrors(restart)));
        }
        Ok(Arc::new(new))
    }

    fn rejected(&self, trigger: ReloadTrigger, error: &ReloadError) {
        self.metrics.config_reloaded(ReloadOutcome::Rejected);
        match error {
            ReloadError::Rejected(errors) => {
                for e in errors.iter() {
                    tracing::warn!(trigger = trigger.as_str(), problem = %e, "Configuration problem.");
                }
                tracing::error!(
                    trigger = trigger.as_str(),
                    problems = errors.len(),
                    "Rejected the new configuration; the running one is unchanged."
                );
            }
            other => tracing::error!(trigger = trigger.as_str(), error = %other, "Reload failed."),
        }
    }
}

/// The store is opened once at start-up (its pools, its listener, the
/// rows the engine runs): a change of `store.*` needs a restart, like
/// `listen`. The values are never echoed (a URL may hold a password).
fn store_restart_required(old: &Config, new: &Config) -> Option<discovery_config::ConfigError> {
    let mut changed = Vec::new();
    if old.store.url != new.store.url {
        changed.push("store.url");
    }
    if old.store.encryption_key != new.store.encryption_key {
        changed.push("store.encryption_key");
    }
    let first = *changed.first()?;
    Some(discovery_config::ConfigError::new(
        new.source.as_deref(),
        first,
        format!(
            "changing {} needs a restart (the store is opened once, at start-up). Hint: \
             restart the service to use the new store settings, or set them back",
            changed.join(" and ")
        ),
    ))
}

fn file_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

impl Actor for ConfigWatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.watch_directory(ctx);
        if self.path.is_some() {
            ctx.run_interval(REARM_CHECK, |act, ctx| act.check_directory(ctx));
        }
    }
}

impl Handler<FileEvent> for ConfigWatcher {
    type Result = ();

    fn handle(&mut self, msg: FileEvent, ctx: &mut Self::Context) {
        if msg.directory {
            // Removed or renamed: the next check watches it again.
            self.watched = None;
        }
        if let Some(pending) = self.debounce.take() {
            ctx.cancel_future(pending);
        }
        let now = Instant::now();
        let first = *self.first_event.get_or_insert(now);
        self.debounce = Some(ctx.run_later(debounce_wait(first, now), |act, ctx| {
            act.debounce = None;
            act.first_event = None;
            let Some(path) = act.path.as_deref() else {
                return;
            };
            let bytes = file_hash(path);
            if bytes.is_none() || bytes == act.last_bytes {
                // Gone for a moment (mid-rename) or not changed: a later
                // event, or nothing, follows.
                return;
            }
            ctx.notify(Reload {
                trigger: ReloadTrigger::File,
            });
        }));
    }
}

impl Handler<Reload> for ConfigWatcher {
    type Result = AtomicResponse<Self, Result<ReloadSummary, ReloadError>>;

    fn handle(&mut self, msg: Reload, _ctx: &mut Self::Context) -> Self::Result {
        let trigger = msg.trigger;
        // Remembered whatever the outcome: the same bytes are not retried
        // on the next unrelated file event.
        let bytes = self.path.as_deref().and_then(file_hash);
        let prepared = self.prepare();
        let supervisor = self.supervisor.clone();
        // Atomic: one reload at a time, each applied against the config the
        // previous one left (the apply is one supervisor round trip).
        AtomicResponse::new(Box::pin(
            async move {
                let config = prepared?;
                let applied = supervisor
                    .send(ApplyConfig(config.clone()))
                    .await
                    .map_err(|e| ReloadError::Engine(e.to_string()))?;
                let diff = applied.map_err(|e| match e {
                    ApplyError::NameTaken(names) => ReloadError::Rejected(ConfigErrors(
                        names
                            .iter()
                            .map(|name| {
                                discovery_config::ConfigError::new(
                                    config.source.as_deref(),
                                    format!("servers.{name}"),
                                    format!(
                                        "the name {name:?} is already registered over the API. \
                                         Hint: DELETE /v1/servers/{name} first, or pick another name"
                                    ),
                                )
                            })
                            .collect(),
                    )),
                    ApplyError::ShuttingDown => ReloadError::Engine(e.to_string()),
                })?;
                Ok((config, diff))
            }
            .into_actor(self)
            .map(move |result, act, _ctx| {
                act.last_bytes = bytes;
                act.finish(trigger, result)
            }),
        ))
    }
}

impl ConfigWatcher {
    /// Watches the directory again when it was replaced (another identity)
    /// or lost; then looks at the file, which may have changed meanwhile.
    fn check_directory(&mut self, ctx: &mut Context<Self>) {
        let Some(dir) = self.directory() else {
            return;
        };
        let now = dir_identity(&dir);
        if now.is_none() {
            // Gone for now: watch whatever comes back in its place.
            self.watched = None;
            return;
        }
        if now == self.watched {
            return;
        }
        tracing::info!(dir = %dir.display(), "The configuration directory was replaced; watching it again.");
        self.watch_directory(ctx);
        ctx.notify(FileEvent { directory: false });
    }

    fn finish(
        &mut self,
        trigger: ReloadTrigger,
        result: Result<(Arc<Config>, discovery_config::ConfigDiff), ReloadError>,
    ) -> Result<ReloadSummary, ReloadError> {
        match result {
            Ok((config, diff)) => {
                self.current.send_replace(config);
                self.metrics.config_reloaded(ReloadOutcome::Applied);
                let names = |v: &[discovery_config::ServerName]| {
                    v.iter().map(|n| n.to_string()).collect::<Vec<_>>()
                };
                let summary = ReloadSummary {
                    applied: true,
                    added: names(&diff.added),
                    removed: names(&diff.removed),
                    changed: names(&diff.changed),
                    unchanged: diff.unchanged.len(),
                };
                tracing::info!(
                    trigger = trigger.as_str(),
                    added = ?summary.added,
                    removed = ?summary.removed,
                    changed = ?summary.changed,
                    unchanged = summary.unchanged,
                    "Reloaded the configuration."
                );
                Ok(summary)
            }
            Err(error) => {
                self.rejected(trigger, &error);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_file_the_configmap_link_and_the_directory_concern_us() {
        let dir = Path::new("/etc/mcp");
        let file = Some(OsStr::new("config.yaml"));
        assert!(concerns(Path::new("/etc/mcp/config.yaml"), dir, file));
        assert!(concerns(Path::new("/etc/mcp/..data"), dir, file));
        assert!(concerns(Path::new("/etc/mcp"), dir, file));
        assert!(!concerns(Path::new("/etc/mcp/other.log"), dir, file));
        assert!(!concerns(Path::new("/etc/mcp/.config.yaml.swp"), dir, file));
        assert!(!concerns(Path::new("/etc/mcp/..2024_01_01"), dir, file));
    }

    #[test]
    fn the_debounce_never_waits_past_the_maximum() {
        let first = Instant::now();
        assert_eq!(debounce_wait(first, first), DEBOUNCE);
        let late = first + MAX_DEBOUNCE - Duration::from_millis(300);
        assert_eq!(debounce_wait(first, late), Duration::from_millis(300));
        assert_eq!(
            debounce_wait(first, first + MAX_DEBOUNCE * 2),
            Duration::ZERO
        );
    }
}
