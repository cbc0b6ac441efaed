//! systemd's readiness protocol, as `Type=notify` (deploy/systemd) uses it:
//! the real binary, started with `NOTIFY_SOCKET` naming a unix datagram
//! socket of the test's own, sends `READY=1` once its first discovery round
//! is done (the moment `/readyz` turns ready) and `STOPPING=1` on SIGTERM.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::process::{find, EngineProcess};
use crate::support::upstream::{hanging_server, TestUpstream};

/// The next datagram, waiting at most until `deadline`.
fn next_message(socket: &UnixDatagram, deadline: Instant) -> String {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "no notification before the deadline");
    socket.set_read_timeout(Some(left)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("no notification before the deadline");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

fn lines(message: &str) -> Vec<&str> {
    message.lines().collect()
}

#[actix_web::test]
async fn ready_once_the_first_round_is_done_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();

    let up = TestUpstream::builder().tools(2).start().unwrap();
    // Never answers: its first attempt ends only with the request timeout,
    // so READY=1 must wait for it.
    let hung = hanging_server().unwrap();
    let mut config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    write!(
        config,
        "discovery:\n  request_timeout: 1s\n  connect_timeout: 1s\n  startup_grace: 5m\n  backoff: {{ initial: 1m, max: 1m }}\n\
         servers:\n  up: {{ url: \"{}\" }}\n  hung: {{ url: \"{}\" }}\n",
        up.url(),
        hung.url()
    )
    .unwrap();
    let mut engine = EngineProcess::start_with_env(
        config.path(),
        None,
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = next_message(&socket, deadline);
    assert!(lines(&ready).contains(&"READY=1"), "{ready:?}");
    // Sent only once readiness was reached, which then stays: /readyz
    // answers ready, and the hung server's first attempt is over.
    let readyz = engine.get_text("/readyz").await;
    assert!(readyz.contains(r#""status":"ready""#), "{readyz}");
    assert!(readyz.contains(r#""reason":"all_attempted""#), "{readyz}");
    let servers = engine.servers().await.unwrap();
    assert_eq!(find(&servers, "up")["state"], "healthy", "{servers:#?}");
    assert!(
        find(&servers, "hung")["consecutive_failures"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{servers:#?}"
    );

    let exit = engine.terminate().await;
    assert!(exit.success(), "{exit:?}");
    let stopping = next_message(&socket, Instant::now() + Duration::from_secs(10));
    assert!(lines(&stopping).contains(&"STOPPING=1"), "{stopping:?}");
    // Nothing else was sent: one READY, one STOPPING.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "a third notification");
}

#[actix_web::test]
async fn an_abstract_socket_name_works_too() {
    let name = format!(
        "mcp-discovery-test-{}-{}",
        std::process::id(),
        rand_suffix()
    );
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "servers: {}\n").unwrap();
    let mut engine =
        EngineProcess::start_with_env(&config, None, &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    let ready = next_message(&socket, Instant::now() + Duration::from_secs(30));
    assert!(lines(&ready).contains(&"READY=1"), "{ready:?}");
    engine.terminate().await;
}

fn rand_suffix() -> u64 {
    rand::random()
}
