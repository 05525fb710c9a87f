//! `assent import`: consent history from files, sent through the HTTP API in batches of 100,
//! so that it works against any Assent (and against Didomi itself).
//!
//! Rows without an `id` get one derived from the file name, position and content, so running
//! an interrupted import again creates nothing twice. Rows the server (or the reader) refuses
//! go to `<file>.rejects.ndjson` with their line and reason; the import goes on.

mod client;
pub mod rows;

use client::{Answer, Client};
use rows::Row;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events per request: the API's batch limit.
const BATCH: usize = 100;

/// Tries of one batch against 429, 5xx and network failures before its rows are rejected.
const MAX_ATTEMPTS: u32 = 12;

/// The arguments of `assent import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Files to import: NDJSON (`.ndjson`, `.jsonl`), JSON (`.json`: an array of events) or CSV
    /// (`.csv`: `organization_user_id,purpose,enabled,created_at[,id][,regulation]`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The server's base URL, such as `http://127.0.0.1:8080`.
    #[arg(long, env = "ASSENT_IMPORT_SERVER")]
    pub server: String,
    /// The API key.
    #[arg(long, env = "ASSENT_IMPORT_KEY")]
    pub key: String,
    /// The API key's secret.
    #[arg(long, env = "ASSENT_IMPORT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The organization to import into (default: the key's organization).
    #[arg(long)]
    pub organization: Option<String>,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Deliver nothing to webhooks and connectors for the imported events.
    #[arg(long)]
    pub disable_integrations: bool,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows read from the files.
    pub read: AtomicU64,
    /// Events sent and stored.
    pub sent: AtomicU64,
    /// Events the server did not hold before this run.
    pub created: AtomicU64,
    /// Events the server already held (written before this run started).
    pub present: AtomicU64,
    /// Rows refused, written to the rejects files.
    pub rejected: AtomicU64,
}

impl Summary {
    fn line(&self, rejects: &Rejects) -> String {
        let mut line = format!(
            "read {}, sent {}, created {}, already present {}, rejected {}",
            self.read.load(Ordering::Relaxed),
            self.sent.load(Ordering::Relaxed),
            self.created.load(Ordering::Relaxed),
            self.present.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
        );
        let files = rejects.paths();
        if !files.is_empty() {
            line.push_str(&format!(" (see {})", files.join(", ")));
        }
        line
    }
}

/// The rejects files, one per input file, opened on the first reject.
#[derive(Default)]
struct Rejects {
    files: Mutex<HashMap<Arc<str>, std::io::BufWriter<std::fs::File>>>,
}

impl Rejects {
    fn path_of(input: &str) -> String {
        format!("{input}.rejects.ndjson")
    }

    fn write(&self, row: &Row, error: &str, summary: &Summary) -> Result<(), String> {
        summary.rejected.fetch_add(1, Ordering::Relaxed);
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let out = match files.get_mut(&row.file) {
            Some(out) => out,
            None => {
                let path = Self::path_of(&row.file);
                let file = std::fs::File::create(&path)
                    .map_err(|e| format!("cannot write {path}: {e}"))?;
                files
                    .entry(row.file.clone())
                    .or_insert(std::io::BufWriter::new(file))
            }
        };
        let line = json!({"line": row.record, "error": error, "row": row.raw});
        writeln!(out, "{line}").map_err(|e| format!("cannot write the rejects file: {e}"))
    }

    fn flush(&self) -> Result<(), String> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for out in files.values_mut() {
            out.flush()
                .map_err(|e| format!("cannot write the rejects file: {e}"))?;
        }
        Ok(())
    }

    fn paths(&self) -> Vec<String> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut paths: Vec<String> = files.keys().map(|f| Self::path_of(f)).collect();
        paths.sort();
        paths
    }
}

/// Runs an import; returns the summary line. Fails only when nothing sensible can go on (the
/// key is refused, a file cannot be read); refused rows are not failures.
pub async fn run(args: ImportArgs) -> Result<String, String> {
    for file in &args.files {
        rows::format_of(file)?;
    }
    let total_bytes: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let client = Arc::new(
        Client::connect(
            &args.server,
            &args.key,
            &args.secret,
            args.organization.clone(),
            args.disable_integrations,
        )
        .await?,
    );
    let summary = Arc::new(Summary::default());
    let rejects = Arc::new(Rejects::default());
    let bytes_read = Arc::new(AtomicU64::new(0));

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Row>(BATCH * 8);
    let files = args.files.clone();
    let reader_bytes = bytes_read.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
        for file in files {
            rows::read_file(&file, reader_bytes.clone(), &mut |row| {
                tx.blocking_send(row).is_ok()
            })?;
        }
        Ok(())
    });

    let progress = Progress::start(total_bytes, bytes_read.clone(), summary.clone());
    let permits = Arc::new(tokio::sync::Semaphore::new(usize::from(args.concurrency)));
    let mut senders = tokio::task::JoinSet::new();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut failure: Option<String> = None;
    let launch = |rows: Vec<Row>, permit: tokio::sync::OwnedSemaphorePermit| {
        let (client, summary, rejects) = (client.clone(), summary.clone(), rejects.clone());
        async move {
            let out = deliver(&client, rows, &summary, &rejects).await;
            drop(permit);
            out
        }
    };
    while let Some(row) = rx.recv().await {
        summary.read.fetch_add(1, Ordering::Relaxed);
        match &row.event {
            Ok(_) => batch.push(row),
            Err(reason) => rejects.write(&row, &reason.clone(), &summary)?,
        }
        if batch.len() == BATCH {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            senders.spawn(launch(rows, permit));
        }
        while let Some(done) = senders.try_join_next() {
            if let Err(e) = done.map_err(|e| e.to_string()).and_then(|r| r) {
                failure.get_or_insert(e);
            }
        }
        if failure.is_some() {
            break;
        }
    }
    if failure.is_none() && !batch.is_empty() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        senders.spawn(launch(batch, permit));
    }
    drop(rx);
    while let Some(done) = senders.join_next().await {
        if let Err(e) = done.map_err(|e| e.to_string()).and_then(|r| r) {
            failure.get_or_insert(e);
        }
    }
    let read_result = reader.await.map_err(|e| e.to_string())?;
    progress.finish().await;
    rejects.flush()?;
    if let Some(failure) = failure {
        return Err(format!("{failure} ({})", summary.line(&rejects)));
    }
    read_result.map_err(|e| format!("{e} ({})", summary.line(&rejects)))?;
    Ok(summary.line(&rejects))
}

/// Sends one batch until every row is stored or rejected.
async fn deliver(
    client: &Client,
    rows: Vec<Row>,
    summary: &Summary,
    rejects: &Rejects,
) -> Result<(), String> {
    let mut queue: VecDeque<Vec<Row>> = VecDeque::from([rows]);
    while let Some(mut chunk) = queue.pop_front() {
        let mut attempt = 0u32;
        loop {
            if chunk.is_empty() {
                break;
            }
            let events: Vec<&Value> = chunk.iter().filter_map(|r| r.event.as_ref().ok()).collect();
            match client.post(&events).await {
                Answer::Stored(stored) => {
                    count_stored(client, &stored, summary);
                    break;
                }
                Answer::Invalid(by_index, message) => {
                    if by_index.is_empty() {
                        for row in &chunk {
                            rejects.write(row, &message, summary)?;
                        }
                        break;
                    }
                    if by_index.keys().all(|&i| i >= chunk.len()) {
                        // Indices that name no row of ours: refuse the batch as a whole.
                        for row in &chunk {
                            rejects.write(row, &message, summary)?;
                        }
                        break;
                    }
                    let mut kept = Vec::with_capacity(chunk.len());
                    for (i, row) in chunk.into_iter().enumerate() {
                        match by_index.get(&i) {
                            Some(reason) => rejects.write(&row, reason, summary)?,
                            None => kept.push(row),
                        }
                    }
                    chunk = kept;
                    attempt = 0;
                }
                Answer::Conflict(message) => {
                    if chunk.len() == 1 {
                        rejects.write(&chunk[0], &message, summary)?;
                    } else {
                        // Find the row at fault: send each on its own.
                        queue.extend(chunk.into_iter().map(|row| vec![row]));
                    }
                    break;
                }
                Answer::TooLarge => {
                    if chunk.len() == 1 {
                        rejects.write(&chunk[0], "over the server's body limit", summary)?;
                    } else {
                        let half = chunk.split_off(chunk.len() / 2);
                        queue.push_back(chunk);
                        queue.push_back(half);
                    }
                    break;
                }
                Answer::Unauthorized(message) => {
                    attempt += 1;
                    if attempt > 2 {
                        return Err(format!("the server refuses the session: {message}"));
                    }
                    client.refresh().await?;
                }
                Answer::Retry(after, why) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        let reason = format!("gave up after {attempt} tries: {why}");
                        for row in &chunk {
                            rejects.write(row, &reason, summary)?;
                        }
                        break;
                    }
                    tokio::time::sleep(after.unwrap_or_else(|| backoff(attempt))).await;
                }
            }
        }
    }
    Ok(())
}

/// The pause before try `attempt` + 1: doubling from 250 ms up to 30 s, with jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(1 << attempt.min(7));
    let capped = base.min(Duration::from_secs(30));
    let jitter = u64::from(std::process::id().wrapping_mul(attempt.wrapping_add(7))) % 250;
    capped + Duration::from_millis(jitter)
}

/// Counts stored events as created, or as already present when the server wrote them before
/// this run started (by its own clock).
fn count_stored(client: &Client, stored: &[Value], summary: &Summary) {
    summary
        .sent
        .fetch_add(stored.len() as u64, Ordering::Relaxed);
    let started = client.started.map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    });
    for event in stored {
        let written = event["updated_at"]
            .as_str()
            .and_then(|t| assent_model::Timestamp::parse(t).ok())
            .map(|t| t.millis());
        match (started, written) {
            (Some(start), Some(written)) if written < start => {
                summary.present.fetch_add(1, Ordering::Relaxed)
            }
            _ => summary.created.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Progress on stderr: a bar with events/s and ETA on a terminal, a line every 5 s otherwise.
struct Progress {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(total: u64, read: Arc<AtomicU64>, summary: Arc<Summary>) -> Progress {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let bar = terminal.then(|| {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {msg} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let every = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            loop {
                let done = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = stopped.changed() => true,
                };
                let sent = summary.sent.load(Ordering::Relaxed);
                let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001);
                let message = format!(
                    "{sent} events sent, {:.0} events/s, {} rejected",
                    rate,
                    summary.rejected.load(Ordering::Relaxed)
                );
                let position = read.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => {
                        bar.set_position(position);
                        bar.set_message(message);
                    }
                    None if !done => {
                        let percent = if total == 0 {
                            100.0
                        } else {
                            position as f64 * 100.0 / total as f64
                        };
                        eprintln!("import: {percent:.1}% of input read, {message}");
                    }
                    None => {}
                }
                if done {
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    return;
                }
            }
        });
        Progress { stop, task }
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
