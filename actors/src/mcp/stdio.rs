//! stdio transport: a child process speaking newline-delimited JSON-RPC on
//! stdin/stdout; stderr is its log.
//!
//! Four tasks on the current arbiter: the stdout reader (routes responses
//! by id, queues answers to server requests, forwards `list_changed`), the
//! answerer (writes those answers from a bounded queue), the stderr logger
//! (rate-limited per server), and the waiter, which owns the `Child`, reaps
//! it, and fails every pending request with the exit status. Lines are read
//! with a bound: an overlong line fails what is pending and is skipped,
//! never buffered whole. Nothing the child writes can make the engine hold
//! unbounded memory or stop reading stdout.
//!
//! The child starts from a cleared environment plus [`ENV_ALLOWLIST`]
//! (docs/adr/0010-stdio-environment.md), then the server's own `env`.

use std::cell::RefCell;
use std::ffi::OsString;
use std::future::Future;
use std::path::Path;
use std::process::Stdio as Pipe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{self, unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinHandle;

use super::call::{ProgressRoutes, Sinks};
use super::jsonrpc::{
    self, encode_notification, encode_request, encode_request_raw, Closed, Failure, IdGen,
    Incoming, Pending,
};
use super::legacy_sse::forward_notification;
use super::relay::{CallsInFlight, Handled};
use super::{ClientOptions, McpError, Notification};

/// A stderr line longer than this is skipped (noted, not buffered).
const MAX_STDERR_LINE: usize = 16 * 1024;
/// A stderr line is logged clipped to this many characters.
const STDERR_SHOWN: usize = 2000;
/// Stderr lines logged per server: a burst of this many ...
const STDERR_BURST: u32 = 100;
/// ... then this many per second; the rest is counted, not logged.
const STDERR_PER_SECOND: u32 = 20;
/// How often the count of suppressed stderr lines is logged (at most).
const STDERR_SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// The stderr reader yields to the arbiter after this many lines in a row,
/// so a child writing megabytes cannot starve the other tasks there.
const STDERR_YIELD_EVERY: u32 = 64;
/// Answers to server-to-client requests waiting for stdin; when full (the
/// child floods requests and does not read its stdin), more are dropped
/// and counted.
const SERVER_REQUEST_QUEUE: usize = 32;
/// An answer larger than this (a huge request id) is not sent.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// After the child exits, how long the stdout reader may take to hand
/// over what the child wrote just before (a grandchild holding the pipe
/// open must not stall the exit report).
const STDOUT_DRAIN: Duration = Duration::from_secs(1);
/// On close: time to exit on its own after stdin is closed, then killed.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After a failed write, how long to wait for the exit status (a broken
/// pipe usually means the child just died).
const EXIT_AFTER_WRITE_ERROR: Duration = Duration::from_millis(500);

/// Variables of this process a stdio child gets (unless `env_inherit`), and
/// why: `PATH` to find programs (`npx` is `#!/usr/bin/env node`), `HOME`
/// for npm's cache and `~/.npmrc` and Python's user site, `USER`, `LOGNAME`
/// and `SHELL` that tools read to know who runs them, `TERM`, `TZ`, `LANG`
/// and `LANGUAGE` (with `LC_*`) for the locale Python and Node decode text
/// with, `TMPDIR`, `XDG_*` (caches and config dirs of uv, pip and others),
/// and the CA bundle paths `SSL_CERT_FILE`, `SSL_CERT_DIR` and
/// `NODE_EXTRA_CA_CERTS` (paths, not secrets) for TLS behind a corporate CA.
/// Deliberately not: proxy variables and `npm_config_*` (they may carry
/// credentials), `LD_*` and `NODE_OPTIONS`/`PYTHON*` (they change what code
/// runs). A server that needs them gets them through its `env`.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "TZ",
    "LANG",
    "LANGUAGE",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];
/// Prefixes of allowlisted variables (see [`ENV_ALLOWLIST`]).
pub const ENV_ALLOWLIST_PREFIXES: &[&str] = &["LC_", "XDG_"];
/// Variables of this process whose name starts with this (any case) are
/// never passed on, even with `env_inherit`: they configure this service
/// and may hold its admin keys or probe tokens.
pub const ENV_NEVER_PREFIX: &str = "MCP_DISCOVERY";

/// What a child inherits of `parent` (this process's environment): the
/// allowlist, or everything with `inherit`; never `MCP_DISCOVERY*`. The
/// server's own `env` is applied on top by the caller (an operator's
/// explicit choice, so it may even set an `MCP_DISCOVERY*` variable).
pub fn inherited_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    inherit: bool,
) -> Vec<(OsString, OsString)> {
    parent
        .into_iter()
        .filter(|(name, _)| {
            let Some(name) = name.to_str() else {
                // Not UTF-8: nothing on the allowlist, so only `inherit`.
                return inherit;
            };
            let upper = name.to_ascii_uppercase();
            if upper.starts_with(ENV_NEVER_PREFIX) {
                return false;
            }
            inherit
                || ENV_ALLOWLIST.contains(&name)
                || ENV_ALLOWLIST_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

/// One line from a bounded reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    Text(&'a [u8]),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// Reads `\n`-terminated lines holding at most `max` bytes of one line in
/// memory. The rest of an overlong line is skipped. Cancel-safe: a partial
/// line is kept until the next call (the stderr logger races it against a
/// timer).
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
    /// `buf` holds a line already returned (cleared on the next call).
    returned: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max,
            skipping: false,
            returned: false,
        }
    }

    /// The next line without its terminator; `None` at EOF.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        if self.returned {
            self.buf.clear();
            self.returned = false;
        }
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                self.skipping = false;
                self.returned = true;
                return Ok(if self.buf.is_empty() {
                    None
                } else {
                    Some(Line::Text(&self.buf))
                });
            }
            match avail.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    if self.skipping {
                        self.skipping = false;
                        self.inner.consume(pos + 1);
                        continue;
                    }
                    if self.buf.len() + pos > self.max {
                        self.inner.consume(pos + 1);
                        self.buf.clear();
                        return Ok(Some(Line::TooLong));
                    }
                    self.buf.extend_from_slice(&avail[..pos]);
                    self.inner.consume(pos + 1);
                    self.returned = true;
                    return Ok(Some(Line::Text(&self.buf)));
                }
                None => {
                    let n = avail.len();
                    if self.skipping {
                        self.inner.consume(n);
                        continue;
                    }
                    if self.buf.len() + n > self.max {
                        self.inner.consume(n);
                        self.buf.clear();
                        self.skipping = true;
                        return Ok(Some(Line::TooLong));
                    }
                    self.buf.extend_from_slice(avail);
                    self.inner.consume(n);
                }
            }
        }
    }
}

type SharedStdin = Rc<Mutex<Option<ChildStdin>>>;

async fn write_line(stdin: &SharedStdin, line: &[u8]) -> std::io::Result<()> {
    let mut guard = stdin.lock().await;
    let Some(w) = guard.as_mut() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stdin is closed",
        ));
    };
    w.write_all(line).await?;
    w.flush().await
}

/// The open `subscriptions/listen` requests on this channel, by JSON-RPC
/// id: the stdout reader hands each one the frames tagged with its id and
/// the response that ends it (the channel is shared; 2026-07-28 stdio
/// demultiplexes by subscription id).
type Listens = Rc<RefCell<std::collections::HashMap<u64, UnboundedSender<Incoming>>>>;

/// One open listen on a stdio channel: its frames, and on drop the end of
/// it (the route removed, `notifications/cancelled` queued to the child:
/// on stdio the client ends a subscription that way).
pub(crate) struct StdioListen {
    id: u64,
    rx: UnboundedReceiver<Incoming>,
    listens: Listens,
    cancel: Option<(mpsc::Sender<Vec<u8>>, Vec<u8>)>,
}

impl StdioListen {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The next frame; None once the server answered the listen or the
    /// channel closed.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }
}

impl Drop for StdioListen {
    fn drop(&mut self) {
        let open = self.listens.borrow_mut().remove(&self.id).is_some();
        if let (true, Some((tx, line))) = (open, self.cancel.take()) {
            // Best effort, never blocking: the answer queue's writer.
            let _ = tx.try_send(line);
        }
    }
}

pub(crate) struct Stdio {
    label: String,
    opts: ClientOptions,
    ids: IdGen,
    stdin: SharedStdin,
    pending: Rc<Pending>,
    kill_tx: RefCell<Option<oneshot::Sender<()>>>,
    exit_rx: watch::Receiver<Option<String>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    notifications: RefCell<Option<UnboundedReceiver<Notification>>>,
    listens: Listens,
    /// The answer queue's sender, for the cancellations of listens.
    answers: mpsc::Sender<Vec<u8>>,
    /// Calls in flight that asked for progress (the reader routes it).
    progress: ProgressRoutes,
    /// Every call in flight, with its relay.
    calls: CallsInFlight,
}

fn missing_pipe(label: &str, which: &str) -> McpError {
    McpError::Spawn {
        command: label.to_owned(),
        source: std::io::Error::other(format!("no {which} pipe")),
    }
}

impl Stdio {
    /// Spawns the child and starts its readers; the era layer does the
    /// handshake (or the probe).
    pub(crate) async fn spawn(
        command: &str,
        args: &[String],
        env: &IndexMap<String, String>,
        env_inherit: bool,
        cwd: Option<&Path>,
        opts: &ClientOptions,
    ) -> Result<Self, McpError> {
        // Only the program: arguments may carry secrets.
        let label = crate::status::program_label(command);
        let mut cmd = Command::new(command);
        cmd.args(args)
            .env_clear()
            .envs(inherited_env(std::env::vars_os(), env_inherit))
            .envs(env)
            .stdin(Pipe::piped())
            .stdout(Pipe::piped())
            .stderr(Pipe::piped())
            .kill_on_drop(true)
            // Its own process group, so that closing kills what it spawned
            // too: `npx` runs the server as a grandchild that would
            // otherwise outlive the kill.
            .process_group(0);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|source| McpError::Spawn {
            command: label.clone(),
            source,
        })?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| missing_pipe(&label, "stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| missing_pipe(&label, "stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| missing_pipe(&label, "stderr"))?;
        tracing::debug!(server = %opts.server_name, command = %label, pid = child.id().unwrap_or_default(), "Stdio server started");

        let stdin: SharedStdin = Rc::new(Mutex::new(Some(stdin)));
        let pending = Rc::new(Pending::default());
        let (notif_tx, notif_rx) = unbounded_channel();
        let (stdout_done_tx, stdout_done_rx) = oneshot::channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let (answers_tx, answers_rx) = mpsc::channel(SERVER_REQUEST_QUEUE);
        let listens = Listens::default();
        let progress = ProgressRoutes::default();
        let calls = CallsInFlight::default();

        let answerer = actix_rt::spawn(write_answers(
            answers_rx,
            Rc::clone(&stdin),
            opts.server_name.clone(),
        ));
        let reader = actix_rt::spawn(read_stdout(
            LineReader::new(
                BufReader::with_capacity(64 * 1024, stdout),
                opts.max_response_bytes,
            ),
            Rc::clone(&pending),
            ServerRequests {
                tx: answers_tx.clone(),
                dropped: 0,
                listens: Rc::clone(&listens),
                progress: progress.clone(),
                calls: calls.clone(),
            },
            notif_tx.clone(),
            opts.server_name.clone(),
            opts.max_response_bytes,
            stdout_done_tx,
        ));
        let logger = actix_rt::spawn(log_stderr(stderr, opts.server_name.clone()));
        actix_rt::spawn(wait_child(
            child,
            kill_rx,
            stdout_done_rx,
            Rc::clone(&pending),
            exit_tx,
            opts.server_name.clone(),
            // Held until the exit is recorded: the notification stream
            // ends only once `closed()` can say why.
            notif_tx,
        ));

        let this = Self {
            label,
            opts: opts.clone(),
            ids: IdGen::default(),
            stdin,
            pending,
            kill_tx: RefCell::new(Some(kill_tx)),
            exit_rx,
            tasks: RefCell::new(vec![reader, logger, answerer]),
            notifications: RefCell::new(Some(notif_rx)),
            listens,
            answers: answers_tx,
            progress,
            calls,
        };
        Ok(this)
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The next JSON-RPC id of this channel (a relayed call needs its id
    /// before it is sent, to cancel it).
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.next_id()
    }

    pub(crate) fn take_notifications(&self) -> Option<UnboundedReceiver<Notification>> {
        self.notifications.borrow_mut().take()
    }

    /// Why the transport closed, once it has (None while it is open).
    pub(crate) fn closed(&self) -> Option<McpError> {
        self.pending.closed().map(|c| self.closed_error(c))
    }

    fn closed_error(&self, c: Closed) -> McpError {
        match c {
            Closed::ChildExited(status) => McpError::ChildExited {
                command: self.label.clone(),
                status,
            },
            Closed::Ended(reason) => McpError::TransportClosed {
                target: self.label.clone(),
                reason,
            },
        }
    }

    async fn timed<T>(
        &self,
        method: &str,
        fut: impl Future<Output = Result<T, McpError>>,
    ) -> Result<T, McpError> {
        super::within(self.opts.request_timeout, method, &self.label, fut).await
    }

    /// Writes one message; a write error most likely means the child died,
    /// so its exit status is preferred when it comes quickly.
    async fn write(&self, mut line: Vec<u8>) -> Result<(), McpError> {
        line.push(b'\n');
        match write_line(&self.stdin, &line).await {
            Ok(()) => Ok(()),
            Err(source) => {
                if let Some(c) = self.pending.closed() {
                    return Err(self.closed_error(c));
                }
                let mut rx = self.exit_rx.clone();
                let status = match tokio::time::timeout(
                    EXIT_AFTER_WRITE_ERROR,
                    rx.wait_for(Option::is_some),
                )
                .await
                {
                    Ok(Ok(status)) => status.clone(),
                    _ => None,
                };
                match status {
                    Some(status) => Err(McpError::ChildExited {
                        command: self.label.clone(),
                        status,
                    }),
                    None => Err(McpError::Io {
                        target: self.label.clone(),
                        source,
                    }),
                }
            }
        }
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Box<RawValue>, McpError> {
        let id = self.ids.next_id();
        let line = encode_request(id, method, params)?;
        self.exchange(id, line, method, self.opts.request_timeout)
            .await
    }

    /// A relayed `tools/call` with id `id`, bounded by `after` (the call's
    /// own deadline) instead of `request_timeout`; its progress
    /// notifications go to `progress` while it is in flight.
    pub(crate) async fn call(
        &self,
        id: u64,
        params: &RawValue,
        after: Duration,
        sinks: Sinks<'_>,
    ) -> Result<Box<RawValue>, McpError> {
        let _route = sinks.progress.map(|sink| self.progress.register(sink));
        let _in_flight = self.calls.register(id, sinks.relay);
        let line = encode_request_raw(id, "tools/call", params)?;
        self.exchange(id, line, "tools/call", after).await
    }

    /// Writes request `line` (id `id`) and waits for its response, within
    /// `after`.
    async fn exchange(
        &self,
        id: u64,
        line: Vec<u8>,
        method: &str,
        after: Duration,
    ) -> Result<Box<RawValue>, McpError> {
        let mut waiter = self
            .pending
            .register(id)
            .map_err(|c| self.closed_error(c))?;
        super::within(after, method, &self.label, async {
            self.write(line).await?;
            match waiter.wait().await {
                Ok(Ok(reply)) => reply.map_err(|e| e.into_mcp(method)),
                Ok(Err(Failure::TooLarge { limit })) => Err(McpError::BodyTooLarge {
                    from: self.label.clone(),
                    limit,
                }),
                Ok(Err(Failure::Malformed(detail))) => Err(McpError::NotJsonRpc {
                    context: format!("the stdout of `{}`", self.label),
                    detail,
                }),
                Err(c) => Err(self.closed_error(c)),
            }
        })
        .await
    }

    /// Sends a `subscriptions/listen` request whose frames come back on
    /// the returned [`StdioListen`] (never on the notification channel).
    /// `cancel(id)` is the line that ends it, queued when it is dropped.
    pub(crate) async fn open_listen(
        &self,
        params: &Value,
        cancel: impl FnOnce(u64) -> Result<Vec<u8>, McpError>,
    ) -> Result<StdioListen, McpError> {
        const METHOD: &str = "subscriptions/listen";
        if let Some(c) = self.pending.closed() {
            return Err(self.closed_error(c));
        }
        let id = self.ids.next_id();
        let line = encode_request(id, METHOD, Some(params))?;
        let mut cancel = cancel(id)?;
        cancel.push(b'\n');
        let (tx, rx) = unbounded_channel();
        self.listens.borrow_mut().insert(id, tx);
        let listen = StdioListen {
            id,
            rx,
            listens: Rc::clone(&self.listens),
            cancel: Some((self.answers.clone(), cancel)),
        };
        self.timed(METHOD, self.write(line)).await?;
        Ok(listen)
    }

    pub(crate) async fn notify(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<(), McpError> {
        if let Some(c) = self.pending.closed() {
            return Err(self.closed_error(c));
        }
        let line = encode_notification(method, params)?;
        self.timed(method, self.write(line)).await
    }

    /// Closes stdin (a well-behaved server exits on EOF, and so does a
    /// grandchild such as the node process behind `npx`, which we could
    /// not kill directly), then kills the child if it lingers, and waits
    /// until it is reaped.
    pub(crate) async fn close(&self) {
        self.pending
            .close(Closed::Ended("the session was closed".into()));
        drop(self.stdin.lock().await.take());
        let mut rx = self.exit_rx.clone();
        let exited = tokio::time::timeout(CLOSE_GRACE, rx.wait_for(Option::is_some))
            .await
            .is_ok();
        if !exited {
            if let Some(tx) = self.kill_tx.borrow_mut().take() {
                let _ = tx.send(());
            }
            if tokio::time::timeout(KILL_WAIT, rx.wait_for(Option::is_some))
                .await
                .is_err()
            {
                tracing::warn!(server = %self.opts.server_name, command = %self.label, "Stdio server not reaped after kill");
            }
        }
        for t in self.tasks.borrow_mut().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Stdio {
    fn drop(&mut self) {
        // Dropping the kill sender tells the waiter to kill the child.
        self.kill_tx.get_mut().take();
        for t in self.tasks.get_mut().drain(..) {
            t.abort();
        }
    }
}

/// The stdout reader's side of the answer queue.
struct ServerRequests {
    tx: mpsc::Sender<Vec<u8>>,
    /// Requests not answered because the queue was full.
    dropped: u64,
    /// The open listens, which the reader hands their frames.
    listens: Listens,
    /// The calls awaiting progress, which the reader hands theirs.
    progress: ProgressRoutes,
    /// Every call in flight, with its relay: the server's requests go to
    /// the client of the only one (`super::relay`).
    calls: CallsInFlight,
}

impl ServerRequests {
    /// Queues the answer to one server-to-client request without waiting:
    /// the stdout reader must never block on the child's stdin. A request
    /// relayed to the client of the call in flight is answered by a task
    /// of its own once the client answered (or the call ended).
    fn answer(&mut self, id: &Value, method: &str, params: Option<Value>, server: &str) {
        let line = match self.calls.handle(id, method, params) {
            Some(Handled::Now(line)) => line,
            Some(Handled::Later(answer)) => {
                let tx = self.tx.clone();
                actix_rt::spawn(async move {
                    let mut line = answer.await;
                    line.push(b'\n');
                    // Closed: the transport is closing.
                    let _ = tx.send(line).await;
                });
                return;
            }
            None => {
                tracing::warn!(server = %server, "Could not answer a server request");
                return;
            }
        };
        let mut line = if line.len() <= MAX_ANSWER_BYTES {
            line
        } else {
            tracing::warn!(server = %server, method = %super::error::excerpt(method.as_bytes(), 100), bytes = line.len(), "Server request with an oversized id not answered");
            return;
        };
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped = self.dropped.saturating_add(1);
                // The first, then every 1000th: the flood must not move to our log.
                if self.dropped == 1 || self.dropped % 1000 == 0 {
                    tracing::warn!(server = %server, dropped = self.dropped, queue = SERVER_REQUEST_QUEUE, "Stdio server sends requests faster than it reads the answers; requests dropped");
                }
            }
            // The answerer is gone: the transport is closing.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Writes the queued answers to server requests, one at a time.
async fn write_answers(mut rx: mpsc::Receiver<Vec<u8>>, stdin: SharedStdin, server: String) {
    while let Some(line) = rx.recv().await {
        if let Err(e) = write_line(&stdin, &line).await {
            tracing::debug!(server = %server, error = %e, "Could not answer a server request");
        }
    }
}

async fn read_stdout<R: AsyncBufRead + Unpin>(
    mut lines: LineReader<R>,
    pending: Rc<Pending>,
    mut requests: ServerRequests,
    notifications: UnboundedSender<Notification>,
    server: String,
    limit: usize,
    done: oneshot::Sender<()>,
) {
    let listens = Rc::clone(&requests.listens);
    loop {
        match lines.next_line().await {
            Ok(Some(Line::Text(bytes))) => {
                on_line(
                    bytes,
                    &pending,
                    &mut requests,
                    &listens,
                    &notifications,
                    &server,
                );
            }
            Ok(Some(Line::TooLong)) => {
                tracing::warn!(server = %server, limit, "Stdio server wrote a line over the size limit; skipped");
                pending.fail_all(&Failure::TooLarge { limit });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "Reading the stdio server's stdout failed");
                break;
            }
        }
    }
    // The listens end with the channel.
    listens.borrow_mut().clear();
    let _ = done.send(());
}

fn on_line(
    bytes: &[u8],
    pending: &Pending,
    requests: &mut ServerRequests,
    listens: &Listens,
    notifications: &UnboundedSender<Notification>,
    server: &str,
) {
    let trimmed = bytes.trim_ascii();
    match trimmed.first() {
        None => return,
        Some(b'{' | b'[') => {}
        Some(_) => {
            // Servers that log to stdout by mistake: keep going.
            tracing::warn!(
                server = %server,
                line = %super::error::excerpt(trimmed, 200),
                "Stdio server wrote a non-JSON line to stdout; ignored"
            );
            return;
        }
    }
    let msgs = match jsonrpc::parse_messages(trimmed, "stdout") {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(server = %server, error = %e.chain(), "Unreadable message on stdout");
            pending.fail_all(&Failure::Malformed(e.chain()));
            return;
        }
    };
    for msg in msgs {
        let Some(msg) = route_listen(msg, listens) else {
            continue;
        };
        match msg {
            Incoming::Response { id, reply } => {
                if !pending.deliver(&id, reply) {
                    tracing::debug!(server = %server, id = %id, "Response nobody waits for (late?)");
                }
            }
            Incoming::Request { id, method, params } => {
                requests.answer(&id, &method, params, server)
            }
            Incoming::Notification { method, params } => {
                if !requests.progress.deliver(&method, params.as_ref()) {
                    forward_notification(notifications, server, method, params)
                }
            }
        }
    }
}

/// Hands a listen's frames (tagged with its id) and the response to it to
/// that listen; gives back every other message.
fn route_listen(msg: Incoming, listens: &Listens) -> Option<Incoming> {
    let target = match &msg {
        Incoming::Response { id, .. } => jsonrpc::numeric_id(id),
        Incoming::Notification { params, .. } => params
            .as_ref()
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(super::SUBSCRIPTION_ID))
            .and_then(jsonrpc::numeric_id),
        Incoming::Request { .. } => None,
    };
    let Some(target) = target else {
        return Some(msg);
    };
    let ends = matches!(msg, Incoming::Response { .. });
    let mut listens = listens.borrow_mut();
    let Some(tx) = listens.get(&target) else {
        return Some(msg);
    };
    let _ = tx.send(msg);
    if ends {
        listens.remove(&target);
    }
    None
}

/// A token bucket for one server's stderr lines: [`STDERR_BURST`] at once,
/// then [`STDERR_PER_SECOND`]; what it refuses is counted and reported at
/// most every [`STDERR_SUMMARY_EVERY`]. Pure (the caller passes the time),
/// so the arithmetic is unit-tested.
#[derive(Debug)]
pub(crate) struct LineBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
    suppressed: u64,
    /// When the first line of the current unreported count was refused.
    since: Option<Instant>,
}

impl LineBudget {
    pub(crate) fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            last: now,
            suppressed: 0,
            since: None,
        }
    }

    /// Whether one more line may be logged at `now`; if not, it is counted.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            self.since.get_or_insert(now);
            false
        }
    }

    /// When the count of suppressed lines is to be reported (None: nothing
    /// suppressed).
    pub(crate) fn report_at(&self) -> Option<Instant> {
        self.since.map(|t| t + STDERR_SUMMARY_EVERY)
    }

    /// The suppressed count once its report is due (or at once with
    /// `flush`), resetting it.
    pub(crate) fn take_report(&mut self, now: Instant, flush: bool) -> Option<u64> {
        let due = self.report_at().is_some_and(|at| flush || now >= at);
        if !due {
            return None;
        }
        self.since = None;
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn report_suppressed(server: &str, count: Option<u64>) {
    if let Some(n) = count.filter(|n| *n > 0) {
        tracing::warn!(server = %server, suppressed = n, per_second = STDERR_PER_SECOND, "Stdio server stderr lines suppressed (rate limit)");
    }
}

/// Logs each stderr line with the server's name, within the server's
/// [`LineBudget`], clipped to [`STDERR_SHOWN`] characters. Lines that look
/// like errors are warnings; the rest is info (servers log banners there).
/// Runs on its own task and yields regularly: a child flooding stderr
/// neither blocks its stdout nor the other upstreams on this arbiter.
async fn log_stderr<R: AsyncRead + Unpin>(stderr: R, server: String) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    let mut budget = LineBudget::new(STDERR_BURST, STDERR_PER_SECOND, Instant::now());
    let mut in_a_row = 0u32;
    loop {
        // The summary is due even if the child has gone quiet.
        let next = match budget.report_at() {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::time::timeout_at(at, lines.next_line()).await.ok()
            }
            None => Some(lines.next_line().await),
        };
        let now = Instant::now();
        report_suppressed(&server, budget.take_report(now, false));
        let Some(next) = next else { continue };
        match next {
            Ok(Some(Line::Text(bytes))) => {
                if bytes.trim_ascii().is_empty() || !budget.admit(now) {
                    // Counted (or blank): nothing to log.
                } else {
                    let text = super::error::excerpt(bytes, STDERR_SHOWN);
                    let lower = text.to_ascii_lowercase();
                    if ["error", "panic", "fatal", "traceback", "exception"]
                        .iter()
                        .any(|w| lower.contains(w))
                    {
                        tracing::warn!(server = %server, line = %text, "Stdio server stderr");
                    } else {
                        tracing::info!(server = %server, line = %text, "Stdio server stderr");
                    }
                }
            }
            Ok(Some(Line::TooLong)) => {
                if budget.admit(now) {
                    tracing::info!(server = %server, limit = MAX_STDERR_LINE, "Stdio server wrote an overlong stderr line; skipped");
                }
            }
            Ok(None) | Err(_) => break,
        }
        in_a_row += 1;
        if in_a_row >= STDERR_YIELD_EVERY {
            in_a_row = 0;
            tokio::task::yield_now().await;
        }
    }
    report_suppressed(&server, budget.take_report(Instant::now(), true));
}

/// Owns the child: reaps it when it exits or when told to kill it (the
/// kill sender sent or dropped), then fails every pending request with
/// the exit status.
async fn wait_child(
    mut child: Child,
    kill_rx: oneshot::Receiver<()>,
    stdout_done: oneshot::Receiver<()>,
    pending: Rc<Pending>,
    exit_tx: watch::Sender<Option<String>>,
    server: String,
    notifications: UnboundedSender<Notification>,
) {
    let mut killed = false;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = kill_rx => {
            killed = true;
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let text = match &status {
        Ok(s) => s.to_string(),
        Err(e) => format!("could not be waited for: {e}"),
    };
    // Responses written just before exiting are still in the pipe.
    let _ = tokio::time::timeout(STDOUT_DRAIN, stdout_done).await;
    pending.close(Closed::ChildExited(text.clone()));
    if killed
        || pending
            .closed()
            .is_some_and(|c| matches!(c, Closed::Ended(_)))
    {
        tracing::debug!(server = %server, status = %text, "Stdio server stopped");
    } else {
        tracing::warn!(server = %server, status = %text, "Stdio server exited");
    }
    let _ = exit_tx.send(Some(text));
    drop(notifications);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], max: usize, cap: usize) -> Vec<Result<String, ()>> {
        let mut r = LineReader::new(BufReader::with_capacity(cap, input), max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(match l {
                Line::Text(b) => Ok(String::from_utf8(b.to_vec()).unwrap()),
                Line::TooLong => Err(()),
            });
        }
        out
    }

    #[actix_web::test]
    async fn line_reader_bounds_lines() {
        for cap in [1, 2, 3, 7, 64] {
            let got = lines_of(b"ab\n0123456789\ncd\n\nxyz", 5, cap).await;
            assert_eq!(
                got,
                vec![
                    Ok("ab".into()),
                    Err(()),
                    Ok("cd".into()),
                    Ok(String::new()),
                    Ok("xyz".into())
                ],
                "buffer capacity {cap}"
            );
        }
        // Exactly at the limit is fine; an endless last line is one error.
        let got = lines_of(b"12345\n123456789012345", 5, 4).await;
        assert_eq!(got, vec![Ok("12345".into()), Err(())]);
    }

    use super::super::test_server::{opts, LogCapture};
    use super::super::{connect, ClientOptions, Target};

    /// A newline JSON-RPC server: pings us before answering tools/list
    /// (and checks our answer), paginates, logs to stderr, exits with 3 on
    /// `exit`, sends an overlong line on `big`, ignores stdin EOF on
    /// `stubborn`.
    const SCRIPT: &str = r#"
import json, sys, time
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
sys.stderr.write("hello from stderr\n"); sys.stderr.flush()
print("a stray log line on stdout", flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    m = json.loads(line)
    meth, i = m.get("method"), m.get("id")
    if meth == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": "2025-06-18",
              "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "0"}}})
    elif meth == "notifications/initialized":
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    elif meth == "tools/list":
        send({"jsonrpc": "2.0", "id": "srv-ping", "method": "ping"})
        pong = json.loads(sys.stdin.readline())
        if pong != {"jsonrpc": "2.0", "id": "srv-ping", "result": {}}:
            sys.exit(7)
        cursor = (m.get("params") or {}).get("cursor")
        if cursor is None:
            send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "a", "x": 1}], "nextCursor": "p2"}})
        else:
            send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "b"}]}})
    elif meth == "big":
        send({"jsonrpc": "2.0", "id": i, "result": {"pad": "x" * 100000}})
    elif meth == "exit":
        sys.stderr.write("exiting with 3\n"); sys.stderr.flush()
        sys.exit(3)
    elif meth == "stubborn":
        send({"jsonrpc": "2.0", "id": i, "result": {}})
        while True:
            time.sleep(1)
    elif i is not None:
        send({"jsonrpc": "2.0", "id": i, "error": {"code": -32601, "message": "Method not found"}})
"#;

    fn py() -> Target {
        Target::Stdio {
            command: "python3".into(),
            args: vec!["-u".into(), "-c".into(), SCRIPT.into()],
            env: IndexMap::new(),
            env_inherit: false,
            cwd: None,
        }
    }

    async fn until<F: Fn() -> bool>(what: &str, f: F) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::task::yield_now().await;
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[actix_web::test]
    async fn python_server_initialize_tools_stderr_and_exit() {
        let capture = LogCapture::default();
        // With a single registered dispatcher, tracing-core computes a
        // callsite's interest from the *current thread's* one only, so a
        // parallel test hitting the stderr callsite first would cache
        // "never" for everyone. A second live dispatcher makes it consult all.
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(capture.clone()));

        let s = connect(
            &py(),
            ClientOptions {
                server_name: "py-test".into(),
                ..opts()
            },
        )
        .await
        .unwrap();
        let info = s.info();
        assert_eq!(info.transport, "stdio");
        assert_eq!(info.protocol_version, "2025-06-18");
        let mut notes = s.take_notifications().unwrap();

        let tools = s.list_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // Verbatim, down to Python's spacing.
        assert_eq!(tools[0].raw.get(), r#"{"name": "a", "x": 1}"#);
        let n = notes.recv().await.unwrap();
        assert_eq!(n.method, "notifications/tools/list_changed");

        // The stderr line was logged with the server's name.
        until("the stderr line in the logs", || {
            capture.events().iter().any(|fields| {
                fields.contains(&("server".into(), "py-test".into()))
                    && fields.contains(&("line".into(), "hello from stderr".into()))
            })
        })
        .await;

        let e = s.request("exit", None).await.unwrap_err();
        assert!(
            matches!(e, McpError::ChildExited { ref status, .. } if status.contains("3")),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "Stdio server `python3` exited (exit status: 3)"
        );
        // Later requests fail fast with the same cause.
        let e = s.request("tools/list", None).await.unwrap_err();
        assert!(matches!(e, McpError::ChildExited { .. }), "{e:?}");
    }

    #[actix_web::test]
    async fn overlong_line_is_an_error_not_an_oom() {
        let s = connect(
            &py(),
            ClientOptions {
                max_response_bytes: 10_000,
                ..opts()
            },
        )
        .await
        .unwrap();
        let e = s.request("big", None).await.unwrap_err();
        assert!(
            matches!(e, McpError::BodyTooLarge { limit: 10_000, .. }),
            "{e:?}"
        );
        // The session goes on.
        let e = s.request("unknown/method", None).await.unwrap_err();
        assert!(matches!(e, McpError::JsonRpc { code: -32601, .. }), "{e:?}");
    }

    #[actix_web::test]
    async fn spawn_failure_names_the_command() {
        let t = Target::Stdio {
            command: "/nonexistent/mcp-server".into(),
            args: vec![],
            env: IndexMap::new(),
            env_inherit: false,
            cwd: None,
        };
        let e = connect(&t, opts()).await.err().unwrap();
        assert!(matches!(e, McpError::Spawn { .. }), "{e:?}");
        assert!(
            e.chain()
                .starts_with("Could not start stdio server `/nonexistent/mcp-server`: "),
            "{}",
            e.chain()
        );
    }

    #[actix_web::test]
    async fn close_kills_a_stubborn_child_and_reaps_it() {
        let t = Stdio::spawn(
            "python3",
            &["-u".into(), "-c".into(), SCRIPT.into()],
            &IndexMap::new(),
            false,
            None,
            &opts(),
        )
        .await
        .unwrap();
        t.request("stubborn", None).await.unwrap();
        t.close().await;
        let status = t.exit_rx.borrow().clone();
        assert!(
            status.is_some_and(|s| s.contains("signal")),
            "killed, not exited"
        );
        let e = t.request("ping", None).await.unwrap_err();
        assert!(matches!(e, McpError::TransportClosed { .. }), "{e:?}");
    }

    #[actix_web::test]
    async fn close_kills_the_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("mcpd-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let mut env = IndexMap::new();
        env.insert("PIDFILE".to_owned(), pidfile.display().to_string());
        env.insert("SCRIPT".to_owned(), SCRIPT.to_owned());
        // Like `npx`: a wrapper whose descendant outlives a plain kill.
        let t = Stdio::spawn(
            "sh",
            &[
                "-c".into(),
                r#"sleep 300 & echo $! > "$PIDFILE"; python3 -u -c "$SCRIPT""#.into(),
            ],
            &env,
            false,
            None,
            &opts(),
        )
        .await
        .unwrap();
        t.request("stubborn", None).await.unwrap();
        let grandchild = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        let proc_dir = std::path::PathBuf::from(format!("/proc/{grandchild}"));
        assert!(proc_dir.exists());
        t.close().await;
        let alive = || {
            std::fs::read_to_string(proc_dir.join("stat")).is_ok_and(|stat| !stat.contains(") Z "))
        };
        until("the grandchild to be killed", || !alive()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[actix_web::test]
    async fn close_lets_a_polite_child_exit_on_stdin_eof() {
        let t = Stdio::spawn(
            "python3",
            &["-u".into(), "-c".into(), SCRIPT.into()],
            &IndexMap::new(),
            false,
            None,
            &opts(),
        )
        .await
        .unwrap();
        t.close().await;
        let status = t.exit_rx.borrow().clone();
        assert_eq!(status.as_deref(), Some("exit status: 0"));
    }

    #[actix_web::test]
    async fn env_and_cwd_are_passed() {
        let dir = std::env::temp_dir();
        let mut env = IndexMap::new();
        env.insert("MCP_TEST_VAR".to_owned(), "v42".to_owned());
        let script = r#"
import json, os, sys
for line in iter(sys.stdin.readline, ""):
    m = json.loads(line)
    if m.get("method") == "initialize":
        info = {"name": os.environ.get("MCP_TEST_VAR"), "version": os.getcwd()}
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": "2024-11-05",
              "capabilities": {}, "serverInfo": info}}), flush=True)
"#;
        let t = Target::Stdio {
            command: "python3".into(),
            args: vec!["-c".into(), script.into()],
            env,
            env_inherit: false,
            cwd: Some(dir.clone()),
        };
        let s = connect(&t, opts()).await.unwrap();
        let info = s.info();
        assert_eq!(info.server_info["name"], "v42");
        let cwd = std::path::PathBuf::from(info.server_info["version"].as_str().unwrap());
        assert_eq!(cwd.canonicalize().unwrap(), dir.canonicalize().unwrap());
        s.close().await;
    }

    #[test]
    fn the_child_gets_the_allowlist_and_never_mcp_discovery() {
        let parent = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/op"),
            ("LC_ALL", "C.UTF-8"),
            ("XDG_CACHE_HOME", "/c"),
            ("SOME_SECRET_TOKEN", "s3cret"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("HTTPS_PROXY", "http://u:pw@proxy"),
            ("MCP_DISCOVERY_ADMIN_KEY", "admin"),
            ("mcp_discovery_probe_token", "tok"),
            ("Mcp_Discovery", "x"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let names = |inherit: bool| -> Vec<String> {
            inherited_env(parent.clone(), inherit)
                .into_iter()
                .map(|(k, _)| k.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            names(false),
            ["PATH", "HOME", "LC_ALL", "XDG_CACHE_HOME"],
            "the allowlist only"
        );
        assert_eq!(
            names(true),
            [
                "PATH",
                "HOME",
                "LC_ALL",
                "XDG_CACHE_HOME",
                "SOME_SECRET_TOKEN",
                "AWS_SECRET_ACCESS_KEY",
                "HTTPS_PROXY"
            ],
            "everything but MCP_DISCOVERY*, in any case"
        );
    }

    #[test]
    fn listen_frames_are_routed_by_subscription_id() {
        let listens = Listens::default();
        let (tx, mut rx) = unbounded_channel();
        listens.borrow_mut().insert(4, tx);
        let parse = |t: &str| {
            jsonrpc::parse_messages(t.as_bytes(), "test")
                .unwrap()
                .remove(0)
        };
        let tagged = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":4}}}"#,
        );
        assert!(route_listen(tagged, &listens).is_none(), "routed");
        let other = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":5}}}"#,
        );
        assert!(
            route_listen(other, &listens).is_some(),
            "not ours: the channel's"
        );
        let plain = parse(r#"{"jsonrpc":"2.0","method":"notifications/message"}"#);
        assert!(route_listen(plain, &listens).is_some());
        let reply = parse(r#"{"jsonrpc":"2.0","id":9,"result":{}}"#);
        assert!(route_listen(reply, &listens).is_some(), "another request's");
        let done = parse(r#"{"jsonrpc":"2.0","id":4,"result":{"resultType":"complete"}}"#);
        assert!(route_listen(done, &listens).is_none());
        assert!(listens.borrow().is_empty(), "the answer ends the listen");
        assert!(matches!(rx.try_recv(), Ok(Incoming::Notification { .. })));
        assert!(matches!(rx.try_recv(), Ok(Incoming::Response { .. })));
    }

    #[test]
    fn line_budget_allows_a_burst_then_a_rate_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut b = LineBudget::new(5, 2, t0);
        let admitted = (0..100).filter(|_| b.admit(t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert_eq!(b.report_at(), Some(t0 + STDERR_SUMMARY_EVERY));
        assert_eq!(b.take_report(t0, false), None, "not due yet");
        // One second later: two more lines (the rate), the rest counted.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (0..10).filter(|_| b.admit(t1)).count();
        assert_eq!(admitted, 2);
        let due = t0 + STDERR_SUMMARY_EVERY;
        assert_eq!(b.take_report(due, false), Some(95 + 8));
        assert_eq!(b.report_at(), None, "reset");
        // A long silence refills to the burst, not beyond.
        let t2 = due + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.admit(t2)).count(), 5);
        assert_eq!(b.take_report(t2, true), Some(95), "flush at the end");
        assert_eq!(b.take_report(t2, true), None);
        // Time going backwards (it does not, but) is not a panic.
        assert!(!b.admit(t0));
    }

    #[actix_web::test]
    async fn line_reader_keeps_a_partial_line_when_cancelled() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut lines = LineReader::new(BufReader::new(r), 100);
        w.write_all(b"ab").await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(50), lines.next_line()).await;
        assert!(cut.is_err(), "no full line yet");
        w.write_all(b"c\nd\n").await.unwrap();
        let got = match lines.next_line().await.unwrap() {
            Some(Line::Text(b)) => b.to_vec(),
            other => panic!("{other:?}"),
        };
        assert_eq!(got, b"abc");
        assert!(matches!(
            lines.next_line().await.unwrap(),
            Some(Line::Text(b"d"))
        ));
    }

    /// Writes `n` stderr lines from a thread while it serves stdin.
    const STDERR_FLOOD: &str = r#"
import json, sys, threading
def flood():
    for i in range(int(sys.argv[1])):
        sys.stderr.write("noise line %d\n" % i)
    sys.stderr.flush()
threading.Thread(target=flood, daemon=True).start()
for line in sys.stdin:
    m = json.loads(line)
    meth, i = m.get("method"), m.get("id")
    if meth == "initialize":
        r = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "f", "version": "0"}}
    elif meth == "tools/list":
        r = {"tools": [{"name": "t"}]}
    else:
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": i, "result": r}), flush=True)
"#;

    #[actix_web::test]
    async fn a_stderr_flood_is_rate_limited_and_stdout_goes_on() {
        let capture = LogCapture::default();
        let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(capture.clone()));
        let started = Instant::now();
        let t = Target::Stdio {
            command: "python3".into(),
            args: vec!["-c".into(), STDERR_FLOOD.into(), "200000".into()],
            env: IndexMap::new(),
            env_inherit: false,
            cwd: None,
        };
        let s = connect(
            &t,
            ClientOptions {
                server_name: "flood".into(),
                ..opts()
            },
        )
        .await
        .unwrap();
        for _ in 0..20 {
            let tools = s.list_tools().await.unwrap();
            assert_eq!(tools.len(), 1);
        }
        let stderr_events = || {
            capture
                .events()
                .iter()
                .filter(|f| f.contains(&("server".into(), "flood".into())))
                .filter(|f| f.iter().any(|(k, _)| k == "line"))
                .count()
        };
        // The flood is well on its way: the burst is used up.
        until("the first stderr lines", || {
            stderr_events() >= STDERR_BURST as usize
        })
        .await;
        s.close().await;
        let secs = started.elapsed().as_secs_f64();
        let bound = f64::from(STDERR_BURST) + f64::from(STDERR_PER_SECOND) * (secs + 1.0);
        let logged = stderr_events();
        assert!(
            (logged as f64) <= bound,
            "{logged} stderr lines logged in {secs:.1} s (bound {bound})"
        );
    }

    /// On `flood`: sends `n` pings without reading stdin, then answers; on
    /// `count`: how many answers to those pings it read before `count`.
    const REQUEST_FLOOD: &str = r#"
import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
n = int(sys.argv[1])
pongs = 0
for line in sys.stdin:
    m = json.loads(line)
    meth, i = m.get("method"), m.get("id")
    if meth is None:
        if str(m.get("id", "")).startswith("f") and "result" in m:
            pongs += 1
        continue
    if meth == "initialize":
        send({"jsonrpc": "2.0", "id": i, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "r", "version": "0"}}})
    elif meth == "flood":
        for k in range(n):
            send({"jsonrpc": "2.0", "id": "f%d" % k, "method": "ping"})
        send({"jsonrpc": "2.0", "id": i, "result": {}})
    elif meth == "count":
        send({"jsonrpc": "2.0", "id": i, "result": {"pongs": pongs}})
    elif meth == "tools/list":
        send({"jsonrpc": "2.0", "id": i, "result": {"tools": [{"name": "t"}]}})
    sys.stdout.flush()
"#;

    #[actix_web::test]
    async fn server_requests_wait_in_a_bounded_queue() {
        const FLOOD: u64 = 20_000;
        let t = Stdio::spawn(
            "python3",
            &["-c".into(), REQUEST_FLOOD.into(), FLOOD.to_string()],
            &IndexMap::new(),
            false,
            None,
            &opts(),
        )
        .await
        .unwrap();
        t.request("flood", None).await.unwrap();
        // Unbounded, every ping would be answered sooner or later: give
        // the answers time to arrive, then count.
        let count = || async {
            let raw = t.request("count", None).await.unwrap();
            serde_json::from_str::<Value>(raw.get()).unwrap()["pongs"]
                .as_u64()
                .unwrap()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut pongs = count().await;
        while pongs < FLOOD / 2 && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(50)).await;
            pongs = count().await;
        }
        // What fit in the pipe while the child did not read, plus the
        // queue; the rest was dropped, not held.
        assert!(pongs > 0, "pings are still answered");
        assert!(pongs < FLOOD / 2, "{pongs} of {FLOOD} answered: unbounded");
        // The session goes on.
        let raw = t.request("tools/list", None).await.unwrap();
        assert!(raw.get().contains("\"t\""));
        t.close().await;
    }
}
