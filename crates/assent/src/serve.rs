//! `assent serve`: open the store, create the first key on an empty store, serve HTTP until a
//! shutdown signal, then let the store finish its writes.

use assent_model::OrganizationId;
use assent_server::keys;
use assent_store::Store;
use assent_store::postgres::{PgStore, PostgresConfig};
use assent_store::sqlite::{SqliteConfig, SqliteStore};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the data lives: the embedded SQLite store, or a PostgreSQL database.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store (created if missing); ignored with
    /// `--database-url`.
    #[arg(long, env = "ASSENT_DATA_DIR", default_value = "assent-data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user:password@host:port/database`): use that database
    /// instead of the embedded store. Many servers may share it.
    #[arg(long, env = "ASSENT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most connections this process opens to PostgreSQL.
    #[arg(long, env = "ASSENT_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
}

impl StoreArgs {
    /// An embedded store in `dir`.
    pub fn sqlite(dir: impl Into<PathBuf>) -> Self {
        StoreArgs {
            data_dir: dir.into(),
            database_url: None,
            database_pool_size: 16,
        }
    }

    /// The PostgreSQL configuration, when a database URL is given.
    pub fn postgres(&self) -> Result<Option<PostgresConfig>, String> {
        match &self.database_url {
            None => Ok(None),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Some(PostgresConfig {
                    url: url.clone(),
                    pool_size: self.database_pool_size,
                }))
            }
            Some(_) => {
                Err("the database URL must start with postgres:// or postgresql://".to_owned())
            }
        }
    }

    /// Opens the store, migrating its schema.
    pub async fn open(&self) -> Result<Arc<dyn Store>, String> {
        match self.postgres()? {
            Some(config) => Ok(Arc::new(
                PgStore::connect(&config).await.map_err(|e| e.to_string())?,
            )),
            None => {
                let config = SqliteConfig::new(&self.data_dir);
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(config))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| {
                        format!("cannot open the store in {}: {e}", self.data_dir.display())
                    })?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Arguments of `assent serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ASSENT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// A server started by [`start`].
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The first API key, when this start created it (its secret is shown only here).
    pub bootstrap_key: Option<keys::IssuedKey>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningServer {
    /// Stops taking requests, finishes those under way and the store's writes.
    pub async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| format!("the server task failed: {e}"))?
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> Result<(), String> {
        let RunningServer { task, stop, .. } = self;
        let result = task
            .await
            .map_err(|e| format!("the server task failed: {e}"))?;
        drop(stop);
        result
    }

    /// A handle to stop the server from elsewhere (a signal handler).
    pub fn into_parts(
        self,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        JoinHandle<Result<(), String>>,
    ) {
        (self.addr, self.stop, self.task)
    }
}

/// Opens the store, bootstraps it, binds the address and serves in a background task.
pub async fn start(args: ServeArgs) -> Result<RunningServer, String> {
    let store = args.store.open().await?;
    let bootstrap_key = bootstrap(store.as_ref()).await?;
    let signing_key = store
        .signing_key()
        .await
        .map_err(|e| format!("cannot read the signing key: {e}"))?;
    let app = assent_server::router(store.clone(), &signing_key);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .map_err(|e| format!("the HTTP server failed: {e}"));
        store.shutdown().await;
        served
    });
    Ok(RunningServer {
        addr,
        bootstrap_key,
        stop,
        task,
    })
}

/// On a store with no organization, creates organization `default` and its first key (once,
/// even when several servers start together on one database).
async fn bootstrap(store: &dyn Store) -> Result<Option<keys::IssuedKey>, String> {
    if store
        .organization_count()
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?
        > 0
    {
        return Ok(None);
    }
    let org = OrganizationId::parse("default").expect("'default' is a valid organization id");
    let issued = keys::issue(org, Some("bootstrap".into()));
    let created = store
        .create_first_api_key(issued.record.clone())
        .await
        .map_err(|e| format!("cannot create the first API key: {e}"))?;
    Ok(created.then_some(issued))
}
