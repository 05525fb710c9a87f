//! `assent serve`: open the store, create the first key on an empty store, serve HTTP until a
//! shutdown signal, then let the store finish its writes.

use crate::listen::{self, HeadLimits};
use assent_delivery::http::HttpConfig;
use assent_delivery::schedule::RetrySchedule;
use assent_delivery::worker::{Priority, Worker, WorkerConfig};
use assent_model::OrganizationId;
use assent_model::tcf::PurposeMap;
use assent_server::ServerConfig;
use assent_server::keys;
use assent_server::ratelimit::{Rate, RateLimitConfig, RateSetting};
use assent_store::Store;
use assent_store::postgres::{PgStore, PostgresConfig};
use assent_store::sqlite::{SqliteConfig, SqliteStore};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
        self.open_with(assent_store::sqlite::MAX_READERS).await
    }

    /// Opens the store for a command that streams reads on its own (`assent export`): on
    /// SQLite, one reader thread per core rather than a server's pool, which keeps the
    /// process's memory down (measured: 104 → 55 MiB peak for 1,000,000 events) at the same
    /// speed.
    pub async fn open_for_reading(&self) -> Result<Arc<dyn Store>, String> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        self.open_with(cores.min(assent_store::sqlite::MAX_READERS))
            .await
    }

    async fn open_with(&self, readers: usize) -> Result<Arc<dyn Store>, String> {
        match self.postgres()? {
            Some(config) => Ok(Arc::new(
                PgStore::connect(&config).await.map_err(|e| e.to_string())?,
            )),
            None => {
                let config = SqliteConfig {
                    readers,
                    ..SqliteConfig::new(&self.data_dir)
                };
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
    /// How changes are delivered to integrations.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Rate limits and request limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How TCF strings are generated.
    #[command(flatten)]
    pub tcf: TcfArgs,
    /// How configured exports run.
    #[command(flatten)]
    pub exports: ExportArgs,
}

/// How the exports configured under `/v1/exports` run.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The folder that `file://` export destinations must lie in: each organization writes
    /// under `<root>/<organization id>/`, its default destination.
    #[arg(long, env = "ASSENT_EXPORT_ROOT", default_value = "assent-exports")]
    pub export_root: PathBuf,
    /// How often the scheduler looks for exports that are due.
    #[arg(long, env = "ASSENT_EXPORT_TICK", default_value = "30s", value_parser = humantime::parse_duration)]
    pub export_tick: Duration,
    /// The wait before a failed scheduled run is tried again (5 tries per date).
    #[arg(long, env = "ASSENT_EXPORT_RETRY_DELAY", default_value = "5m", value_parser = humantime::parse_duration)]
    pub export_retry_delay: Duration,
    /// How long a run holds its export; if its node dies, another takes it over after this.
    #[arg(long, env = "ASSENT_EXPORT_LEASE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub export_lease: Duration,
}

impl ExportArgs {
    /// The settings of exports, with the root made absolute.
    pub fn settings(&self) -> Result<assent_export::ExportSettings, String> {
        let root = std::path::absolute(&self.export_root)
            .map_err(|e| format!("--export-root {}: {e}", self.export_root.display()))?;
        Ok(assent_export::ExportSettings {
            tick: self.export_tick,
            retry_delay: self.export_retry_delay,
            lease: self.export_lease,
            file_root: root,
        })
    }
}

/// How `$generate_tcfcs=true` maps purposes to IAB TCF numbers.
#[derive(Debug, Clone, Default, Args)]
pub struct TcfArgs {
    /// A JSON file mapping purpose ids to IAB TCF purposes and special features
    /// (`{"purposes": {"cookies": 1, ...}, "special_features": {"geolocation_data": 1}}`);
    /// it replaces the default, Didomi's ids.
    #[arg(long, env = "ASSENT_TCF_PURPOSE_MAP")]
    pub tcf_purpose_map: Option<PathBuf>,
}

impl TcfArgs {
    /// The purpose map: the file's, or Didomi's ids without one. The error is one sentence
    /// naming the file.
    pub fn load(&self) -> Result<PurposeMap, String> {
        let Some(path) = &self.tcf_purpose_map else {
            return Ok(PurposeMap::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the TCF purpose map {}: {e}", path.display()))?;
        PurposeMap::from_json(&text)
            .map_err(|e| format!("the TCF purpose map {} is not valid: {e}", path.display()))
    }
}

/// Rate limits and limits on how requests arrive.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Requests per organization to every `/v1` route but `/v1/consents/*`, and session
    /// requests per API key, as `N/DURATION` (`100/15s`), or `off`.
    #[arg(long, env = "ASSENT_RATE_LIMIT", default_value = "100/15s")]
    pub rate_limit: RateSetting,
    /// Requests per organization to `/v1/consents/*`, as `N/DURATION` (`1000/1s`), or `off`.
    #[arg(long, env = "ASSENT_CONSENTS_RATE_LIMIT", default_value = "off")]
    pub consents_rate_limit: RateSetting,
    /// Longest time a client may take to send a request's headers; then the connection is
    /// closed (`10s`; `0s`: no limit).
    #[arg(long, env = "ASSENT_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Longest time a request may take once its headers are in, body included; then it is
    /// answered 408 (`30s`; `0s`: no limit).
    #[arg(long, env = "ASSENT_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            rate_limit: RateSetting(Some(Rate::DEFAULT)),
            consents_rate_limit: RateSetting(None),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl LimitArgs {
    /// No rate limit; the request limits as they are.
    pub fn without_rate_limits(self) -> Self {
        LimitArgs {
            rate_limit: RateSetting(None),
            consents_rate_limit: RateSetting(None),
            ..self
        }
    }

    /// The HTTP layer's configuration.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            rate_limits: RateLimitConfig {
                api: self.rate_limit.0,
                consents: self.consents_rate_limit.0,
            },
            request_timeout: Some(self.request_timeout).filter(|d| !d.is_zero()),
            ..ServerConfig::default()
        }
    }

    /// The limits on how a request's head arrives.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            header_timeout: Some(self.header_timeout).filter(|d| !d.is_zero()),
            ..HeadLimits::default()
        }
    }
}

/// Settings of the delivery worker (webhooks and connectors).
#[derive(Debug, Clone, Args)]
pub struct DeliveryArgs {
    /// Delays before each retry of a failed delivery, comma-separated (`5s,5m,30m,2h,5h,10h,10h`);
    /// when they run out the delivery is parked. Each delay gets ±10% jitter.
    #[arg(
        long,
        env = "ASSENT_DELIVERY_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,10h"
    )]
    pub delivery_retry_schedule: RetrySchedule,
    /// Longest time a delivery request may take, connection included (`15s`).
    #[arg(long, env = "ASSENT_DELIVERY_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub delivery_timeout: Duration,
    /// Networks that deliveries may reach although they are private, loopback or link-local,
    /// comma-separated CIDRs (`10.0.0.0/8,127.0.0.1/32`). None by default.
    #[arg(long, env = "ASSENT_DELIVERY_ALLOW_NETWORKS", value_delimiter = ',')]
    pub delivery_allow_networks: Vec<ipnet::IpNet>,
    /// Most requests in flight per integration.
    #[arg(long, env = "ASSENT_DELIVERY_CONCURRENCY", default_value_t = 32)]
    pub delivery_concurrency: usize,
    /// How long delivered deliveries stay in the log (`7days`).
    #[arg(long, env = "ASSENT_DELIVERY_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub delivery_retention: Duration,
    /// CPU priority of the delivery threads: `low` (below request handling, so that a burst
    /// of writes is not slowed much by the deliveries it causes; they catch up after it),
    /// `idle` (only when no request needs a CPU) or `normal`.
    #[arg(long, env = "ASSENT_DELIVERY_PRIORITY", default_value = "low")]
    pub delivery_priority: DeliveryPriority,
}

/// CPU priority of the delivery threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryPriority {
    /// Below request handling.
    Low,
    /// As request handling.
    Normal,
    /// Only when no request needs the CPU.
    Idle,
}

impl Default for DeliveryArgs {
    fn default() -> Self {
        DeliveryArgs {
            delivery_retry_schedule: RetrySchedule::default(),
            delivery_timeout: Duration::from_secs(15),
            delivery_allow_networks: Vec::new(),
            delivery_concurrency: 32,
            delivery_retention: Duration::from_secs(7 * 24 * 3600),
            delivery_priority: DeliveryPriority::Low,
        }
    }
}

impl DeliveryArgs {
    /// The worker's configuration.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            schedule: self.delivery_retry_schedule.clone(),
            http: HttpConfig {
                timeout: self.delivery_timeout,
                connect_timeout: self.delivery_timeout.min(Duration::from_secs(5)),
                allowed_networks: self.delivery_allow_networks.clone(),
                ..HttpConfig::default()
            },
            concurrency: self.delivery_concurrency.max(1),
            retention: self.delivery_retention,
            priority: match self.delivery_priority {
                DeliveryPriority::Low => Priority::Low,
                DeliveryPriority::Normal => Priority::Normal,
                DeliveryPriority::Idle => Priority::Idle,
            },
            ..WorkerConfig::default()
        }
    }
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
    let tcf_purpose_map = Arc::new(args.tcf.load()?);
    let store = args.store.open().await?;
    let bootstrap_key = bootstrap(store.as_ref()).await?;
    let signing_key = store
        .signing_key()
        .await
        .map_err(|e| format!("cannot read the signing key: {e}"))?;
    let exports = args.exports.settings()?;
    let config = ServerConfig {
        tcf_purpose_map,
        exports: exports.clone(),
        ..args.limits.server_config()
    };
    let app = assent_server::router(store.clone(), &signing_key, &config);
    let head_limits = args.limits.head_limits();
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let worker = Worker::start(store.clone(), args.delivery.worker_config())
        .map_err(|e| format!("cannot start the delivery worker: {e}"))?;
    let scheduler = assent_export::Scheduler::start(store.clone(), exports);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        listen::serve(listener, app, head_limits, async {
            let _ = stopped.await;
        })
        .await;
        scheduler.stop().await;
        worker.stop().await;
        store.shutdown().await;
        Ok(())
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
