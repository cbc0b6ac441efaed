//! The store of servers registered at runtime (`POST /v1/servers`): one row
//! per server in SQLite (the default, one process) or PostgreSQL (several
//! replicas share the registrations), through sqlx.
//!
//! - A row is the server's name (in clear: it is the key) and its config
//!   entry exactly as registered (the JSON fields of a config entry, without
//!   `name`), plus `created_at`, `updated_at` and a `revision` that starts
//!   at 1 and grows by one with every replace.
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
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SQLite waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 5;
/// `mcp_discovery_store_meta` key of the encryption key check value.
const META_KEY_CHECK: &str = "key_check";

/// The embedded migrations, oldest first: (version, description, SQL). The
/// description is what sqlx-cli derives from the file name.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "servers",
    include_str!("../../migrations/sqlite/0001_servers.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "servers",
    include_str!("../../migrations/postgres/0001_servers.sql"),
)];

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
    /// 1 after the insert, +1 with every replace.
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
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

const SELECT_ROWS: &str = "SELECT name, format, entry, created_at, updated_at, revision \
                           FROM mcp_discovery_servers";

impl Store {
    /// The default `store.url`: the SQLite file [`DEFAULT_FILE_NAME`] next
    /// to the config file, or in the working directory when running on the
    /// embedded defaults. `%`, `?` and `#` in the path are escaped.
    pub fn default_url(config_path: Option<&Path>) -> String {
        let dir = config_path
            .and_then(Path::parent)
            .filter(|dir| !dir.as_os_str().is_empty());
        let file = match dir {
            Some(dir) => dir.join(DEFAULT_FILE_NAME),
            None => PathBuf::from(DEFAULT_FILE_NAME),
        };
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
            Self::open_postgres(url).await?
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

    async fn open_postgres(url: &str) -> Result<(Backend, String), StoreError> {
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
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // A write must be durable before the API answers; keep a
                    // stronger server setting (remote_write, remote_apply).
                    sqlx::query(
                        "SELECT set_config('synchronous_commit', 'on', false) \
                         WHERE current_setting('synchronous_commit') = 'off'",
                    )
                    .execute(conn)
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
    /// the row, if an entry cannot be decrypted or parsed.
    pub async fn list(&self) -> Result<Vec<StoredServer>, StoreError> {
        let rows: Vec<RawRow> = on_backend!(self, |pool| {
            let rows = sqlx::query(&format!("{SELECT_ROWS} ORDER BY created_at, name"))
                .fetch_all(pool)
                .await?;
            let mut raw = Vec::with_capacity(rows.len());
            for row in rows {
                raw.push(raw_row!(row));
            }
            raw
        });
        rows.into_iter().map(|row| self.decode(row)).collect()
    }

    /// One stored server.
    pub async fn get(&self, name: &str) -> Result<StoredServer, StoreError> {
        let row: Option<RawRow> = on_backend!(self, |pool| {
            let row = sqlx::query(&format!("{SELECT_ROWS} WHERE name = $1"))
                .bind(name)
                .fetch_optional(pool)
                .await?;
            match row {
                Some(row) => Some(raw_row!(row)),
                None => None,
            }
        });
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
        let inserted = on_backend!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "INSERT INTO mcp_discovery_servers \
                 (name, format, entry, created_at, updated_at, revision) \
                 VALUES ($1, $2, $3, $4, $4, 1) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(format)
            .bind(&blob)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let inserted = done.rows_affected() == 1;
            if inserted {
                if let Some(conn) = tx.as_postgres() {
                    self.notify(conn, ChangeOp::Insert, name, Some(1)).await?;
                }
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            inserted
        });
        if !inserted {
            return Err(StoreError::Conflict(name.to_owned()));
        }
        Ok(StoredServer {
            name: name.to_owned(),
            entry: entry.clone(),
            created_at: now,
            updated_at: now,
            revision: 1,
        })
    }

    /// Replaces a stored server's entry; [`StoreError::NotFound`] if there
    /// is none. Durable when it returns.
    pub async fn replace(&self, name: &str, entry: &Value) -> Result<StoredServer, StoreError> {
        let (format, blob) = self.encode(name, entry)?;
        let now = now();
        let updated: Option<(DateTime<Utc>, i64)> = on_backend!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row = sqlx::query(
                "UPDATE mcp_discovery_servers \
                 SET format = $2, entry = $3, updated_at = $4, revision = revision + 1 \
                 WHERE name = $1 RETURNING created_at, revision",
            )
            .bind(name)
            .bind(format)
            .bind(&blob)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(row) => {
                    let created_at: DateTime<Utc> = row.try_get("created_at")?;
                    let revision: i64 = row.try_get("revision")?;
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
        });
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
    /// Durable when it returns.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let deleted = on_backend!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("DELETE FROM mcp_discovery_servers WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let deleted = done.rows_affected() == 1;
            if deleted {
                if let Some(conn) = tx.as_postgres() {
                    self.notify(conn, ChangeOp::Delete, name, None).await?;
                }
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            deleted
        });
        if deleted {
            Ok(())
        } else {
            Err(StoreError::NotFound(name.to_owned()))
        }
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
    fn default_url_is_next_to_the_config() {
        assert_eq!(Store::default_url(None), "sqlite://mcp-discovery.db");
        assert_eq!(
            Store::default_url(Some(Path::new("config.yaml"))),
            "sqlite://mcp-discovery.db"
        );
        assert_eq!(
            Store::default_url(Some(Path::new("/etc/mcp/config.yaml"))),
            "sqlite:///etc/mcp/mcp-discovery.db"
        );
        assert_eq!(
            Store::default_url(Some(Path::new("conf/x.yaml"))),
            "sqlite://conf/mcp-discovery.db"
        );
        // sqlx reads the path back, escapes and all.
        let url = Store::default_url(Some(Path::new("/tmp/a?b#c%d/x.yaml")));
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert_eq!(
            options.get_filename(),
            Path::new("/tmp/a?b#c%d/mcp-discovery.db")
        );
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
