//! Two tiny HTTP servers on 127.0.0.1 for the outbound-request tests
//! (issue 9, ADR 0011):
//!
//! - a [`Recorder`] records every request it receives (method, path, headers,
//!   body) and answers `200 {}`: the "other host" a redirect points to, so a
//!   test can prove nothing ever reached it;
//! - a [`Redirector`] answers every request with a redirect (307 by
//!   default) to the same path on another base URL, with a secret-looking
//!   query added to the `Location` (`?api_key=redirect-secret`), so a test
//!   can also check that the error shows the `Location` redacted.
//!
//! Each runs on its own thread with its own actix `System`, like the test
//! upstream.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// The query every [`Redirector`] adds to its `Location`.
pub const REDIRECT_QUERY: &str = "api_key=redirect-secret";

/// One request as the recorder saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Records every request; see the module docs.
pub struct Recorder {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    _server: ServerThread,
}

impl Recorder {
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&log);
        let server = ServerThread::start(listener, move || {
            let shared = Arc::clone(&shared);
            web::to(move |req: HttpRequest, body: web::Bytes| {
                let shared = Arc::clone(&shared);
                async move {
                    shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Recorded {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            headers: req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.as_str().to_owned(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("{}")
                }
            })
        })?;
        Ok(Self {
            addr,
            log,
            _server: server,
        })
    }

    /// `http://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Redirects every request; see the module docs.
pub struct Redirector {
    addr: SocketAddr,
    _server: ServerThread,
}

impl Redirector {
    /// 307 to `target` (a base URL such as a [`Recorder::url`]).
    pub fn to(target: &str) -> io::Result<Self> {
        Self::with_status(target, 307)
    }

    pub fn with_status(target: &str, status: u16) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let target = target.trim_end_matches('/').to_owned();
        let server = ServerThread::start(listener, move || {
            let target = target.clone();
            web::to(move |req: HttpRequest| {
                let location = format!("{target}{}?{REDIRECT_QUERY}", req.path());
                async move {
                    HttpResponse::build(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT),
                    )
                    .insert_header((header::LOCATION, location))
                    .finish()
                }
            })
        })?;
        Ok(Self {
            addr,
            _server: server,
        })
    }

    /// `http://127.0.0.1:P`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct ServerThread {
    handle: Option<ServerHandle>,
    _thread: JoinHandle<()>,
}

impl ServerThread {
    fn start<F>(listener: TcpListener, route: F) -> io::Result<Self>
    where
        F: Fn() -> actix_web::Route + Send + Clone + 'static,
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<ServerHandle>>();
        let thread = std::thread::Builder::new()
            .name("test-recorder".to_owned())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                system.block_on(async move {
                    let server = HttpServer::new(move || App::new().default_service(route()))
                        .workers(1)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .listen(listener);
                    let server = match server {
                        Ok(s) => s.run(),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(server.handle()));
                    let _ = server.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| io::Error::other("recorder thread exited before serving"))??;
        Ok(Self {
            handle: Some(handle),
            _thread: thread,
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(false));
        }
    }
}
