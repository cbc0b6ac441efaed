//! stdio transport: a child process speaking newline-delimited JSON-RPC on
//! stdin/stdout; stderr is its log.
//!
//! Three tasks on the current arbiter: the stdout reader (routes responses
//! by id, answers `ping`, forwards `list_changed`), the stderr logger, and
//! the waiter, which owns the `Child`, reaps it, and fails every pending
//! request with the exit status. Lines are read with a bound: an overlong
//! line fails what is pending and is skipped, never buffered whole.

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::process::Stdio as Pipe;
use std::rc::Rc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinHandle;

use super::jsonrpc::{
    self, encode_notification, encode_request, Closed, Failure, IdGen, Incoming, Pending,
};
use super::legacy_sse::forward_notification;
use super::session::{initialize_params, parse_initialize};
use super::{ClientOptions, McpError, Notification, ServerInfo};

const TRANSPORT: &str = "stdio";
/// A stderr line longer than this is logged truncated.
const MAX_STDERR_LINE: usize = 16 * 1024;
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

/// One line from a bounded reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    Text(&'a [u8]),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// Reads `\n`-terminated lines holding at most `max` bytes of one line in
/// memory. The rest of an overlong line is skipped.
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// The next line without its terminator; `None` at EOF.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buf.clear();
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                self.skipping = false;
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

pub(crate) struct Stdio {
    label: String,
    opts: ClientOptions,
    ids: IdGen,
    stdin: SharedStdin,
    pending: Rc<Pending>,
    kill_tx: RefCell<Option<oneshot::Sender<()>>>,
    exit_rx: watch::Receiver<Option<String>>,
    tasks: RefCell<Vec<JoinHandle<()>>>,
    info: RefCell<Option<ServerInfo>>,
    notifications: RefCell<Option<UnboundedReceiver<Notification>>>,
}

fn missing_pipe(label: &str, which: &str) -> McpError {
    McpError::Spawn {
        command: label.to_owned(),
        source: std::io::Error::other(format!("no {which} pipe")),
    }
}

impl Stdio {
    pub(crate) async fn connect(
        command: &str,
        args: &[String],
        env: &IndexMap<String, String>,
        cwd: Option<&Path>,
        opts: &ClientOptions,
    ) -> Result<Self, McpError> {
        // Only the program: arguments may carry secrets.
        let label = command.to_owned();
        let mut cmd = Command::new(command);
        cmd.args(args)
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

        let reader = actix_rt::spawn(read_stdout(
            LineReader::new(
                BufReader::with_capacity(64 * 1024, stdout),
                opts.max_response_bytes,
            ),
            Rc::clone(&pending),
            Rc::clone(&stdin),
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
            tasks: RefCell::new(vec![reader, logger]),
            info: RefCell::new(None),
            notifications: RefCell::new(Some(notif_rx)),
        };
        // On failure `this` drops: the waiter kills the child.
        let raw = this
            .request("initialize", Some(initialize_params()))
            .await?;
        let info = parse_initialize(&raw, TRANSPORT, &this.label)?;
        *this.info.borrow_mut() = Some(info);
        this.notify("notifications/initialized", None).await?;
        Ok(this)
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn info(&self) -> ServerInfo {
        self.info
            .borrow()
            .clone()
            .unwrap_or_else(|| ServerInfo::unknown(TRANSPORT))
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
        params: Option<Value>,
    ) -> Result<Box<RawValue>, McpError> {
        let id = self.ids.next_id();
        let mut waiter = self
            .pending
            .register(id)
            .map_err(|c| self.closed_error(c))?;
        let line = encode_request(id, method, params.as_ref())?;
        self.timed(method, async {
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

    pub(crate) async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        if let Some(c) = self.pending.closed() {
            return Err(self.closed_error(c));
        }
        let line = encode_notification(method, params.as_ref())?;
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

async fn read_stdout<R: AsyncBufRead + Unpin>(
    mut lines: LineReader<R>,
    pending: Rc<Pending>,
    stdin: SharedStdin,
    notifications: UnboundedSender<Notification>,
    server: String,
    limit: usize,
    done: oneshot::Sender<()>,
) {
    loop {
        match lines.next_line().await {
            Ok(Some(Line::Text(bytes))) => {
                on_line(bytes, &pending, &stdin, &notifications, &server);
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
    let _ = done.send(());
}

fn on_line(
    bytes: &[u8],
    pending: &Pending,
    stdin: &SharedStdin,
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
        match msg {
            Incoming::Response { id, reply } => {
                if !pending.deliver(&id, reply) {
                    tracing::debug!(server = %server, id = %id, "Response nobody waits for (late?)");
                }
            }
            Incoming::Request { id, method, .. } => {
                let stdin = Rc::clone(stdin);
                let server = server.to_owned();
                actix_rt::spawn(async move {
                    let res = match jsonrpc::answer_server_request(&id, &method) {
                        Ok(mut line) => {
                            line.push(b'\n');
                            write_line(&stdin, &line).await.map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = res {
                        tracing::warn!(server = %server, method = %method, error = %e, "Could not answer a server request");
                    }
                });
            }
            Incoming::Notification { method, params } => {
                forward_notification(notifications, server, method, params)
            }
        }
    }
}

/// Logs each stderr line with the server's name. Lines that look like
/// errors are warnings; the rest is info (servers log banners there).
async fn log_stderr<R: AsyncRead + Unpin>(stderr: R, server: String) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    loop {
        match lines.next_line().await {
            Ok(Some(Line::Text(bytes))) => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim_end();
                if text.is_empty() {
                    continue;
                }
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
            Ok(Some(Line::TooLong)) => {
                tracing::info!(server = %server, limit = MAX_STDERR_LINE, "Stdio server wrote an overlong stderr line; skipped");
            }
            Ok(None) | Err(_) => break,
        }
    }
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
        let t = Stdio::connect(
            "python3",
            &["-u".into(), "-c".into(), SCRIPT.into()],
            &IndexMap::new(),
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
        let t = Stdio::connect(
            "sh",
            &[
                "-c".into(),
                r#"sleep 300 & echo $! > "$PIDFILE"; python3 -u -c "$SCRIPT""#.into(),
            ],
            &env,
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
        let t = Stdio::connect(
            "python3",
            &["-u".into(), "-c".into(), SCRIPT.into()],
            &IndexMap::new(),
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
            cwd: Some(dir.clone()),
        };
        let s = connect(&t, opts()).await.unwrap();
        let info = s.info();
        assert_eq!(info.server_info["name"], "v42");
        let cwd = std::path::PathBuf::from(info.server_info["version"].as_str().unwrap());
        assert_eq!(cwd.canonicalize().unwrap(), dir.canonicalize().unwrap());
        s.close().await;
    }
}
