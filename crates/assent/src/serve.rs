//! `assent serve`: open the store, create the first key on an empty store, serve HTTP until a
//! shutdown signal, then let the store finish its writes.

use assent_model::OrganizationId;
use assent_server::keys;
use assent_store::Store;
use assent_store::sqlite::{SqliteConfig, SqliteStore};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Arguments of `assent serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ASSENT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "ASSENT_DATA_DIR", default_value = "assent-data")]
    pub data_dir: PathBuf,
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
    let config = SqliteConfig::new(&args.data_dir);
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the store in {}: {e}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
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

/// On a store with no organization, creates organization `default` and its first key.
async fn bootstrap(store: &dyn Store) -> Result<Option<keys::IssuedKey>, String> {
    let count = store
        .organization_count()
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?;
    if count > 0 {
        return Ok(None);
    }
    let org = OrganizationId::parse("default").expect("'default' is a valid organization id");
    let issued = keys::issue(org, Some("bootstrap".into()));
    store
        .create_api_key(issued.record.clone())
        .await
        .map_err(|e| format!("cannot create the first API key: {e}"))?;
    Ok(Some(issued))
}
