//! The embedded SQLite store: one file in a data directory, one writer thread with group
//! commit, a pool of read connections.

mod admin;
mod cache;
pub(crate) mod codec;
mod exports;
mod outbox;
mod read;
mod readers;
mod registry;
mod render;
mod schema;
mod shared;
mod writer;

pub use schema::SCHEMA_VERSION;
pub use writer::WriterConfig;

use crate::integrations::{AttemptResult, DeliveriesQuery, DueDelivery};
use crate::{
    ApiKey, ExportRecord, PREFERENCE_CENTER, SETTINGS, SecretRecord, Stamped, Store, StoreError,
    UsersPage, WriteOptions, decode_cursor, encode_cursor,
};
use assent_model::event::EventPatch;
use assent_model::integration::{Delivery, Integration, IntegrationPatch};
use assent_model::look::PreferenceCenterLook;
use assent_model::proof::ProofFile;
use assent_model::purpose::Purpose;
use assent_model::query::{EventsQuery, Page, UsersQuery};
use assent_model::settings::OrganizationSettings;
use assent_model::stats::ConsentCounts;
use assent_model::status::{ConsentsView, status_at};
use assent_model::user::{NewUser, UserPatch, UserRecord, UserSelector};
use assent_model::{
    ConsentEvent, DomainError, EventId, EventInput, EventStatus, OrganizationId, Regulation,
    Timestamp,
};
use async_trait::async_trait;
use read::db;
use rusqlite::{Connection, OpenFlags};
use shared::Shared;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use tokio::sync::{Semaphore, oneshot};
use writer::{AdminOp, Command, Job, Reply, Writer};

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "assent.db";
/// Name of the file holding the key that signs session tokens.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// Name of the lock file that keeps two servers off one data directory.
const LOCK_FILE: &str = "assent.lock";
/// Most write requests waiting for the writer.
const QUEUE_BOUND: usize = 4096;
/// Reader threads, each with its own connection and page cache; more concurrent reads wait
/// in their queue. Reads take microseconds: two cores gain nothing from more.
pub const MAX_READERS: usize = 8;

/// How to open a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Page cache of the writer connection, in MiB.
    pub writer_cache_mib: u32,
    /// Page cache of each read connection, in MiB.
    pub reader_cache_mib: u32,
    /// Reader threads (each with its connection); [`MAX_READERS`] by default. A process that
    /// only streams reads (an export) needs no more than its cores: each reader thread also
    /// keeps its own allocator heap.
    pub readers: usize,
    /// Tuning of the writer.
    pub writer: WriterConfig,
}

impl SqliteConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            data_dir: data_dir.into(),
            writer_cache_mib: 32,
            reader_cache_mib: 2,
            readers: MAX_READERS,
            writer: WriterConfig::default(),
        }
    }
}

/// The embedded SQLite implementation of [`Store`].
pub struct SqliteStore {
    data_dir: PathBuf,
    jobs: RwLock<Option<mpsc::Sender<Job>>>,
    queue: Arc<Semaphore>,
    readers: readers::Readers,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Renders the bodies of claimed deliveries kept as references to the log.
    renderer: Arc<Mutex<render::Renderer>>,
    _checkpointer: Checkpointer,
    _lock: File,
}

/// Copies the write-ahead log back into the database file on its own thread, so that the
/// writer never stalls on it; stops when dropped.
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// WAL size (in pages) past which the checkpointer also waits for readers, to stop growth.
const WAL_RESTART_PAGES: i64 = 100_000;

fn start_checkpointer(path: &Path, shared: Arc<Shared>) -> Result<Checkpointer, StoreError> {
    let conn = open_connection(path, 2)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("assent-checkpoint".into())
        .spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                // (busy, wal pages, pages copied)
                let done: rusqlite::Result<(i64, i64, i64)> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                match done {
                    Ok((_, wal, _)) if wal > WAL_RESTART_PAGES => {
                        let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
                }
                shared
                    .checkpoints
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the checkpointer: {e}")))?;
    Ok(Checkpointer { stop })
}

fn open_connection(path: &Path, cache_mib: u32) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{};",
        u64::from(cache_mib) * 1024
    ))
    .map_err(db)?;
    Ok(conn)
}

fn open_migrated(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
    })?;
    let mut conn = open_connection(&data_dir.join(DATABASE_FILE), 8)?;
    schema::migrate(&mut conn).map_err(StoreError::Unavailable)?;
    Ok(conn)
}

/// Stores an API key (creating its organization if needed) straight into the database of
/// `data_dir`, without a running server. Safe while a server runs on the same directory.
pub fn create_api_key_offline(data_dir: &Path, key: &ApiKey) -> Result<(), StoreError> {
    let mut conn = open_migrated(data_dir)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute(
        "INSERT INTO organizations (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
        rusqlite::params![key.organization_id.as_str(), key.created_at.millis()],
    )
    .map_err(db)?;
    tx.execute(
        "INSERT INTO api_keys (org_key, id, key, name, enabled, secret_hash, created_at, updated_at)
         SELECT org_key, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM organizations WHERE id = ?1",
        rusqlite::params![
            key.organization_id.as_str(),
            key.id,
            key.key,
            key.name,
            key.enabled,
            key.secret_hash,
            key.created_at.millis(),
            key.updated_at.millis()
        ],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `config.data_dir`: takes the directory's lock,
    /// migrates the schema, replays events not yet folded into their users, and starts the
    /// writer thread.
    pub fn open(config: SqliteConfig) -> Result<SqliteStore, StoreError> {
        let data_dir = config.data_dir.clone();
        let mut conn = open_migrated(&data_dir)?;
        let lock = File::create(data_dir.join(LOCK_FILE)).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the lock file in {}: {e}",
                data_dir.display()
            ))
        })?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Unavailable(format!(
                "another assent server is already using {}",
                data_dir.display()
            )));
        }
        // Checkpoints run on their own thread (below), not inside the writer's commits.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
            u64::from(config.writer_cache_mib) * 1024
        ))
        .map_err(db)?;
        schema::migrate(&mut conn).map_err(StoreError::Unavailable)?;
        let shared = Arc::new(Shared::default());
        let checkpointer = start_checkpointer(&data_dir.join(DATABASE_FILE), shared.clone())?;
        let mut writer = Writer::new(conn, shared.clone(), config.writer.clone())?;
        let replayed = writer.replay()?;
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                "folded events written before the last stop into their users"
            );
        }
        let db_path = data_dir.join(DATABASE_FILE);
        let reader_cache = config.reader_cache_mib;
        let open_reader = move || {
            let conn = open_connection(&db_path, reader_cache)?;
            conn.execute_batch("PRAGMA query_only = 1;").map_err(db)?;
            Ok(conn)
        };
        let readers =
            readers::Readers::start(config.readers.max(1), shared.clone(), open_reader.clone())?;
        let renderer = Arc::new(Mutex::new(render::Renderer::new(
            shared.clone(),
            open_reader,
        )));
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("assent-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            data_dir,
            jobs: RwLock::new(Some(tx)),
            queue: Arc::new(Semaphore::new(QUEUE_BOUND)),
            readers,
            writer: Mutex::new(Some(handle)),
            renderer,
            _checkpointer: checkpointer,
            _lock: lock,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn submit(&self, command: Command) -> Result<Reply, StoreError> {
        let permit = self
            .queue
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        let (reply, answer) = oneshot::channel();
        {
            let jobs = self.jobs.read().unwrap_or_else(|e| e.into_inner());
            let sender = jobs
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable("the store is shutting down".into()))?;
            sender
                .send(Job {
                    command,
                    reply,
                    _permit: permit,
                })
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| StoreError::Internal("the writer dropped a request".into()))?
    }

    /// Runs `f` on a read connection, on a reader thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Shared) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.run(f).await
    }
}

impl SqliteStore {
    /// Runs `f` on the writer's connection, in its transaction, with the key of `org`
    /// (created if needed).
    async fn admin_write<T, F>(&self, org: &OrganizationId, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        let op = AdminOp(Box::new(move |conn, org_key| {
            f(conn, org_key).map(|t| Box::new(t) as Box<dyn std::any::Any + Send>)
        }));
        match self
            .submit(Command::Admin {
                org: org.clone(),
                op,
            })
            .await?
        {
            Reply::Admin(any) => any
                .downcast::<T>()
                .map(|t| *t)
                .map_err(|_| StoreError::Internal("unexpected answer from the writer".into())),
            other => Err(unexpected(other)),
        }
    }

    /// Runs `f` on a reader with the key of `org`, or answers `absent` when the organization
    /// has never been stored.
    async fn admin_read<T, F>(&self, org: &OrganizationId, absent: T, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        let org = org.clone();
        self.read(
            move |conn, shared| match read::org_key(conn, shared, &org)? {
                Some(org_key) => f(conn, org_key),
                None => Ok(absent),
            },
        )
        .await
    }
}

fn unexpected(reply: Reply) -> StoreError {
    StoreError::Internal(format!("unexpected writer reply {reply:?}"))
}

/// Finds a user and returns its current state, or the selector's "not found" error.
fn current_user_of(
    conn: &Connection,
    shared: &Shared,
    org: &OrganizationId,
    user: &UserSelector,
) -> Result<shared::UserEntry, StoreError> {
    let org_key = read::org_key(conn, shared, org)?.ok_or_else(|| user.not_found())?;
    let found = read::find_user(conn, org_key, user)?.ok_or_else(|| user.not_found())?;
    read::current_user(conn, shared, org, org_key, found.key)?
        .ok_or_else(|| user.not_found().into())
}

/// Every event of a user; the overlay is read before the index so nothing falls in between.
fn all_events_of(
    conn: &Connection,
    org: &OrganizationId,
    entry: &shared::UserEntry,
) -> Result<Vec<ConsentEvent>, StoreError> {
    Ok(read::user_events(conn, org, entry.keys(), &entry.pending)?
        .into_iter()
        .map(|r| r.event)
        .collect())
}

#[async_trait]
impl Store for SqliteStore {
    /// Stops taking writes, lets the writer finish the queue and flush, and waits for it.
    async fn shutdown(&self) {
        self.jobs.write().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self
            .jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Err(StoreError::Unavailable("the store is shutting down".into()));
        }
        self.read(|conn, _| {
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(db)?;
            if version == SCHEMA_VERSION {
                Ok(())
            } else {
                Err(StoreError::Unavailable(format!(
                    "schema version {version}, expected {SCHEMA_VERSION}"
                )))
            }
        })
        .await
    }

    async fn signing_key(&self) -> Result<Vec<u8>, StoreError> {
        let path = self.data_dir.join(SIGNING_KEY_FILE);
        tokio::task::spawn_blocking(move || read_or_create_key(&path))
            .await
            .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn organization_count(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            conn.query_row("SELECT count(*) FROM organizations", [], |r| r.get(0))
                .map_err(db)
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        match self.submit(Command::CreateApiKey(key)).await? {
            Reply::ApiKey(k) => Ok(k),
            other => Err(unexpected(other)),
        }
    }

    async fn create_first_api_key(&self, key: ApiKey) -> Result<bool, StoreError> {
        // One server per data directory: no other process can create the first key meanwhile.
        if self.organization_count().await? > 0 {
            return Ok(false);
        }
        self.create_api_key(key).await.map(|_| true)
    }

    async fn find_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn, _| read::api_key(conn, &key)).await
    }

    async fn list_api_keys(&self, org: &OrganizationId) -> Result<Vec<ApiKey>, StoreError> {
        let o = org.clone();
        self.admin_read(org, Vec::new(), move |conn, k| {
            admin::list_keys(conn, &o, k)
        })
        .await
    }

    async fn get_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_read(org, None, move |conn, k| admin::find_key(conn, &o, k, &i))
            .await?
            .ok_or_else(|| StoreError::not_found(format!("API key '{id}' not found")))
    }

    async fn update_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        let org = key.organization_id.clone();
        self.admin_write(&org, move |conn, k| {
            admin::update_key(conn, k, &key)?;
            Ok(key)
        })
        .await
    }

    async fn delete_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_write(org, move |conn, k| admin::delete_key(conn, &o, k, &i))
            .await
    }

    async fn create_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError> {
        let org = export.organization_id.clone();
        self.admin_write(&org, move |conn, k| {
            exports::create(conn, k, &export)?;
            Ok(export)
        })
        .await
    }

    async fn list_exports(&self, org: &OrganizationId) -> Result<Vec<ExportRecord>, StoreError> {
        let o = org.clone();
        self.admin_read(org, Vec::new(), move |conn, k| exports::list(conn, &o, k))
            .await
    }

    async fn get_export(&self, org: &OrganizationId, id: &str) -> Result<ExportRecord, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_read(org, None, move |conn, k| exports::get(conn, &o, k, &i))
            .await?
            .ok_or_else(|| exports::not_found(id))
    }

    async fn update_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError> {
        let org = export.organization_id.clone();
        self.admin_write(&org, move |conn, k| {
            exports::update(conn, k, &export)?;
            Ok(export)
        })
        .await
    }

    async fn delete_export(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        let i = id.to_owned();
        self.admin_write(org, move |conn, k| exports::delete(conn, k, &i))
            .await
    }

    async fn due_exports(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(OrganizationId, String)>, StoreError> {
        self.read(move |conn, _| exports::due(conn, now, limit))
            .await
    }

    async fn claim_export(
        &self,
        org: &OrganizationId,
        id: &str,
        now: Timestamp,
        lease_until: Timestamp,
        only_due: bool,
    ) -> Result<Option<ExportRecord>, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_write(org, move |conn, k| {
            exports::claim(conn, &o, k, &i, now, lease_until, only_due)
        })
        .await
    }

    async fn save_export_run(
        &self,
        org: &OrganizationId,
        id: &str,
        state: assent_model::export::ExportState,
        next_run_at: Option<Timestamp>,
        release: bool,
    ) -> Result<(), StoreError> {
        let i = id.to_owned();
        self.admin_write(org, move |conn, k| {
            exports::save_run(conn, k, &i, &state, next_run_at, release)
        })
        .await
    }

    async fn create_purpose(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError> {
        self.admin_write(org, move |conn, k| {
            registry::create(conn, k, &purpose)?;
            Ok(purpose)
        })
        .await
    }

    async fn list_purposes(&self, org: &OrganizationId) -> Result<Vec<Purpose>, StoreError> {
        self.admin_read(org, Vec::new(), registry::list).await
    }

    async fn get_purpose(
        &self,
        org: &OrganizationId,
        id: &str,
        version: Option<u32>,
    ) -> Result<Purpose, StoreError> {
        let i = id.to_owned();
        self.admin_read(org, None, move |conn, k| {
            registry::get(conn, k, &i, version)
        })
        .await?
        .ok_or_else(|| match version {
            None => registry::not_found(id),
            Some(v) => StoreError::not_found(format!("purpose '{id}' has no version {v}")),
        })
    }

    async fn list_purpose_versions(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Vec<Purpose>, StoreError> {
        let i = id.to_owned();
        let versions = self
            .admin_read(org, Vec::new(), move |conn, k| {
                registry::versions(conn, k, &i)
            })
            .await?;
        if versions.is_empty() {
            return Err(registry::not_found(id));
        }
        Ok(versions)
    }

    async fn add_purpose_version(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError> {
        self.admin_write(org, move |conn, k| {
            registry::add_version(conn, k, &purpose)?;
            Ok(purpose)
        })
        .await
    }

    async fn delete_purpose(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        let i = id.to_owned();
        self.admin_write(org, move |conn, k| registry::delete(conn, k, &i))
            .await
    }

    async fn get_settings(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<OrganizationSettings>>, StoreError> {
        self.admin_read(org, None, |conn, k| {
            registry::get_setting(conn, k, SETTINGS)
        })
        .await
    }

    async fn put_settings(
        &self,
        org: &OrganizationId,
        settings: Stamped<OrganizationSettings>,
    ) -> Result<(), StoreError> {
        self.admin_write(org, move |conn, k| {
            registry::put_setting(conn, k, SETTINGS, &settings)
        })
        .await
    }

    async fn get_preference_center(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<PreferenceCenterLook>>, StoreError> {
        self.admin_read(org, None, |conn, k| {
            registry::get_setting(conn, k, PREFERENCE_CENTER)
        })
        .await
    }

    async fn put_preference_center(
        &self,
        org: &OrganizationId,
        look: Stamped<PreferenceCenterLook>,
    ) -> Result<(), StoreError> {
        self.admin_write(org, move |conn, k| {
            registry::put_setting(conn, k, PREFERENCE_CENTER, &look)
        })
        .await
    }

    async fn consent_counts(
        &self,
        org: &OrganizationId,
        regulation: &Regulation,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<ConsentCounts, StoreError> {
        let regulation = regulation.clone();
        self.admin_read(org, ConsentCounts::default(), move |conn, k| {
            registry::consent_counts(conn, k, &regulation, start, end)
        })
        .await
    }

    async fn create_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError> {
        let org = secret.organization_id.clone();
        self.admin_write(&org, move |conn, k| {
            admin::create_secret(conn, k, &secret)?;
            Ok(secret)
        })
        .await
    }

    async fn list_secrets(&self, org: &OrganizationId) -> Result<Vec<SecretRecord>, StoreError> {
        let o = org.clone();
        self.admin_read(org, Vec::new(), move |conn, k| {
            admin::list_secrets(conn, &o, k)
        })
        .await
    }

    async fn get_secret(&self, org: &OrganizationId, id: &str) -> Result<SecretRecord, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_read(org, None, move |conn, k| {
            admin::get_secret(conn, &o, k, &i).map(Some)
        })
        .await?
        .ok_or_else(|| StoreError::not_found(format!("secret '{id}' not found")))
    }

    async fn update_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError> {
        let org = secret.organization_id.clone();
        self.admin_write(&org, move |conn, k| {
            admin::update_secret(conn, k, &secret)?;
            Ok(secret)
        })
        .await
    }

    async fn delete_secret(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<SecretRecord, StoreError> {
        let (o, i) = (org.clone(), id.to_owned());
        self.admin_write(org, move |conn, k| admin::delete_secret(conn, &o, k, &i))
            .await
    }

    async fn put_proofs(
        &self,
        org: &OrganizationId,
        proofs: Vec<ProofFile>,
    ) -> Result<(), StoreError> {
        if proofs.is_empty() {
            return Ok(());
        }
        self.admin_write(org, move |conn, k| {
            admin::put_proofs(conn, k, &proofs, Timestamp::now())
        })
        .await
    }

    async fn get_proof(&self, org: &OrganizationId, id: &str) -> Result<ProofFile, StoreError> {
        let i = id.to_owned();
        self.admin_read(org, None, move |conn, k| {
            admin::get_proof(conn, k, &i).map(Some)
        })
        .await?
        .ok_or_else(|| StoreError::not_found(format!("proof '{id}' not found")))
    }

    async fn append_events(
        &self,
        org: &OrganizationId,
        events: Vec<EventInput>,
        options: WriteOptions,
    ) -> Result<Vec<ConsentEvent>, StoreError> {
        match self
            .submit(Command::Append {
                org: org.clone(),
                events,
                announce: !options.disable_integrations,
                origin: options.origin,
            })
            .await?
        {
            Reply::Events(events) => Ok(events),
            other => Err(unexpected(other)),
        }
    }

    async fn get_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
    ) -> Result<ConsentEvent, StoreError> {
        let (org, id) = (org.clone(), id.clone());
        self.read(move |conn, shared| {
            let not_found = || StoreError::not_found(format!("event '{id}' not found"));
            let org_key = read::org_key(conn, shared, &org)?.ok_or_else(not_found)?;
            read::event_by_id(conn, &org, org_key, &id)?
                .map(|r| r.event)
                .ok_or_else(not_found)
        })
        .await
    }

    async fn list_events(
        &self,
        org: &OrganizationId,
        query: &EventsQuery,
    ) -> Result<Page<ConsentEvent>, StoreError> {
        let (org, query) = (org.clone(), query.clone());
        self.read(move |conn, shared| {
            // A user with no events is a user that does not exist yet: an empty page.
            match current_user_of(conn, shared, &org, &query.user) {
                Ok(entry) => Ok(query.page(all_events_of(conn, &org, &entry)?)),
                Err(StoreError::Domain(DomainError::NotFound(_))) => Ok(query.page(Vec::new())),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn patch_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        patch: EventPatch,
        options: WriteOptions,
    ) -> Result<ConsentEvent, StoreError> {
        match self
            .submit(Command::PatchEvent {
                org: org.clone(),
                id: id.clone(),
                patch,
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::Event(e) => Ok(*e),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        options: WriteOptions,
    ) -> Result<(), StoreError> {
        match self
            .submit(Command::DeleteEvent {
                org: org.clone(),
                id: id.clone(),
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::Deleted(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_events(
        &self,
        org: &OrganizationId,
        query: EventsQuery,
        options: WriteOptions,
    ) -> Result<u64, StoreError> {
        match self
            .submit(Command::DeleteEvents {
                org: org.clone(),
                query,
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::Deleted(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn create_user(
        &self,
        org: &OrganizationId,
        user: NewUser,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        match self
            .submit(Command::CreateUser {
                org: org.clone(),
                user,
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::User(u) => Ok(*u),
            other => Err(unexpected(other)),
        }
    }

    async fn get_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
    ) -> Result<UserRecord, StoreError> {
        let (org, user) = (org.clone(), user.clone());
        self.read(move |conn, shared| Ok(current_user_of(conn, shared, &org, &user)?.record))
            .await
    }

    async fn get_user_at(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        regulation: &Regulation,
        at: Timestamp,
    ) -> Result<(UserRecord, ConsentsView), StoreError> {
        let (org, user, regulation) = (org.clone(), user.clone(), regulation.clone());
        self.read(move |conn, shared| {
            let entry = current_user_of(conn, shared, &org, &user)?;
            let events = all_events_of(conn, &org, &entry)?;
            let view = status_at(
                events
                    .iter()
                    .filter(|e| e.status == EventStatus::Confirmed)
                    .map(|e| (&e.regulation, &*e.body, e.stamp())),
                &regulation,
                at.millis(),
            );
            Ok((entry.record, view))
        })
        .await
    }

    async fn list_users(
        &self,
        org: &OrganizationId,
        query: &UsersQuery,
    ) -> Result<UsersPage, StoreError> {
        let (org, query) = (org.clone(), query.clone());
        let mut after = match &query.cursor {
            Some(c) => decode_cursor(c)?,
            None => 0,
        };
        self.read(move |conn, shared| {
            let Some(org_key) = read::org_key(conn, shared, &org)? else {
                return Ok(UsersPage {
                    data: Vec::new(),
                    cursor: None,
                });
            };
            let mut data = Vec::new();
            loop {
                let batch = read::user_rows_after(conn, &org, org_key, after, 500)?;
                let exhausted = batch.len() < 500;
                for row in batch {
                    after = row.key;
                    // Read again overlay first, then row: the page may predate a flush.
                    let Some(entry) = read::current_user(conn, shared, &org, org_key, row.key)?
                    else {
                        continue;
                    };
                    let doc = serde_json::to_value(entry.record.view(&query.regulation))
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    if query.filter.matches(&doc) {
                        data.push(entry.record);
                        if data.len() == query.limit {
                            let more =
                                !read::user_rows_after(conn, &org, org_key, after, 1)?.is_empty();
                            return Ok(UsersPage {
                                data,
                                cursor: more.then(|| encode_cursor(after)),
                            });
                        }
                    }
                }
                if exhausted {
                    return Ok(UsersPage { data, cursor: None });
                }
            }
        })
        .await
    }

    async fn patch_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        patch: UserPatch,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        match self
            .submit(Command::PatchUser {
                org: org.clone(),
                user: user.clone(),
                patch,
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::User(u) => Ok(*u),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        match self
            .submit(Command::DeleteUser {
                org: org.clone(),
                user: user.clone(),
                announce: !options.disable_integrations,
            })
            .await?
        {
            Reply::User(u) => Ok(*u),
            other => Err(unexpected(other)),
        }
    }

    async fn create_integration(
        &self,
        integration: Integration,
    ) -> Result<Integration, StoreError> {
        match self
            .submit(Command::CreateIntegration(Box::new(integration)))
            .await?
        {
            Reply::Integration(i) => Ok(*i),
            other => Err(unexpected(other)),
        }
    }

    async fn list_integrations(
        &self,
        org: &OrganizationId,
    ) -> Result<Vec<Integration>, StoreError> {
        let org = org.clone();
        self.read(
            move |conn, shared| match read::org_key(conn, shared, &org)? {
                Some(org_key) => outbox::list(conn, &org, org_key),
                None => Ok(Vec::new()),
            },
        )
        .await
    }

    async fn get_integration(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Integration, StoreError> {
        let (org, id) = (org.clone(), id.to_owned());
        self.read(move |conn, shared| Ok(integration_of(conn, shared, &org, &id)?.integration))
            .await
    }

    async fn patch_integration(
        &self,
        org: &OrganizationId,
        id: &str,
        patch: IntegrationPatch,
    ) -> Result<Integration, StoreError> {
        match self
            .submit(Command::PatchIntegration {
                org: org.clone(),
                id: id.to_owned(),
                patch: Box::new(patch),
            })
            .await?
        {
            Reply::Integration(i) => Ok(*i),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_integration(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        match self
            .submit(Command::DeleteIntegration {
                org: org.clone(),
                id: id.to_owned(),
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn list_deliveries(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        query: &DeliveriesQuery,
    ) -> Result<Page<Delivery>, StoreError> {
        let (org, id, query) = (org.clone(), integration_id.to_owned(), query.clone());
        self.read(move |conn, shared| {
            let rec = integration_of(conn, shared, &org, &id)?;
            outbox::list_deliveries(conn, &rec, &query)
        })
        .await
    }

    async fn retry_delivery(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        delivery_id: &str,
    ) -> Result<Delivery, StoreError> {
        match self
            .submit(Command::RetryDelivery {
                org: org.clone(),
                integration_id: integration_id.to_owned(),
                delivery_id: delivery_id.to_owned(),
            })
            .await?
        {
            Reply::Delivery(d) => Ok(*d),
            other => Err(unexpected(other)),
        }
    }

    async fn active_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        self.read(|conn, _| outbox::active(conn)).await
    }

    async fn claim_deliveries(
        &self,
        integration: &Integration,
        _now: Timestamp,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        match self
            .submit(Command::ClaimDeliveries {
                integration: Box::new(integration.clone()),
                limit,
                lease,
            })
            .await?
        {
            Reply::Due(due) => Ok(due),
            other => Err(unexpected(other)),
        }
    }

    async fn render_due(&self, due: Vec<DueDelivery>) -> Result<Vec<DueDelivery>, StoreError> {
        if due.iter().all(|d| d.unrendered.is_none()) {
            return Ok(due);
        }
        let renderer = self.renderer.clone();
        tokio::task::spawn_blocking(move || {
            renderer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .render_due(due)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("rendering deliveries failed: {e}")))
    }

    async fn record_attempts(
        &self,
        integration: &Integration,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError> {
        match self
            .submit(Command::RecordAttempts {
                integration: Box::new(integration.clone()),
                results,
            })
            .await?
        {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError> {
        match self.submit(Command::PruneDeliveries { before }).await? {
            Reply::Deleted(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

/// An integration of `org`, or "not found".
fn integration_of(
    conn: &Connection,
    shared: &Shared,
    org: &OrganizationId,
    id: &str,
) -> Result<outbox::IntegrationRecord, StoreError> {
    let not_found = || StoreError::not_found(format!("integration '{id}' not found"));
    let org_key = read::org_key(conn, shared, org)?.ok_or_else(not_found)?;
    outbox::find(conn, org, org_key, id)?.ok_or_else(not_found)
}

/// Reads the signing key at `path`, or makes a random one and writes it there (readable by
/// the owner only).
fn read_or_create_key(path: &Path) -> Result<Vec<u8>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => {
            return Err(StoreError::Internal(format!(
                "{} is shorter than 32 bytes; remove it to make a new key",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    }
    let key: [u8; 32] = rand::random();
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", path.display())))?;
    Ok(key.to_vec())
}
