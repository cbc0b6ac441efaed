//! [`Application`]: the engine plus the HTTP server, built on a listener of
//! its own (port 0 in tests) and shut down in order: the HTTP server drains,
//! then the supervisor stops every upstream within a deadline.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, HttpServer};
use anyhow::Context as _;
use discovery_actors::supervisor::{Shutdown, StoredEntry, SyncApiServers};
use discovery_actors::{start_engine, DiscoveryEvents, Engine};
use discovery_config::Config;

use crate::api::{self, ApiState, Readiness};
use crate::metrics::Metrics;
use crate::reload::{ConfigWatcher, Reload, ReloadTrigger};
use crate::store::{Snapshot, Store, StoreOptions};

/// Knobs that are not part of the configuration file.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Overrides `config.listen` (`--listen`; tests use `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// HTTP worker threads; None: one per CPU core (actix-web's default).
    pub workers: Option<usize>,
    /// How long in-flight HTTP requests may take to finish at shutdown.
    pub http_shutdown_timeout: Duration,
    /// How long upstreams get to close their sessions at shutdown.
    pub engine_shutdown_deadline: Duration,
    /// Stop gracefully on SIGTERM / SIGINT (a second signal exits at once).
    pub handle_signals: bool,
    /// Tell systemd (`Type=notify`) when the service is ready and when it
    /// stops, over the socket `NOTIFY_SOCKET` names; nothing when it is
    /// unset. See [`SystemdNotifier`].
    pub notify_systemd: bool,
    /// Overrides `store.url` (tests use `sqlite::memory:`).
    pub store_url: Option<String>,
    /// Where the default SQLite store lives (`--state-dir`,
    /// `MCP_DISCOVERY_STATE_DIR`); None: the working directory.
    pub state_dir: Option<PathBuf>,
    /// Timeouts of the store's calls.
    pub store_options: StoreOptions,
    /// Test fault injection, never set from the configuration or the
    /// command line: a random pause in this range between a registration's
    /// store write and its engine update (POST, PUT and DELETE), so that
    /// the race tests hit the interleavings the name lock must prevent.
    #[doc(hidden)]
    pub registration_pause: Option<(Duration, Duration)>,
    /// Test fault injection: while this gate is closed, no body is
    /// compressed (a slow compressor), so tests can show that requests
    /// and catalog versions never wait for one.
    #[doc(hidden)]
    pub compression_gate: Option<Arc<crate::encoding::Gate>>,
}

impl AppOptions {
    pub const DEFAULT_HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_ENGINE_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

    /// For tests: port 0 on loopback, two workers, no signal handlers.
    pub fn for_tests() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            workers: Some(2),
            handle_signals: false,
            notify_systemd: false,
            store_url: Some("sqlite::memory:".into()),
            ..Self::default()
        }
    }
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            listen: None,
            workers: None,
            http_shutdown_timeout: Self::DEFAULT_HTTP_SHUTDOWN_TIMEOUT,
            engine_shutdown_deadline: Self::DEFAULT_ENGINE_SHUTDOWN_DEADLINE,
            handle_signals: true,
            notify_systemd: true,
            store_url: None,
            state_dir: None,
            store_options: StoreOptions::default(),
            registration_pause: None,
            compression_gate: None,
        }
    }
}

/// A built, not yet running, application.
pub struct Application {
    server: Server,
    handle: ServerHandle,
    local_addr: SocketAddr,
    engine: Engine,
    reloader: Addr<ConfigWatcher>,
    syncer: actix_rt::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    options: AppOptions,
}

/// Stops a running [`Application`] from elsewhere (tests, embedding code).
/// After `stop`, [`Application::run`] goes on to stop the engine and
/// returns.
#[derive(Clone, Debug)]
pub struct AppHandle {
    server: ServerHandle,
}

impl AppHandle {
    /// Stops the HTTP server; `graceful` lets in-flight requests finish.
    /// Resolves once the HTTP server has stopped (the engine stops after).
    pub async fn stop(&self, graceful: bool) {
        self.server.stop(graceful).await
    }
}

impl Application {
    /// Binds the listener, starts the engine on the current actix System and
    /// prepares the HTTP server (it serves once [`Application::run`] is
    /// polled; connections queue until then). Must be called inside a
    /// running System (`#[actix_web::test]`, `System::new().block_on`).
    pub async fn build(config: Arc<Config>, options: AppOptions) -> anyhow::Result<Application> {
        if actix_rt::System::try_current().is_none() {
            anyhow::bail!("Application::build must be called inside a running actix System");
        }
        let store = open_store(&config, &options).await?;
        log_access_mode(&config);
        crate::fdlimit::raise_and_check(&config);
        let metrics = Arc::new(Metrics::new().context("could not set up the metrics")?);

        let addr = options.listen.unwrap_or(config.listen);
        let listener = TcpListener::bind(addr).with_context(|| {
            format!(
                "could not listen on {addr}. Hint: another process may use this port; \
                 change `listen` in the configuration or pass --listen"
            )
        })?;
        let local_addr = listener
            .local_addr()
            .context("could not read the bound address")?;

        let readiness = Arc::new(Readiness::new(
            config.discovery.startup_grace,
            config.servers.keys().map(|n| n.as_str().to_owned()),
        ));
        let events: Arc<dyn DiscoveryEvents> = metrics.clone();
        let engine = start_engine(config.clone(), events);
        let (watcher, running_config) =
            ConfigWatcher::new(config.clone(), engine.supervisor.clone(), metrics.clone());
        let reloader = watcher.start();
        // Registered servers start with the file's (same path, same actor),
        // and follow the other replicas' writes.
        let mut changes = store
            .changes()
            .await
            .context("could not subscribe to the store's changes")?;
        let stored = store
            .snapshot()
            .await
            .context("could not read the stored servers")?;
        engine.supervisor.do_send(sync_message(stored, &metrics));
        let syncer = {
            let store = store.clone();
            let supervisor = engine.supervisor.clone();
            let metrics = metrics.clone();
            actix_rt::spawn(async move {
                while changes.recv().await.is_some() {
                    match store.snapshot().await {
                        Ok(stored) => supervisor.do_send(sync_message(stored, &metrics)),
                        Err(err) => {
                            tracing::warn!(error = %err, "Could not re-read the stored servers; retrying on the next change.")
                        }
                    }
                }
            })
        };

        let mut state = ApiState {
            registration_pause: options.registration_pause,
            ..ApiState::new(
                &engine,
                metrics.clone(),
                readiness.clone(),
                reloader.clone().recipient(),
                running_config,
                Some(Arc::new(store)),
            )
        };
        if let Some(gate) = &options.compression_gate {
            state.compressor = Arc::new(crate::encoding::Compressor::start(
                engine.catalog.clone(),
                Some(gate.clone()),
            ));
        }
        let state = web::Data::new(state);
        let mut http = HttpServer::new(move || api::app(state.clone()))
            // The address each client dialled, for the Host check.
            .on_connect(api::guard::remember_local_addr)
            .shutdown_timeout(options.http_shutdown_timeout.as_secs())
            // Our own handler stops the HTTP server *without* stopping the
            // System, so the engine can still shut down after it (actix's
            // own handler stops the System right away).
            .disable_signals()
            // The catalog goes out in several writes: without this, Nagle
            // holds the last one back until the client's delayed ACK
            // (about 40 ms on Linux) — measured by benches/list_changed.rs.
            .tcp_nodelay(true);
        if let Some(workers) = options.workers {
            http = http.workers(workers.max(1));
        }
        let server = match http.listen(listener) {
            Ok(http) => http.run(),
            Err(err) => {
                engine.supervisor.do_send(Shutdown {
                    deadline: options.engine_shutdown_deadline,
                });
                return Err(err).with_context(|| format!("could not serve on {local_addr}"));
            }
        };
        let handle = server.handle();
        if local_addr.ip().is_unspecified() {
            tracing::warn!(addr = %local_addr, allowed_hosts = config.http.allowed_hosts.len(), "Listening on every interface: requests are answered only for Host localhost, 127.0.0.1, [::1] and the listen address; list the DNS names clients use (a Service, an ingress, a reverse proxy) in http.allowed_hosts. The IP a client dialled is accepted too.");
        }
        tracing::info!(
            addr = %local_addr,
            servers = config.servers.len(),
            config = %config
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "embedded defaults".into()),
            "Listening"
        );
        Ok(Application {
            server,
            handle,
            local_addr,
            engine,
            reloader,
            syncer,
            metrics,
            readiness,
            options,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.handle.clone(),
        }
    }

    /// Serves until stopped (signal or [`AppHandle::stop`]), then shuts down
    /// in order: the HTTP server drains, then every upstream stops (DELETE
    /// sessions, kill stdio children) within the deadline. The caller owns
    /// the System and stops it afterwards.
    pub async fn run(self) -> anyhow::Result<()> {
        let Application {
            server,
            handle,
            engine,
            reloader,
            syncer,
            readiness,
            options,
            ..
        } = self;
        let notifier = if options.notify_systemd {
            SystemdNotifier::from_env().map(Arc::new)
        } else {
            None
        };
        let notify_ready = notifier.clone().map(|notifier| {
            actix_rt::spawn(notify_when_ready(
                readiness,
                engine.servers.clone(),
                notifier,
            ))
        });
        let signals = options.handle_signals.then(|| {
            (
                actix_rt::spawn(stop_on_signals(handle, notifier.clone())),
                actix_rt::spawn(reload_on_sighup(reloader.recipient())),
            )
        });

        let served = server.await;
        if let Some(notifier) = &notifier {
            notifier.stopping();
        }
        if let Some(task) = notify_ready {
            task.abort();
        }
        tracing::info!("HTTP server stopped; stopping the upstreams");

        let deadline = options.engine_shutdown_deadline;
        // A little longer than the deadline: the supervisor enforces it and
        // answers; this only guards against a supervisor that is gone.
        let wait = deadline + Duration::from_secs(1);
        match tokio::time::timeout(wait, engine.supervisor.send(Shutdown { deadline })).await {
            Ok(Ok(())) => tracing::info!("Upstreams stopped"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "The supervisor was already gone at shutdown")
            }
            Err(_) => tracing::warn!(
                deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                "Upstreams did not stop within the deadline; exiting anyway"
            ),
        }
        if let Some((stop, reload)) = signals {
            stop.abort();
            reload.abort();
        }
        syncer.abort();
        served.context("the HTTP server failed")
    }
}

/// Says at start-up who may write, and who may read (ADR 0009).
fn log_access_mode(config: &Config) {
    let admin = &config.admin;
    if !admin.api_keys.is_empty() {
        tracing::info!(
            write_keys = admin.api_keys.len(),
            read_keys = admin.read_keys.len(),
            protect_reads = admin.protect_reads,
            "Access mode: keys. Writes need a key of admin.api_keys."
        );
    } else if admin.allow_loopback_writes {
        tracing::warn!(
            protect_reads = admin.protect_reads,
            "Access mode: loopback-only writes. With no admin.api_keys, writes (register, refresh, reload) are accepted without a key from loopback clients only (admin.allow_loopback_writes)."
        );
    } else {
        tracing::info!(
            protect_reads = admin.protect_reads,
            "Access mode: writes refused. No admin.api_keys is set, so register, refresh and reload over the API are refused; set admin.api_keys (or admin.allow_loopback_writes for a local trial)."
        );
    }
}

/// The supervisor's view of a store snapshot; every row that could not be
/// decoded is logged by name and counted, and what runs under its name is
/// left alone (one bad row never stops the others, nor the service).
fn sync_message(snapshot: Snapshot, metrics: &Metrics) -> SyncApiServers {
    for skipped in &snapshot.skipped {
        tracing::error!(server = %skipped.name, revision = skipped.revision, error = %skipped.error, "Skipped a stored server that cannot be read. Hint: fix the key, or DELETE /v1/servers/NAME and register it again.");
        metrics.store_row_skipped();
    }
    SyncApiServers {
        undecodable: snapshot.skipped.into_iter().map(|s| s.name).collect(),
        entries: snapshot
            .servers
            .into_iter()
            .map(|s| StoredEntry {
                name: s.name,
                entry: s.entry,
                revision: s.revision,
            })
            .collect(),
        as_of: snapshot.revision,
    }
}

/// The default SQLite file: `mcp-discovery.db` in the state directory
/// (created, owner-only, if missing). An upgrade from a version that kept
/// it next to the configuration file goes on using that file, with a
/// warning to move it, rather than starting empty.
fn default_store_file(config: &Config, state_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = state_dir {
        if !dir.exists() {
            create_private_dir(dir).with_context(|| {
                format!(
                    "could not create the state directory {}. Hint: pass a writable \
                     --state-dir (or MCP_DISCOVERY_STATE_DIR)",
                    dir.display()
                )
            })?;
        }
    }
    let file = Store::default_file(state_dir);
    let legacy = config
        .source
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| Store::default_file(Some(dir)));
    if let Some(legacy) = legacy {
        let same = match (legacy.canonicalize(), file.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => legacy == file,
        };
        if !same && legacy.is_file() && !file.exists() {
            tracing::warn!(
                legacy = %legacy.display(),
                state_file = %file.display(),
                "Using the store found next to the configuration file; the default location is now the state directory. Hint: stop the service, move the file (with its -wal and -shm) there, or set store.url"
            );
            return Ok(legacy);
        }
    }
    Ok(file)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The store of runtime registrations: `store.url`, or the SQLite file in
/// the state directory.
async fn open_store(config: &Config, options: &AppOptions) -> anyhow::Result<Store> {
    let configured = options
        .store_url
        .clone()
        .or_else(|| config.store.url.as_ref().map(|u| u.expose().to_owned()));
    let url = match configured {
        Some(url) => url,
        None => Store::sqlite_url(&default_store_file(config, options.state_dir.as_deref())?),
    };
    let store = Store::connect_with(
        &url,
        config.store.encryption_key.as_ref(),
        options.store_options.clone(),
    )
    .await
    .context("could not open the store of runtime registrations (store.url)")?;
    tracing::info!(store = %store.location(), encrypted = store.is_encrypted(), "Opened the store of runtime registrations.");
    if !store.is_encrypted() {
        tracing::warn!("store.encryption_key is not set: secrets of servers registered over the API are stored unencrypted");
    }
    Ok(store)
}

/// SIGHUP: reload the configuration file (the outcome is logged by the
/// watcher; a rejected file leaves the running configuration as it is).
#[cfg(unix)]
async fn reload_on_sighup(reloader: actix::Recipient<Reload>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(err) => {
            tracing::warn!(error = %err, "Could not install the SIGHUP handler; reload with POST /v1/admin/reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP received; reloading the configuration");
        reloader.do_send(Reload {
            trigger: ReloadTrigger::Signal,
        });
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_reloader: actix::Recipient<Reload>) {}

/// First SIGTERM/SIGINT: graceful stop of the HTTP server (run() then stops
/// the engine). A second one: exit at once, for an operator who won't wait.
#[cfg(unix)]
async fn stop_on_signals(handle: ServerHandle, notifier: Option<Arc<SystemdNotifier>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(error = %err, "Could not install signal handlers; stop the process with SIGKILL");
            return;
        }
    };
    let first = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = first,
        "Shutting down gracefully (a second signal exits at once)"
    );
    if let Some(notifier) = &notifier {
        notifier.stopping();
    }
    // run() observes the completion; this task just waits for it.
    actix_rt::spawn(handle.stop(true));
    let second = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::warn!(
        signal = second,
        "Second signal received; exiting immediately"
    );
    std::process::exit(130);
}

#[cfg(not(unix))]
async fn stop_on_signals(handle: ServerHandle, _notifier: Option<Arc<SystemdNotifier>>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::info!("Shutting down gracefully (a second Ctrl-C exits at once)");
        actix_rt::spawn(handle.stop(true));
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    }
}

/// Sends `READY=1` once [`Readiness`] says so, the moment `/readyz` turns
/// ready: re-checked on every change of the server snapshot, and when the
/// start-up grace runs out.
async fn notify_when_ready(
    readiness: Arc<Readiness>,
    mut servers: tokio::sync::watch::Receiver<Arc<discovery_actors::ServersSnapshot>>,
    notifier: Arc<SystemdNotifier>,
) {
    loop {
        let snapshot = servers.borrow_and_update().clone();
        let status = readiness.check(&snapshot);
        if status.ready {
            notifier.ready();
            return;
        }
        let grace_left = Duration::from_millis(status.startup_grace_remaining_ms.unwrap_or(0));
        tokio::select! {
            changed = servers.changed() => if changed.is_err() {
                // The engine is gone: it will never be ready.
                return;
            },
            () = tokio::time::sleep(grace_left) => {}
        }
    }
}

/// systemd's notification protocol (sd_notify(3)) without libsystemd: one
/// datagram per message to the unix socket that `NOTIFY_SOCKET` names (a
/// path, or `@name` in Linux's abstract namespace). Failures are logged,
/// never fatal: the unit's start timeout is what catches a lost READY.
#[derive(Debug)]
pub struct SystemdNotifier {
    #[cfg(unix)]
    socket: std::os::unix::net::UnixDatagram,
    #[cfg(unix)]
    addr: std::os::unix::net::SocketAddr,
    stopping_sent: std::sync::atomic::AtomicBool,
}

impl SystemdNotifier {
    /// The notifier of `NOTIFY_SOCKET`, or None when it is unset (not
    /// started by systemd, or `Type=simple`) or unusable (logged).
    #[cfg(unix)]
    pub fn from_env() -> Option<Self> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::connect(&target) {
            Ok(notifier) => Some(notifier),
            Err(err) => {
                tracing::warn!(notify_socket = %target.to_string_lossy(), error = %err, "Cannot use NOTIFY_SOCKET; systemd will not hear that the service is ready");
                None
            }
        }
    }

    #[cfg(not(unix))]
    pub fn from_env() -> Option<Self> {
        None
    }

    #[cfg(unix)]
    fn connect(target: &std::ffi::OsStr) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = target.as_bytes();
        let addr = match bytes.split_first() {
            #[cfg(target_os = "linux")]
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            Some((b'/', _)) => SocketAddr::from_pathname(target)?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract socket name (@...)",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must not stall the runtime thread.
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            addr,
            stopping_sent: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// `READY=1`: the first discovery round is done (`/readyz` is ready).
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=Ready: first discovery round done");
    }

    /// `STOPPING=1`, once, when the shutdown begins.
    pub fn stopping(&self) {
        if !self
            .stopping_sent
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.send("STOPPING=1\nSTATUS=Shutting down");
        }
    }

    #[cfg(unix)]
    fn send(&self, message: &str) {
        match self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            Ok(_) => tracing::debug!(message, "Notified systemd"),
            Err(err) => {
                tracing::warn!(message, error = %err, "Could not notify systemd (NOTIFY_SOCKET)")
            }
        }
    }

    #[cfg(not(unix))]
    fn send(&self, _message: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_outside_a_system_is_an_error_not_a_panic() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = runtime
            .block_on(Application::build(
                Arc::new(Config::embedded_defaults()),
                AppOptions::for_tests(),
            ))
            .err()
            .unwrap();
        assert!(err.to_string().contains("actix System"), "{err}");
    }

    #[actix_web::test]
    async fn serves_on_port_zero_and_stops_in_order() {
        let app = Application::build(
            Arc::new(Config::embedded_defaults()),
            AppOptions::for_tests(),
        )
        .await
        .unwrap();
        assert_ne!(app.port(), 0);
        assert!(app.local_addr().ip().is_loopback());
        let handle = app.handle();
        let base = format!("http://{}", app.local_addr());
        let running = actix_rt::spawn(app.run());

        let client = awc::Client::default();
        let mut res = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.body().await.unwrap().as_ref(), br#"{"status":"ok"}"#);
        let res = client.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "no servers: ready at once");

        handle.stop(true).await;
        let finished = tokio::time::timeout(Duration::from_secs(10), running).await;
        assert!(matches!(finished, Ok(Ok(Ok(())))), "{finished:?}");
        assert!(
            client.get(format!("{base}/healthz")).send().await.is_err(),
            "the listener is closed"
        );
    }

    #[actix_web::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let options = AppOptions {
            listen: Some(taken.local_addr().unwrap()),
            ..AppOptions::for_tests()
        };
        let err = Application::build(Arc::new(Config::embedded_defaults()), options)
            .await
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("could not listen on"),
            "{err:#}"
        );
    }
}
