//! Load scenarios for Assent. Each prints one JSON line of results; `bench/run.sh` runs them
//! against a release server and keeps the median of three runs.

mod http;
mod integrations;
mod receiver;
mod workload;

/// mimalloc: the write path allocates per event, and glibc's allocator spent a third of the
/// writer's time in malloc and free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Load scenarios for Assent.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Batches of events over many users, from concurrent clients.
    Ingest(IngestArgs),
    /// One event per request, from concurrent clients.
    Single(IngestArgs),
    /// Creates `--users` users quickly (one event each, in batches of 100).
    Seed(Target),
    /// `GET /v1/consents/users/{id}` over `--users` users.
    Reads(ReadArgs),
    /// The store alone, without HTTP: the ceiling of the write path.
    Raw(RawArgs),
    /// Request parsing and validation alone, on one core.
    Parse,
    /// Webhook deliveries: a receiver, one integration pointing at it, events written until
    /// `--changes` changes are expected, then the rate at which they arrive (the server must
    /// allow loopback: `ASSENT_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8`).
    Deliveries(DeliveriesArgs),
}

/// Where the server is and how to log in.
#[derive(Args, Clone)]
struct Target {
    /// Base URL of the server; several, comma-separated, spread the clients over nodes
    /// (client `i` talks to URL `i mod n`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Organization.
    #[arg(long, default_value = "default")]
    org: String,
    /// API key.
    #[arg(long, env = "ASSENT_BENCH_KEY")]
    key: String,
    /// API secret.
    #[arg(long, env = "ASSENT_BENCH_SECRET")]
    secret: String,
    /// Number of distinct users.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
}

#[derive(Args, Clone)]
struct IngestArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request (1 for the single scenario).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Stop after this many events instead (for building a large store).
    #[arg(long)]
    total: Option<u64>,
    /// Event ids: `none` (the server makes them), `v7` or `v4` (client ids).
    #[arg(long, default_value = "none")]
    ids: String,
    /// Before the load, start a webhook receiver that answers 200 at once and create this
    /// many `webhook-http` integrations pointing at it (the server must allow loopback:
    /// `ASSENT_DELIVERY_ALLOW_NETWORKS=127.0.0.0/8`).
    #[arg(long, default_value_t = 0)]
    integrations: usize,
    /// Before the load, register this many purposes (the four the events name first, then
    /// others), each with a preference of three values and two channels: every event then
    /// records purpose versions.
    #[arg(long, default_value_t = 0)]
    purposes: usize,
}

#[derive(Args, Clone)]
struct DeliveriesArgs {
    #[command(flatten)]
    target: Target,
    /// Changes to deliver (events are written until that many are expected).
    #[arg(long, default_value_t = 100_000)]
    changes: u64,
    /// Concurrent writing clients (one connection each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Give up when no delivery arrived for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall: u64,
    /// Give up when deliveries are still missing this many seconds after the end of ingest.
    #[arg(long, default_value_t = 600)]
    max_wait: u64,
}

#[derive(Args, Clone)]
struct ReadArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

#[derive(Args, Clone)]
struct RawArgs {
    /// Data directory of a SQLite store (must not be in use).
    #[arg(long, required_unless_present = "database_url")]
    dir: Option<std::path::PathBuf>,
    /// A PostgreSQL database instead (`postgres://…`); migrated if new.
    #[arg(long)]
    database_url: Option<String>,
    /// Events to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
}

impl Target {
    /// The URL client `i` talks to.
    fn url_for(&self, i: usize) -> String {
        let urls: Vec<&str> = self.url.split(',').collect();
        urls[i % urls.len()].to_owned()
    }
}

/// Counts and latencies gathered by one client.
pub struct Tally {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise.
    pub errors: u64,
    /// Events carried by the 2xx requests.
    pub events: u64,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            ok: 0,
            errors: 0,
            events: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.events += other.events;
        self.latency.add(other.latency).expect("same bounds");
    }
}

fn report(scenario: &str, tallies: Vec<Tally>, elapsed: Duration, extra: serde_json::Value) {
    let mut total = Tally::new();
    for t in tallies {
        total.merge(t);
    }
    let secs = elapsed.as_secs_f64();
    let ms = |q: f64| total.latency.value_at_quantile(q) as f64 / 1000.0;
    let mut out = serde_json::json!({
        "scenario": scenario,
        "seconds": (secs * 100.0).round() / 100.0,
        "requests": total.ok,
        "errors": total.errors,
        "events": total.events,
        "requests_per_s": (total.ok as f64 / secs).round(),
        "events_per_s": (total.events as f64 / secs).round(),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": total.latency.max() as f64 / 1000.0,
    });
    if let (Some(o), Some(e)) = (out.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{out}");
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Ingest(args) => workload::ingest("ingest", args).await,
        Scenario::Single(mut args) => {
            args.batch = 1;
            workload::ingest("single", args).await
        }
        Scenario::Seed(target) => workload::seed(target).await,
        Scenario::Reads(args) => workload::reads(args).await,
        Scenario::Raw(args) => workload::raw(args).await,
        Scenario::Parse => workload::parse(),
        Scenario::Deliveries(args) => integrations::deliveries(args).await,
    }
}

/// Runs `clients` tasks until `deadline` and gathers their tallies.
async fn run_clients<F, Fut>(clients: usize, deadline: Instant, task: F) -> (Vec<Tally>, Duration)
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(task(i, deadline)))
        .collect();
    let mut tallies = Vec::new();
    for h in handles {
        tallies.push(h.await.expect("client task"));
    }
    (tallies, start.elapsed())
}
