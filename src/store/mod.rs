//! The store of servers registered at runtime (`POST /v1/servers`): one row
//! per server in SQLite (the default, one process) or PostgreSQL (several
//! replicas share the registrations), through sqlx.
//!
//! - A row is the server's name (in clear: it is the key) and its config
//!   entry exactly as registered (the JSON fields of a config entry, without
//!   `name`), plus `created_at`, `updated_at` and a `revision`: the value
//!   of one store-wide write counter at the row's last write (insert,
//!   replace; a delete takes one too). Revisions are never reused, not even
//!   by a name registered again, so a follower can ignore a stale row
//!   ([`Snapshot`]).
//! - Every call gives up after [`StoreOptions::call_timeout`]
//!   ([`StoreError::Timeout`]); PostgreSQL sessions also get a
//!   `statement_timeout` and a `lock_timeout` (unless the server or the URL
//!   sets one), SQLite a busy timeout.
//! - A SQLite file (and its `-wal` / `-shm`) is created owner-only (0600),
//!   whatever the umask; an existing one with wider permissions is narrowed.
//! - [`Store::snapshot`] skips a row it cannot decode (bad ciphertext, bad
//!   JSON, unknown format) and reports it, so one bad row never stops the
//!   service; [`Store::list`] is the strict read that fails on it.
//! - Every write is durable when its method returns: SQLite runs in WAL mode
//!   with `synchronous=FULL`; PostgreSQL commits with `synchronous_commit`
//!   on (turned on for our sessions if the server has it off).
//! - The entry is encrypted at rest when `store.encryption_key` is set
//!   ([`crypto`]); without a key it is stored in clear and
//!   [`Store::is_encrypted`] is false, for the start-up warning. Rows stored
//!   in clear are encrypted at connect once a key is configured.
//! - Migrations are embedded in the binary (`migrations/<backend>/`) and run
//!   at connect, under sqlx's migration lock on PostgreSQL. They keep their
//!   bookkeeping in sqlx's `_sqlx_migrations` table, so on PostgreSQL give
//!   the store a database or a schema of its own (e.g.
//!   `postgres://u:p@db/app?options=-c%20search_path%3Dmcp_discovery`).
//! - With PostgreSQL, [`Store::changes`] reports other replicas' writes
//!   (LISTEN/NOTIFY) and asks for a periodic full resync ([`changes`]).
//!
//! The pools' connections belong to the runtime they were opened on: open
//! the store on the runtime that outlives it (the System's main arbiter).

pub mod changes;
pub mod crypto;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use discovery_config::Secret;
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

pub use changes::{ChangeOp, ResyncReason, StoreChange, StoreChanges, NOTIFY_CHANNEL};
pub use crypto::{CryptoError, EntryCipher};

use changes::Notice;
use crypto::{FORMAT_PLAINTEXT, FORMAT_XCHACHA20POLY1305};

/// File name of the default SQLite database (see [`Store::default_url`]).
pub const DEFAULT_FILE_NAME: &str = "mcp-discovery.db";
/// How often [`Store::changes`] asks for a full resync on PostgreSQL, as a
/// safety net under LISTEN/NOTIFY.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// How long a write waits for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`StoreOptions::call_timeout`]: longer than the database's own
/// timeouts below, so that the database usually gives up first and says why.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL `statement_timeout` of our sessions (unless one is set).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// PostgreSQL `lock_timeout` of our sessions (unless one is set).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(3);
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 5;
/// `mcp_discovery_store_meta` key of the encryption key check value.
const META_KEY_CHECK: &str = "key_check";

/// The embedded migrations, oldest first: (version, description, SQL). The
/// description is what sqlx-cli derives from the file name.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../migrations/sqlite/0001_servers.sql"),
    ),
    (
        2,
        "revision",
        include_str!("../../migrations/sqlite/0002_revision.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "servers",
        include_str!("../../migrations/postgres/0001_servers.sql"),
    ),
    (
        2,
        "revision",
        include_str!("../../migrations/postgres/0002_revision.sql"),
    ),
];

/// Why a store operation failed. `Display` is a sentence that names the
/// server where there is one and never contains a secret (no URL, no key,
/// no entry); the cause is also reachable through `source()`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `insert` of a name that is already stored.
    #[error("a server named {0:?} is already registered")]
    Conflict(String),
    /// `replace` / `delete` / `get` of a name that is not stored.
    #[error("no server named {0:?} is registered")]
    NotFound(String),
    /// `store.url` has another scheme than `sqlite:` or `postgres://`.
    #[error("unsupported store URL; use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl,
    /// The URL has the right scheme but does not parse.
    #[error("the store URL is invalid: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be opened or reached.
    #[error("cannot open the store at {location}: {source}")]
    Connect {
        /// The file, or `host:port/database` (never credentials).
        location: String,
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the store's schema: {0}")]
    Migrate(#[from] MigrateError),
    /// A query failed.
    #[error("the store's database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// An entry could not be encrypted or decrypted; `name` is the row.
    #[error("server {name:?}: {source}")]
    Crypto {
        name: String,
        #[source]
        source: CryptoError,
    },
    /// `store.encryption_key` is malformed.
    #[error("{0}")]
    Key(#[source] CryptoError),
    /// `store.encryption_key` is not the key the stored entries were
    /// written with (checked at connect).
    #[error(
        "store.encryption_key is not the key this store's entries were encrypted with. Hint: \
         set the previous key again; the entries cannot be read without it"
    )]
    WrongKey,
    /// Rows are encrypted but no key is configured.
    #[error(
        "the store holds encrypted entries (server {0:?} among them) but store.encryption_key \
         is not set. Hint: set the key they were written with"
    )]
    KeyMissing(String),
    /// A stored entry is not JSON (written by hand, or by another program).
    #[error("server {name:?}: the stored entry is not valid JSON: {source}")]
    Corrupt {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// A row has a `format` this version does not know (a newer version
    /// wrote it).
    #[error("server {name:?}: the stored entry has an unknown format ({format})")]
    UnknownFormat { name: String, format: i16 },
    /// The call did not finish in time (a lock held elsewhere, a database
    /// that does not answer); it was abandoned.
    #[error("the store did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The SQLite file or its directory could not be prepared.
    #[error("cannot prepare the store file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the store itself is unavailable (timeout, connection,
    /// database failure), as opposed to an answer about the data.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Timeout(_) | StoreError::Database(_) | StoreError::Connect { .. }
        )
    }
}

/// A row [`Store::snapshot`] could not decode, and why (never the entry).
#[derive(Debug)]
pub struct SkippedRow {
    pub name: String,
    pub revision: i64,
    pub error: StoreError,
}

/// Everything stored, as of one moment, from [`Store::snapshot`].
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The decodable rows, oldest registration first.
    pub servers: Vec<StoredServer>,
    /// The rows that could not be decoded (leave what runs under these
    /// names alone).
    pub skipped: Vec<SkippedRow>,
    /// The store's write counter when the snapshot was taken: every write
    /// with a revision up to this one is reflected in it, so a server
    /// missing here with a revision <= `revision` was deleted.
    pub revision: i64,
}

/// One registered server as stored. `Debug` leaves `entry` out (secrets).
#[derive(Clone, PartialEq)]
pub struct StoredServer {
    pub name: String,
    /// The config entry exactly as registered (without `name`). Holds
    /// secrets: never log it or return it whole.
    pub entry: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The store's write counter at the row's last write: grows with every
    /// write, never reused (see the module doc).
    pub revision: i64,
}

impl std::fmt::Debug for StoredServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            name,
            entry: _,
            created_at,
            updated_at,
            revision,
        } = self;
        f.debug_struct("StoredServer")
            .field("name", name)
            .field("entry", &"[redacted]")
            .field("created_at", created_at)
            .field("updated_at", updated_at)
            .field("revision", revision)
            .finish()
    }
}

/// Which database a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// Settings of a [`Store`] beyond its URL and key.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// PostgreSQL: how often [`Store::changes`] yields a periodic
    /// [`StoreChange::Resync`].
    pub resync_interval: Duration,
    /// The longest any one call (read or write) may take.
    pub call_timeout: Duration,
    /// PostgreSQL `statement_timeout` / `lock_timeout` for our sessions,
    /// when neither the server nor the URL sets one.
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres {
        pool: PgPool,
        /// For the listener's connection of its own.
        options: Box<PgConnectOptions>,
    },
}

/// The registrations of servers added at runtime. Cheap to clone (pools
/// and the cipher are shared).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    cipher: Option<Arc<EntryCipher>>,
    /// Random per instance: tells this instance's notifications apart.
    origin: String,
    location: String,
    options: StoreOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind())
            .field("location", &self.location)
            .field("encrypted", &self.is_encrypted())
            .finish_non_exhaustive()
    }
}

/// Runs `$body` with `$pool` bound to the backend's pool: the code is
/// written once and compiled for each driver (`$1`-style parameters work on
/// both).
macro_rules! on_backend {
    ($store:expr, |$pool:ident| $body:block) => {
        match &$store.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres { pool: $pool, .. } => $body,
        }
    };
}

/// The PostgreSQL connection behind a driver's connection, if it is one:
/// lets the shared write code send its notification on PostgreSQL only.
trait AsPostgres {
    fn as_postgres(&mut self) -> Option<&mut sqlx::PgConnection>;
}

impl AsPostgres for sqlx::SqliteConnection {
    fn as_postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        None
    }
}

impl AsPostgres for sqlx::PgConnection {
    fn as_postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        Some(self)
    }
}

/// A row as read, before decryption.
struct RawRow {
    name: String,
    format: i16,
    entry: Vec<u8>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    revision: i64,
}

macro_rules! raw_row {
    ($row:expr) => {
        RawRow {
            name: $row.try_get("name")?,
            format: $row.try_get("format")?,
            entry: $row.try_get("entry")?,
            created_at: $row.try_get("created_at")?,
            updated_at: $row.try_get("updated_at")?,
            revision: $row.try_get("revision")?,
        }
    };
}

/// Takes the next value of the store's write counter inside the write's
/// transaction (on PostgreSQL this locks the counter until commit, so
/// revisions follow the commit order).
macro_rules! next_revision {
    ($tx:ident) => {
        sqlx::query_scalar::<_, i64>(
            "UPDATE mcp_discovery_revision SET value = value + 1 WHERE id = 1 RETURNING value",
        )
        .fetch_one(&mut *$tx)
        .await?
    };
}

const SELECT_ROWS: &str = "SELECT name, format, entry, created_at, updated_at, revision \
                           FROM mcp_discovery_servers";

impl Store {
    /// The default `store.url`: the SQLite file [`DEFAULT_FILE_NAME`] in
    /// the state directory (`--state-dir`), or in the working directory
    /// when there is none. Not next to the config file: that may be a
    /// read-only mount (a Kubernetes ConfigMap). `%`, `?` and `#` in the
    /// path are escaped.
    pub fn default_url(state_dir: Option<&Path>) -> String {
        Self::sqlite_url(&Self::default_file(state_dir))
    }

    /// The default SQLite file in `state_dir` (None: the working directory).
    pub fn default_file(state_dir: Option<&Path>) -> PathBuf {
        match state_dir.filter(|dir| !dir.as_os_str().is_empty()) {
            Some(dir) => dir.join(DEFAULT_FILE_NAME),
            None => PathBuf::from(DEFAULT_FILE_NAME),
        }
    }

    /// `sqlite://` URL of `file`, escaped for sqlx.
    pub fn sqlite_url(file: &Path) -> String {
        let mut url = String::from("sqlite://");
        for c in file.to_string_lossy().chars() {
            match c {
                '%' => url.push_str("%25"),
                '?' => url.push_str("%3F"),
                '#' => url.push_str("%23"),
                c => url.push(c),
            }
        }
        url
    }

    /// Opens the store at `url` (`sqlite://PATH`, `sqlite::memory:`,
    /// `postgres://...`), creating a SQLite file on first use, and brings
    /// its schema up to date. With `key` (`store.encryption_key`), entries
    /// are encrypted; a key that does not open the stored entries, or
    /// encrypted entries without a key, is an error here.
    pub async fn connect(url: &str, key: Option<&Secret>) -> Result<Store, StoreError> {
        Self::connect_with(url, key, StoreOptions::default()).await
    }

    /// [`Store::connect`] with options.
    pub async fn connect_with(
        url: &str,
        key: Option<&Secret>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let cipher = key
            .map(EntryCipher::from_secret)
            .transpose()
            .map_err(StoreError::Key)?
            .map(Arc::new);
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let (backend, location) = if lower.starts_with("sqlite:") {
            Self::open_sqlite(url).await?
        } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Self::open_postgres(url, &options).await?
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let store = Store {
            backend,
            cipher,
            origin: random_origin()?,
            location,
            options,
        };
        store.migrate().await?;
        store.check_key().await?;
        Ok(store)
    }

    async fn open_sqlite(url: &str) -> Result<(Backend, String), StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
            // Entries hold secrets: zero what a replace or delete frees
            // instead of leaving it in free pages.
            .pragma("secure_delete", "ON");
        let location = options.get_filename().display().to_string();
        prepare_sqlite_files(options.get_filename())?;
        // Connections are kept: an in-memory database lives as long as one.
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                location: location.clone(),
                source,
            })?;
        Ok((Backend::Sqlite(pool), location))
    }

    async fn open_postgres(
        url: &str,
        store_options: &StoreOptions,
    ) -> Result<(Backend, String), StoreError> {
        let statement_timeout = millis(store_options.statement_timeout);
        let lock_timeout = millis(store_options.lock_timeout);
        let options = PgConnectOptions::from_str(url).map_err(StoreError::InvalidUrl)?;
        let location = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let (statement_timeout, lock_timeout) =
                    (statement_timeout.clone(), lock_timeout.clone());
                Box::pin(async move {
                    // No call may hang on a lock or a runaway statement; a
                    // setting made on the server or in the URL wins.
                    for (setting, value) in [
                        ("statement_timeout", statement_timeout),
                        ("lock_timeout", lock_timeout),
                    ] {
                        sqlx::query(
                            "SELECT set_config($1, $2, false) WHERE current_setting($1) = '0'",
                        )
                        .bind(setting)
                        .bind(value)
                        .execute(&mut *conn)
                        .await?;
                    }
                    // A write must be durable before the API answers; keep a
                    // stronger server setting (remote_write, remote_apply).
                    sqlx::query(
                        "SELECT set_config('synchronous_commit', 'on', false) \
                         WHERE current_setting('synchronous_commit') = 'off'",
                    )
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(|source| StoreError::Connect {
                location: location.clone(),
                source,
            })?;
        Ok((
            Backend::Postgres {
                pool,
                options: Box::new(options),
            },
            location,
        ))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                Migrator::new(Embedded(SQLITE_MIGRATIONS))
                    .await?
                    .run(pool)
                    .await?
            }
            Backend::Postgres { pool, .. } => {
                Migrator::new(Embedded(POSTGRES_MIGRATIONS))
                    .await?
                    .run(pool)
                    .await?
            }
        }
        Ok(())
    }

    /// With a key: the stored key check must verify (or is written on first
    /// use), and rows stored in clear are encrypted now. Without: no row
    /// may be encrypted.
    async fn check_key(&self) -> Result<(), StoreError> {
        let Some(cipher) = &self.cipher else {
            let encrypted: Option<String> = on_backend!(self, |pool| {
                sqlx::query_scalar(
                    "SELECT name FROM mcp_discovery_servers WHERE format <> $1 \
                     ORDER BY name LIMIT 1",
                )
                .bind(FORMAT_PLAINTEXT)
                .fetch_optional(pool)
                .await?
            });
            return match encrypted {
                Some(name) => Err(StoreError::KeyMissing(name)),
                None => Ok(()),
            };
        };
        let check = cipher.key_check().map_err(StoreError::Key)?;
        on_backend!(self, |pool| {
            sqlx::query(
                "INSERT INTO mcp_discovery_store_meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(META_KEY_CHECK)
            .bind(&check)
            .execute(pool)
            .await?;
        });
        let stored: Vec<u8> = on_backend!(self, |pool| {
            sqlx::query_scalar("SELECT value FROM mcp_discovery_store_meta WHERE key = $1")
                .bind(META_KEY_CHECK)
                .fetch_one(pool)
                .await?
        });
        if !cipher.verify_key_check(&stored) {
            // Another key wrote the check. Only entries make it binding: with
            // none encrypted, the new key is adopted.
            let encrypted: Option<String> = on_backend!(self, |pool| {
                sqlx::query_scalar(
                    "SELECT name FROM mcp_discovery_servers WHERE format <> $1 LIMIT 1",
                )
                .bind(FORMAT_PLAINTEXT)
                .fetch_optional(pool)
                .await?
            });
            if encrypted.is_some() {
                return Err(StoreError::WrongKey);
            }
            on_backend!(self, |pool| {
                sqlx::query("UPDATE mcp_discovery_store_meta SET value = $2 WHERE key = $1")
                    .bind(META_KEY_CHECK)
                    .bind(&check)
                    .execute(pool)
                    .await?;
            });
            tracing::warn!("Adopted a new store.encryption_key: no stored entry used the old one.");
        }
        self.encrypt_plaintext_rows(cipher).await
    }

    /// Encrypts the rows stored in clear (before a key was configured),
    /// leaving their revision and timestamps alone: the entry is the same.
    async fn encrypt_plaintext_rows(&self, cipher: &EntryCipher) -> Result<(), StoreError> {
        let plain: Vec<(String, Vec<u8>, i64)> = on_backend!(self, |pool| {
            let rows = sqlx::query(
                "SELECT name, entry, revision FROM mcp_discovery_servers WHERE format = $1",
            )
            .bind(FORMAT_PLAINTEXT)
            .fetch_all(pool)
            .await?;
            let mut plain = Vec::with_capacity(rows.len());
            for row in rows {
                plain.push((
                    row.try_get("name")?,
                    row.try_get("entry")?,
                    row.try_get("revision")?,
                ));
            }
            plain
        });
        if plain.is_empty() {
            return Ok(());
        }
        let count = plain.len();
        for (name, entry, revision) in plain {
            let sealed = cipher
                .seal(&name, &entry)
                .map_err(|source| StoreError::Crypto {
                    name: name.clone(),
                    source,
                })?;
            // A concurrent replace wins (it wrote its own encrypted entry).
            on_backend!(self, |pool| {
                sqlx::query(
                    "UPDATE mcp_discovery_servers SET format = $2, entry = $3 \
                     WHERE name = $1 AND format = $4 AND revision = $5",
                )
                .bind(&name)
                .bind(FORMAT_XCHACHA20POLY1305)
                .bind(&sealed)
                .bind(FORMAT_PLAINTEXT)
                .bind(revision)
                .execute(pool)
                .await?;
            });
        }
        // The clear pages must leave the disk now: `secure_delete` zeroes
        // them in the database file, but in WAL mode the file keeps its
        // old pages until a checkpoint, which otherwise waits for the last
        // connection to close cleanly.
        if let Backend::Sqlite(pool) = &self.backend {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        tracing::info!(
            count,
            "Encrypted the stored entries that were kept in clear."
        );
        Ok(())
    }

    /// Which database this is.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sqlite(_) => StoreKind::Sqlite,
            Backend::Postgres { .. } => StoreKind::Postgres,
        }
    }

    /// Where the data lives, for logs: the SQLite file, or
    /// `host:port/database` (never credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether entries are encrypted at rest (`store.encryption_key` set).
    /// False: secrets in registered entries are stored in clear; warn.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Every stored server, oldest registration first. Fails whole, naming
    /// the row, if an entry cannot be decrypted or parsed (the strict read;
    /// the service uses [`Store::snapshot`]).
    pub async fn list(&self) -> Result<Vec<StoredServer>, StoreError> {
        let (_, rows) = self.timed(self.read_rows()).await?;
        rows.into_iter().map(|row| self.decode(row)).collect()
    }

    /// Every stored server plus the write counter, as of one moment; a row
    /// that cannot be decoded is skipped and returned in
    /// [`Snapshot::skipped`] (with its name: log it), never an error.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (revision, rows) = self.timed(self.read_rows()).await?;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for row in rows {
            let (name, row_revision) = (row.name.clone(), row.revision);
            match self.decode(row) {
                Ok(server) => snapshot.servers.push(server),
                Err(error) => snapshot.skipped.push(SkippedRow {
                    name,
                    revision: row_revision,
                    error,
                }),
            }
        }
        Ok(snapshot)
    }

    /// The write counter, then the rows (read after it, so nothing older
    /// than the counter is missing from them).
    async fn read_rows(&self) -> Result<(i64, Vec<RawRow>), StoreError> {
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin().await?;
            let revision: i64 =
                sqlx::query_scalar("SELECT value FROM mcp_discovery_revision WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?
                    .unwrap_or(0);
            let rows = sqlx::query(&format!("{SELECT_ROWS} ORDER BY created_at, name"))
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let mut raw = Vec::with_capacity(rows.len());
            for row in rows {
                raw.push(raw_row!(row));
            }
            (revision, raw)
        }))
    }

    /// One stored server.
    pub async fn get(&self, name: &str) -> Result<StoredServer, StoreError> {
        let row: Option<RawRow> = self
            .timed(async {
                Ok(on_backend!(self, |pool| {
                    let row = sqlx::query(&format!("{SELECT_ROWS} WHERE name = $1"))
                        .bind(name)
                        .fetch_optional(pool)
                        .await?;
                    match row {
                        Some(row) => Some(raw_row!(row)),
                        None => None,
                    }
                }))
            })
            .await?;
        match row {
            Some(row) => self.decode(row),
            None => Err(StoreError::NotFound(name.to_owned())),
        }
    }

    /// Stores a new server; [`StoreError::Conflict`] if the name is taken.
    /// Durable when it returns.
    pub async fn insert(&self, name: &str, entry: &Value) -> Result<StoredServer, StoreError> {
        let (format, blob) = self.encode(name, entry)?;
        let now = now();
        let inserted: Option<i64> = self
            .timed(async {
                Ok(on_backend!(self, |pool| {
                    let mut tx = pool.begin().await?;
                    let revision = next_revision!(tx);
                    let done = sqlx::query(
                        "INSERT INTO mcp_discovery_servers \
                         (name, format, entry, created_at, updated_at, revision) \
                         VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(format)
                    .bind(&blob)
                    .bind(now)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        if let Some(conn) = tx.as_postgres() {
                            self.notify(conn, ChangeOp::Insert, name, Some(revision))
                                .await?;
                        }
                        tx.commit().await?;
                        Some(revision)
                    } else {
                        tx.rollback().await?;
                        None
                    }
                }))
            })
            .await?;
        let Some(revision) = inserted else {
            return Err(StoreError::Conflict(name.to_owned()));
        };
        Ok(StoredServer {
            name: name.to_owned(),
            entry: entry.clone(),
            created_at: now,
            updated_at: now,
            revision,
        })
    }

    /// Replaces a stored server's entry; [`StoreError::NotFound`] if there
    /// is none. Durable when it returns.
    pub async fn replace(&self, name: &str, entry: &Value) -> Result<StoredServer, StoreError> {
        let (format, blob) = self.encode(name, entry)?;
        let now = now();
        let updated: Option<(DateTime<Utc>, i64)> = self
            .timed(async {
                Ok(on_backend!(self, |pool| {
                    let mut tx = pool.begin().await?;
                    let revision = next_revision!(tx);
                    let row = sqlx::query(
                        "UPDATE mcp_discovery_servers \
                         SET format = $2, entry = $3, updated_at = $4, revision = $5 \
                         WHERE name = $1 RETURNING created_at",
                    )
                    .bind(name)
                    .bind(format)
                    .bind(&blob)
                    .bind(now)
                    .bind(revision)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match row {
                        Some(row) => {
                            let created_at: DateTime<Utc> = row.try_get("created_at")?;
                            if let Some(conn) = tx.as_postgres() {
                                self.notify(conn, ChangeOp::Replace, name, Some(revision))
                                    .await?;
                            }
                            tx.commit().await?;
                            Some((created_at, revision))
                        }
                        None => {
                            tx.rollback().await?;
                            None
                        }
                    }
                }))
            })
            .await?;
        let Some((created_at, revision)) = updated else {
            return Err(StoreError::NotFound(name.to_owned()));
        };
        Ok(StoredServer {
            name: name.to_owned(),
            entry: entry.clone(),
            created_at,
            updated_at: now,
            revision,
        })
    }

    /// Removes a stored server; [`StoreError::NotFound`] if there is none.
    /// Durable when it returns. The revision the delete took (a follower
    /// ignores older rows of this name from then on).
    pub async fn delete(&self, name: &str) -> Result<i64, StoreError> {
        let deleted: Option<i64> = self
            .timed(async {
                Ok(on_backend!(self, |pool| {
                    let mut tx = pool.begin().await?;
                    let revision = next_revision!(tx);
                    let done = sqlx::query("DELETE FROM mcp_discovery_servers WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 1 {
                        if let Some(conn) = tx.as_postgres() {
                            self.notify(conn, ChangeOp::Delete, name, Some(revision))
                                .await?;
                        }
                        tx.commit().await?;
                        Some(revision)
                    } else {
                        tx.rollback().await?;
                        None
                    }
                }))
            })
            .await?;
        deleted.ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    /// Runs one call under [`StoreOptions::call_timeout`].
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.options.call_timeout;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| StoreError::Timeout(limit))?
    }

    /// Writes made by *other* replicas, as they commit, plus a periodic
    /// [`StoreChange::Resync`] ([`StoreOptions::resync_interval`]); on each
    /// item, call [`Store::list`] and apply the difference. Subscribe
    /// before the first `list()` so that nothing falls in between: every
    /// write committed after this returns is reported. PostgreSQL only;
    /// with SQLite (one process) the receiver never yields. Needs a Tokio
    /// runtime (the listener runs in tasks of its own, until the receiver
    /// is dropped).
    pub async fn changes(&self) -> Result<StoreChanges, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(StoreChanges::never()),
            Backend::Postgres { options, .. } => changes::listen(
                options.as_ref().clone(),
                self.origin.clone(),
                self.options.resync_interval,
            )
            .await
            .map_err(|source| StoreError::Connect {
                location: self.location.clone(),
                source,
            }),
        }
    }

    /// Closes the pools (at shutdown); later calls fail.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres { pool, .. } => pool.close().await,
        }
    }

    /// Sends the change notification inside the write's transaction: it is
    /// delivered when (and only if) the write commits.
    async fn notify(
        &self,
        conn: &mut sqlx::PgConnection,
        op: ChangeOp,
        name: &str,
        revision: Option<i64>,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(&Notice {
            origin: self.origin.clone(),
            op,
            name: name.to_owned(),
            revision,
        })
        .map_err(|source| StoreError::Corrupt {
            name: name.to_owned(),
            source,
        })?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(payload)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The `format` and bytes to store for `entry`.
    fn encode(&self, name: &str, entry: &Value) -> Result<(i16, Vec<u8>), StoreError> {
        let json = serde_json::to_vec(entry).map_err(|source| StoreError::Corrupt {
            name: name.to_owned(),
            source,
        })?;
        match &self.cipher {
            None => Ok((FORMAT_PLAINTEXT, json)),
            Some(cipher) => {
                let sealed = cipher
                    .seal(name, &json)
                    .map_err(|source| StoreError::Crypto {
                        name: name.to_owned(),
                        source,
                    })?;
                Ok((FORMAT_XCHACHA20POLY1305, sealed))
            }
        }
    }

    fn decode(&self, row: RawRow) -> Result<StoredServer, StoreError> {
        let json = match (row.format, &self.cipher) {
            (FORMAT_PLAINTEXT, _) => row.entry,
            (FORMAT_XCHACHA20POLY1305, Some(cipher)) => cipher
                .open(&row.name, &row.entry)
                .map_err(|source| StoreError::Crypto {
                    name: row.name.clone(),
                    source,
                })?,
            (FORMAT_XCHACHA20POLY1305, None) => return Err(StoreError::KeyMissing(row.name)),
            (format, _) => {
                return Err(StoreError::UnknownFormat {
                    name: row.name,
                    format,
                })
            }
        };
        let entry = serde_json::from_slice(&json).map_err(|source| StoreError::Corrupt {
            name: row.name.clone(),
            source,
        })?;
        Ok(StoredServer {
            name: row.name,
            entry,
            created_at: row.created_at,
            updated_at: row.updated_at,
            revision: row.revision,
        })
    }
}

/// A PostgreSQL duration setting in milliseconds (at least 1: 0 would mean
/// "no limit").
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Creates the SQLite file owner-only (0600) before SQLite opens it, so
/// the umask plays no part (SQLite gives its `-wal` and `-shm` the mode of
/// the database file); narrows an existing file, and existing companions,
/// that others could read. In-memory databases have no file.
fn prepare_sqlite_files(path: &Path) -> Result<(), StoreError> {
    let text = path.to_string_lossy();
    if text.is_empty() || text == ":memory:" || text.starts_with("file:") {
        return Ok(());
    }
    let failed = |source| StoreError::File {
        path: path.display().to_string(),
        source,
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    drop(open.open(path).map_err(failed)?);
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        use std::os::unix::fs::PermissionsExt;
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = PathBuf::from(file);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(failed)?;
            tracing::info!(file = %file.display(), "Narrowed the store file's permissions to 0600.");
        }
    }
    Ok(())
}

/// Now, at the precision both databases keep (microseconds), so that what a
/// write returns equals what a later `list()` reads.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A random instance id (hex), for telling our own notifications apart.
fn random_origin() -> Result<String, StoreError> {
    use chacha20poly1305::aead::Generate;
    let bytes = <[u8; 16]>::try_generate()
        .map_err(|e| StoreError::Key(CryptoError::Random(e.to_string())))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Migrations compiled into the binary (no `migrate!` proc macro: it would
/// build every driver a second time, for the host).
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|&(version, description, sql)| {
                    Migration::new(
                        version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_is_in_the_state_directory() {
        assert_eq!(Store::default_url(None), "sqlite://mcp-discovery.db");
        assert_eq!(
            Store::default_url(Some(Path::new(""))),
            "sqlite://mcp-discovery.db"
        );
        assert_eq!(
            Store::default_url(Some(Path::new("/var/lib/mcp"))),
            "sqlite:///var/lib/mcp/mcp-discovery.db"
        );
        assert_eq!(
            Store::default_url(Some(Path::new("state"))),
            "sqlite://state/mcp-discovery.db"
        );
        // sqlx reads the path back, escapes and all.
        let url = Store::default_url(Some(Path::new("/tmp/a?b#c%d")));
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("/tmp/a?b#c%d/mcp-discovery.db")
        );
    }

    /// Revisions come from one counter: a name registered again after its
    /// deletion gets a higher revision than any before, and a delete takes
    /// one too.
    #[actix_web::test]
    async fn revisions_are_never_reused() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        let entry = serde_json::json!({"url": "http://x/mcp"});
        let a = store.insert("a", &entry).await.unwrap().revision;
        let b = store.insert("b", &entry).await.unwrap().revision;
        let a2 = store.replace("a", &entry).await.unwrap().revision;
        let deleted = store.delete("a").await.unwrap();
        let again = store.insert("a", &entry).await.unwrap().revision;
        assert!(
            a < b && b < a2 && a2 < deleted && deleted < again,
            "{a} {b} {a2} {deleted} {again}"
        );
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.revision, again);
        assert!(snapshot.skipped.is_empty());
        assert_eq!(snapshot.servers.len(), 2);
    }

    #[actix_web::test]
    async fn an_undecodable_row_is_skipped_by_the_snapshot() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        let entry = serde_json::json!({"url": "http://x/mcp"});
        store.insert("good", &entry).await.unwrap();
        store.insert("bad", &entry).await.unwrap();
        let Backend::Sqlite(pool) = &store.backend else {
            unreachable!()
        };
        sqlx::query("UPDATE mcp_discovery_servers SET entry = x'7b6e6f' WHERE name = 'bad'")
            .execute(pool)
            .await
            .unwrap();
        assert!(matches!(
            store.list().await.unwrap_err(),
            StoreError::Corrupt { .. }
        ));
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.servers.len(), 1);
        assert_eq!(snapshot.servers[0].name, "good");
        assert_eq!(snapshot.skipped.len(), 1);
        assert_eq!(snapshot.skipped[0].name, "bad");
        assert!(snapshot.skipped[0].error.to_string().contains("\"bad\""));
    }

    /// Every migration file is embedded, in order, for both backends.
    #[test]
    fn every_migration_file_is_embedded() {
        for (dir, embedded) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f.ends_with(".sql"))
                .collect();
            files.sort();
            let listed: Vec<String> = embedded
                .iter()
                .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
                .collect();
            assert_eq!(files, listed, "migrations/{dir}");
            for ((_, _, sql), file) in embedded.iter().zip(&files) {
                assert_eq!(*sql, std::fs::read_to_string(path.join(file)).unwrap());
            }
        }
    }

    #[test]
    fn errors_name_the_row_and_never_the_url() {
        let e = StoreError::Crypto {
            name: "search".into(),
            source: CryptoError::Open,
        };
        assert!(e.to_string().starts_with("server \"search\": "), "{e}");
        assert!(e.to_string().contains("not the key"), "{e}");
        assert!(StoreError::KeyMissing("s".into())
            .to_string()
            .contains("store.encryption_key is not set"));
    }

    #[actix_web::test]
    async fn unsupported_urls_are_refused() {
        let e = Store::connect("mysql://u:pw@h/db", None).await.unwrap_err();
        assert!(matches!(e, StoreError::UnsupportedUrl), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = Store::connect("sqlite::memory:", Some(&Secret::new("short")))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Key(_)), "{e}");
        assert!(e.to_string().contains("openssl rand -hex 32"), "{e}");
    }

    #[actix_web::test]
    async fn in_memory_round_trip() {
        let store = Store::connect("sqlite::memory:", None).await.unwrap();
        assert_eq!(store.kind(), StoreKind::Sqlite);
        assert!(!store.is_encrypted());
        let entry = serde_json::json!({"url": "http://x/mcp"});
        let stored = store.insert("a", &entry).await.unwrap();
        assert_eq!(store.list().await.unwrap(), vec![stored]);
    }
}
