//! The store of runtime registrations (src/store/): SQLite in a temporary
//! directory, and PostgreSQL — `MCP_DISCOVERY_TEST_POSTGRES_URL` when set,
//! otherwise a throwaway server from `scripts/postgres-test.sh`, started
//! once for all the PostgreSQL cases and stopped by PID at the end (also
//! when a case fails). `MCP_DISCOVERY_SKIP_POSTGRES=1` skips those cases.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use discovery_config::Secret;
use mcp_discovery::store::{
    ChangeOp, ResyncReason, Store, StoreChange, StoreChanges, StoreError, StoreKind, StoreOptions,
};
use serde_json::{json, Value};

const KEY: &str = "8f2a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809102";
const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SECRET: &str = "client-secret-5f1d0c7e-do-not-store-in-clear";

/// How long a notification may take to reach the other replica.
const NOTIFY_DEADLINE: Duration = Duration::from_secs(5);

fn entry(url: &str) -> Value {
    json!({
        "url": url,
        "transport": "streamable-http",
        "headers": {"X-Team": "infra"},
        "auth": {
            "type": "oauth2",
            "token_url": "http://127.0.0.1:1/token",
            "client_id": "abc",
            "client_secret": SECRET,
        },
        "tools": {"allow": ["*"], "deny": ["admin_*"]},
    })
}

fn key() -> Secret {
    Secret::new(KEY)
}

// ------------------------------------------------------------------ shared

/// Insert, list, get, replace, delete, and their errors, on any backend.
async fn crud(store: &Store) {
    assert!(store.list().await.unwrap().is_empty());

    let a = store.insert("alpha", &entry("http://a/mcp")).await.unwrap();
    assert_eq!(a.name, "alpha");
    assert!(a.revision >= 1);
    assert_eq!(a.created_at, a.updated_at);
    let b = store.insert("beta", &entry("http://b/mcp")).await.unwrap();

    // Read back exactly as registered, oldest first.
    let listed = store.list().await.unwrap();
    assert_eq!(listed, vec![a.clone(), b.clone()]);
    assert_eq!(store.get("beta").await.unwrap(), b);
    // Field order is kept too.
    let text = serde_json::to_string(&listed[0].entry).unwrap();
    assert_eq!(text, serde_json::to_string(&entry("http://a/mcp")).unwrap());

    let err = store
        .insert("alpha", &entry("http://other/mcp"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(n) if n == "alpha"),
        "{err}"
    );
    assert_eq!(
        store.get("alpha").await.unwrap(),
        a,
        "a conflict changes nothing"
    );

    let replaced = store
        .replace("alpha", &entry("http://a2/mcp"))
        .await
        .unwrap();
    assert!(replaced.revision > b.revision, "revisions grow store-wide");
    assert_eq!(replaced.created_at, a.created_at);
    assert!(replaced.updated_at >= a.updated_at);
    assert_eq!(store.get("alpha").await.unwrap(), replaced);

    for err in [
        store
            .replace("nope", &entry("http://n/mcp"))
            .await
            .unwrap_err(),
        store.delete("nope").await.unwrap_err(),
        store.get("nope").await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, StoreError::NotFound(n) if n == "nope"),
            "{err}"
        );
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    store.delete("alpha").await.unwrap();
    assert!(matches!(
        store.delete("alpha").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(store.list().await.unwrap(), vec![b]);
    // A name can be registered again after its deletion.
    let again = store
        .insert("alpha", &entry("http://a3/mcp"))
        .await
        .unwrap();
    assert!(
        again.revision > replaced.revision + 1,
        "a name registered again never reuses a revision (the delete took one too)"
    );
    store.delete("alpha").await.unwrap();
    store.delete("beta").await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
}

/// Ten concurrent inserts of one name: exactly one wins.
async fn concurrent_inserts(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        tasks.push(actix_web::rt::spawn(async move {
            store
                .insert("race", &entry(&format!("http://r{i}/mcp")))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    store.delete("race").await.unwrap();
}

// ------------------------------------------------------------------ SQLite

struct SqliteDir {
    dir: tempfile::TempDir,
}

impl SqliteDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        Store::default_url(Some(self.dir.path()))
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("mcp-discovery.db")
    }

    /// The database file and its WAL/SHM companions, concatenated.
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.db().into_os_string();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
        out
    }

    async fn open(&self, key: Option<&Secret>) -> Result<Store, StoreError> {
        Store::connect(&self.url(), key).await
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[actix_web::test]
async fn sqlite_crud_conflicts_and_not_found() {
    let dir = SqliteDir::new();
    assert!(!dir.db().exists());
    let store = dir.open(None).await.unwrap();
    assert!(dir.db().exists(), "the file is created on first use");
    assert_eq!(store.kind(), StoreKind::Sqlite);
    assert_eq!(Path::new(store.location()), dir.db());
    crud(&store).await;
    concurrent_inserts(&store).await;
}

#[actix_web::test]
async fn sqlite_keeps_registrations_across_reopen_in_wal_mode() {
    let dir = SqliteDir::new();
    let store = dir.open(Some(&key())).await.unwrap();
    let a = store.insert("alpha", &entry("http://a/mcp")).await.unwrap();
    store.insert("beta", &entry("http://b/mcp")).await.unwrap();
    let b = store
        .replace("beta", &entry("http://b2/mcp"))
        .await
        .unwrap();
    // No close: a write is durable when it returns, not when the pool shuts.
    drop(store);

    let store = dir.open(Some(&key())).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![a, b]);
    store.close().await;

    // WAL journal, as configured (the mode is stored in the file).
    let pool = sqlx::SqlitePool::connect(&dir.url()).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    pool.close().await;
}

/// The child's environment variable: the store URL to write to.
const CHILD_URL: &str = "MCP_DISCOVERY_STORE_CHILD_URL";

/// A write that returned survives `kill -9` of its process right after.
#[actix_web::test]
async fn sqlite_a_returned_write_survives_kill_9() {
    let dir = SqliteDir::new();
    // The child is this test binary running `sqlite_kill_9_child`.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["store::sqlite_kill_9_child", "--exact", "--nocapture"])
        .env(CHILD_URL, dir.url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let written = actix_web::rt::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "WRITTEN")
    });
    let written = tokio::time::timeout(Duration::from_secs(30), written).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        matches!(written, Ok(Ok(true))),
        "the child did not write: {written:?}"
    );

    let store = dir.open(Some(&key())).await.unwrap();
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "killed");
    assert_eq!(listed[0].entry, entry("http://k2/mcp"));
    assert_eq!(listed[0].revision, 2);
    store.close().await;
}

/// Not a test on its own: the process that
/// `sqlite_a_returned_write_survives_kill_9` starts and kills. Without
/// its variable it does nothing.
#[actix_web::test]
async fn sqlite_kill_9_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let store = Store::connect(&url, Some(&key())).await.unwrap();
    store
        .insert("killed", &entry("http://k/mcp"))
        .await
        .unwrap();
    store
        .replace("killed", &entry("http://k2/mcp"))
        .await
        .unwrap();
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "WRITTEN").unwrap();
        out.flush().unwrap();
    }
    // Wait to be killed, the store still open.
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("not killed");
}

#[actix_web::test]
async fn sqlite_encrypts_entries_at_rest() {
    // Control: without a key the secret is in the file, so the check below
    // looks at the right bytes.
    let plain = SqliteDir::new();
    let store = plain.open(None).await.unwrap();
    assert!(!store.is_encrypted());
    store
        .insert("search", &entry("http://s/mcp"))
        .await
        .unwrap();
    store.close().await;
    assert!(contains(&plain.bytes(), SECRET));

    let dir = SqliteDir::new();
    let store = dir.open(Some(&key())).await.unwrap();
    assert!(store.is_encrypted());
    let stored = store
        .insert("search", &entry("http://s/mcp"))
        .await
        .unwrap();
    store
        .replace("search", &entry("http://s2/mcp"))
        .await
        .unwrap();
    let bytes = dir.bytes();
    assert!(
        !contains(&bytes, SECRET),
        "the secret is in the database file"
    );
    assert!(!contains(&bytes, "http://s2/mcp"), "the entry is in clear");
    assert!(contains(&bytes, "search"), "the name stays in clear");
    let listed = store.list().await.unwrap();
    assert_eq!(listed[0].entry, entry("http://s2/mcp"));
    assert_eq!(listed[0].created_at, stored.created_at);
    store.close().await;
    assert!(!contains(&dir.bytes(), SECRET));

    // A wrong key is refused at connect, clearly; no key at all too, naming
    // a row.
    let err = dir.open(Some(&Secret::new(OTHER_KEY))).await.unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    assert!(err.to_string().contains("store.encryption_key"), "{err}");
    let err = dir.open(None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::KeyMissing(n) if n == "search"),
        "{err}"
    );

    // The right key reads it back.
    let store = dir.open(Some(&key())).await.unwrap();
    assert_eq!(store.list().await.unwrap()[0].entry, entry("http://s2/mcp"));
    store.close().await;
}

#[actix_web::test]
async fn sqlite_a_tampered_entry_is_an_error_naming_the_row() {
    let dir = SqliteDir::new();
    let store = dir.open(Some(&key())).await.unwrap();
    store.insert("good", &entry("http://g/mcp")).await.unwrap();
    store
        .insert("tampered", &entry("http://t/mcp"))
        .await
        .unwrap();
    // Flip the last byte (the tag) behind the store's back.
    let pool = sqlx::SqlitePool::connect(&dir.url()).await.unwrap();
    sqlx::query(
        "UPDATE mcp_discovery_servers \
         SET entry = substr(entry, 1, length(entry) - 1) || \
                     CASE WHEN substr(entry, -1) = x'00' THEN x'01' ELSE x'00' END \
         WHERE name = 'tampered'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let err = store.list().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Crypto { name, .. } if name == "tampered"),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("\"tampered\""), "{text}");
    assert!(text.contains("cannot be decrypted"), "{text}");
    assert!(store.get("good").await.is_ok());
    store.close().await;
}

#[actix_web::test]
async fn sqlite_rows_kept_in_clear_are_encrypted_once_a_key_is_set() {
    let dir = SqliteDir::new();
    let store = dir.open(None).await.unwrap();
    let a = store.insert("alpha", &entry("http://a/mcp")).await.unwrap();
    store.close().await;

    let store = dir.open(Some(&key())).await.unwrap();
    // Same entry, same revision and timestamps: only the storage changed.
    assert_eq!(store.list().await.unwrap(), vec![a]);
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&dir.url()).await.unwrap();
    let formats: Vec<i64> = sqlx::query_scalar("SELECT format FROM mcp_discovery_servers")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(formats, [1]);
    assert!(!contains(&dir.bytes(), SECRET), "the clear entry lingers");
    let err = dir.open(None).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyMissing(_)), "{err}");
}

#[actix_web::test]
async fn sqlite_changes_never_yield() {
    let dir = SqliteDir::new();
    let store = dir.open(None).await.unwrap();
    let mut changes = store.changes().await.unwrap();
    let other = dir.open(None).await.unwrap();
    other.insert("x", &entry("http://x/mcp")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_millis(300), changes.recv()).await;
    assert!(got.is_err(), "a SQLite store yielded {got:?}");
}

// -------------------------------------------------------------- PostgreSQL

/// A PostgreSQL server for the tests: the one in
/// `MCP_DISCOVERY_TEST_POSTGRES_URL`, or one started by the script and
/// stopped (by the script, then by PID) when this is dropped.
pub(crate) struct Postgres {
    pub(crate) url: String,
    /// Held for its `Drop`, which stops the server.
    _started: Option<Started>,
}

struct Started {
    dir: String,
    pid: u32,
}

impl Drop for Started {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-test.sh");
        let stopped = Command::new(script)
            .args(["stop", &self.dir])
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

impl Postgres {
    /// None: skipped on request. Panics, saying why, if no server can be had.
    pub(crate) fn get() -> Option<Postgres> {
        if std::env::var("MCP_DISCOVERY_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("MCP_DISCOVERY_SKIP_POSTGRES=1: skipping the PostgreSQL store tests");
            return None;
        }
        if let Ok(url) = std::env::var("MCP_DISCOVERY_TEST_POSTGRES_URL") {
            if !url.trim().is_empty() {
                return Some(Postgres {
                    url,
                    _started: None,
                });
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-test.sh");
        let out = Command::new(&script)
            .arg("start")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key).map(str::to_owned))
        };
        // Whatever happened, stop what was started.
        let started = match (field("DIR="), field("PID=")) {
            (Some(dir), Some(pid)) => Some(Started {
                dir,
                pid: pid.trim().parse().unwrap_or(0),
            }),
            _ => None,
        };
        assert!(
            out.status.success() && started.is_some(),
            "scripts/postgres-test.sh could not start PostgreSQL (set \
             MCP_DISCOVERY_TEST_POSTGRES_URL to use a running one, or \
             MCP_DISCOVERY_SKIP_POSTGRES=1 to skip):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = field("DATABASE_URL=").expect("DATABASE_URL in the script's output");
        Some(Postgres {
            url,
            _started: started,
        })
    }

    /// A fresh schema of its own for one case (so that a shared database
    /// is left as it was): the URL of the store in it.
    pub(crate) async fn schema(&self) -> Schema {
        let name = format!("mcp_discovery_test_{:016x}", rand::random::<u64>());
        let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&pool)
            .await
            .unwrap();
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Schema {
            url: format!("{}{sep}options=-c%20search_path%3D{name}", self.url),
            name,
            admin: pool,
        }
    }
}

pub(crate) struct Schema {
    pub(crate) url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl Schema {
    async fn open(&self, key: Option<&Secret>) -> Result<Store, StoreError> {
        Store::connect(&self.url, key).await
    }

    pub(crate) async fn remove(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}

/// The next change about one of `names` (others, from whoever else uses
/// the database, and periodic resyncs are skipped).
async fn next_change(changes: &mut StoreChanges, names: &[&str]) -> StoreChange {
    let deadline = Instant::now() + NOTIFY_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.recv()).await {
            Err(_) => panic!("no change notification within {NOTIFY_DEADLINE:?}"),
            Ok(None) => panic!("the change stream ended"),
            Ok(Some(StoreChange::Server { ref name, .. })) if !names.contains(&name.as_str()) => {}
            Ok(Some(StoreChange::Resync(ResyncReason::Periodic))) => {}
            Ok(Some(change)) => return change,
        }
    }
}

/// Every PostgreSQL case, on one server started once (several `#[test]`s
/// would each need their own, or a teardown Rust tests do not have).
#[actix_web::test]
async fn postgres_store() {
    let Some(pg) = Postgres::get() else { return };
    let started = Instant::now();

    // CRUD, errors, concurrency.
    let schema = pg.schema().await;
    let store = schema.open(Some(&key())).await.unwrap();
    assert_eq!(store.kind(), StoreKind::Postgres);
    assert!(!store.location().contains('@'), "{}", store.location());
    crud(&store).await;
    concurrent_inserts(&store).await;

    // TLS is built in: `sslmode=require` reaches the server, which (this
    // test server has no certificate) refuses it, instead of failing on a
    // client built without TLS.
    let sep = if schema.url.contains('?') { '&' } else { '?' };
    let err = Store::connect(&format!("{}{sep}sslmode=require", schema.url), None)
        .await
        .err()
        .map(|e| format!("{e:#} {:?}", e))
        .unwrap_or_default();
    assert!(
        !err.is_empty(),
        "a server without TLS accepted sslmode=require"
    );
    assert!(!err.contains("without TLS"), "{err}");

    // Durable across reopen; a second connect does not migrate again.
    let a = store.insert("alpha", &entry("http://a/mcp")).await.unwrap();
    drop(store);
    let store = schema.open(Some(&key())).await.unwrap();
    assert_eq!(store.list().await.unwrap(), vec![a]);

    // Encrypted at rest: the secret is not in the stored bytes.
    let blobs: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
        "SELECT entry FROM {}.mcp_discovery_servers",
        schema.name
    ))
    .fetch_all(&schema.admin)
    .await
    .unwrap();
    assert_eq!(blobs.len(), 1);
    assert!(!contains(&blobs[0], SECRET));
    let err = schema
        .open(Some(&Secret::new(OTHER_KEY)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    let err = schema.open(None).await.unwrap_err();
    assert!(matches!(err, StoreError::KeyMissing(_)), "{err}");
    store.close().await;
    schema.remove().await;

    // Two replicas on one database: a write on one is announced on the other.
    let schema = pg.schema().await;
    let one = schema.open(Some(&key())).await.unwrap();
    let two = schema.open(Some(&key())).await.unwrap();
    let mut on_one = one.changes().await.unwrap();
    let names = ["shared", "own"];

    let t = Instant::now();
    let inserted = two.insert("shared", &entry("http://s/mcp")).await.unwrap();
    let change = next_change(&mut on_one, &names).await;
    assert_eq!(
        change,
        StoreChange::Server {
            name: "shared".into(),
            op: ChangeOp::Insert,
            revision: Some(inserted.revision)
        }
    );
    eprintln!("notification after {:?}", t.elapsed());
    assert_eq!(
        one.get("shared").await.unwrap().entry,
        entry("http://s/mcp")
    );

    // Its own writes are not announced to itself; a rolled-back write (a
    // conflict) is not announced at all.
    one.insert("own", &entry("http://o/mcp")).await.unwrap();
    assert!(matches!(
        two.insert("shared", &entry("http://x/mcp")).await,
        Err(StoreError::Conflict(_))
    ));
    let replaced = two
        .replace("shared", &entry("http://s2/mcp"))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut on_one, &names).await,
        StoreChange::Server {
            name: "shared".into(),
            op: ChangeOp::Replace,
            revision: Some(replaced.revision)
        }
    );
    let deleted = two.delete("shared").await.unwrap();
    assert!(deleted > replaced.revision);
    assert_eq!(
        next_change(&mut on_one, &names).await,
        StoreChange::Server {
            name: "shared".into(),
            op: ChangeOp::Delete,
            revision: Some(deleted)
        }
    );
    assert_eq!(
        one.list()
            .await
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["own"]
    );

    // The other direction, on the other replica's own listener.
    let mut on_two = two.changes().await.unwrap();
    let deleted = one.delete("own").await.unwrap();
    assert_eq!(
        next_change(&mut on_two, &names).await,
        StoreChange::Server {
            name: "own".into(),
            op: ChangeOp::Delete,
            revision: Some(deleted)
        }
    );
    drop(on_one);
    drop(on_two);

    // The periodic safety net.
    let ticking = Store::connect_with(
        &schema.url,
        Some(&key()),
        StoreOptions {
            resync_interval: Duration::from_millis(200),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let mut changes = ticking.changes().await.unwrap();
    let got = tokio::time::timeout(NOTIFY_DEADLINE, changes.recv())
        .await
        .expect("a periodic resync");
    assert_eq!(got, Some(StoreChange::Resync(ResyncReason::Periodic)));
    drop(changes);

    // A lost listener connection comes back, asks for a resync, and goes
    // on reporting.
    let app = format!("mcpd_listener_{:08x}", rand::random::<u32>());
    let listening = Store::connect(&format!("{}&application_name={app}", schema.url), None)
        .await
        .unwrap();
    let mut changes = listening.changes().await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
    )
    .bind(&app)
    .fetch_all(&schema.admin)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    assert_eq!(
        next_change(&mut changes, &names).await,
        StoreChange::Resync(ResyncReason::Reconnected)
    );
    let again = one.insert("shared", &entry("http://s3/mcp")).await.unwrap();
    assert!(again.revision > deleted, "a revision is never reused");
    assert_eq!(
        next_change(&mut changes, &names).await,
        StoreChange::Server {
            name: "shared".into(),
            op: ChangeOp::Insert,
            revision: Some(again.revision)
        }
    );
    drop(changes);
    listening.close().await;

    for store in [one, two, ticking] {
        store.close().await;
    }
    schema.remove().await;
    eprintln!("PostgreSQL store cases took {:?}", started.elapsed());
    drop(pg);
}
