//! `assent export`: one export run from the command line, straight from the store.

use crate::serve::StoreArgs;
use assent_export::{ExportReport, ExportSpec};
use assent_model::OrganizationId;
use assent_model::export::{self, Scope};
use clap::Args;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Arguments of `assent export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The organization to export.
    #[arg(long)]
    pub organization: String,
    /// Where the files go: `file:///folder` (or a plain folder path), `s3://bucket/prefix` or
    /// `gs://bucket/prefix` in builds with those features.
    #[arg(long)]
    pub to: String,
    /// The day to export, `YYYY-MM-DD` (UTC); default: yesterday for `daily`, today for `full`.
    #[arg(long)]
    pub date: Option<String>,
    /// `daily`: the users that changed that day, with the events stored or changed that day;
    /// `full`: every user with its whole history.
    #[arg(long, default_value = "daily", value_parser = Scope::parse)]
    pub scope: Scope,
    /// The `export-id=` folder.
    #[arg(long, default_value = "cli")]
    pub id: String,
    /// The largest part file, compressed, in bytes.
    #[arg(long, default_value_t = export::DEFAULT_MAX_PART_BYTES)]
    pub max_part_bytes: u64,
    /// Where the data lives. With the embedded store the server must be stopped (it holds the
    /// data directory); use `POST /v1/exports/{id}/execute` while it runs.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `assent export`; returns the summary line.
pub async fn run(args: ExportArgs) -> Result<String, String> {
    let spec = spec(&args)?;
    let store = args.store.open_for_reading().await?;
    let started = Instant::now();
    let progress = Progress::new();
    let report = assent_export::run(store.as_ref(), &spec, &|users, events| {
        progress.show(users, events, started)
    })
    .await;
    progress.done();
    store.shutdown().await;
    let report = report.map_err(|e| format!("the export failed, no _SUCCESS was written: {e}"))?;
    Ok(summary(&report, started.elapsed()))
}

fn spec(args: &ExportArgs) -> Result<ExportSpec, String> {
    let organization =
        OrganizationId::parse(&args.organization).map_err(|e| format!("--organization {e}"))?;
    assent_model::ids::check_identifier(&args.id).map_err(|e| format!("--id {e}"))?;
    let date = match &args.date {
        Some(d) => export::parse_date(d).map_err(|e| format!("--date {e}"))?,
        None => {
            let today = chrono::Utc::now().date_naive();
            match args.scope {
                Scope::Daily => today.pred_opt().unwrap_or(today),
                Scope::Full => today,
            }
        }
    };
    if args.max_part_bytes < export::MIN_MAX_PART_BYTES {
        return Err(format!(
            "--max-part-bytes must be at least {}",
            export::MIN_MAX_PART_BYTES
        ));
    }
    Ok(ExportSpec {
        organization,
        export_id: args.id.clone(),
        destination: destination_url(&args.to)?,
        date,
        scope: args.scope,
        max_part_bytes: args.max_part_bytes,
    })
}

/// A URL as given, or a local folder path turned into a `file://` URL.
fn destination_url(to: &str) -> Result<String, String> {
    if to.contains("://") {
        return Ok(to.to_owned());
    }
    let path = std::path::absolute(Path::new(to)).map_err(|e| format!("--to {to}: {e}"))?;
    url::Url::from_directory_path(&path)
        .map(|u| u.to_string())
        .map_err(|()| format!("--to {to} is not a usable folder"))
}

fn summary(report: &ExportReport, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "exported {} users and {} events in {} part(s), {} bytes, to {} in {:.1} s ({:.0} events/s)",
        report.users,
        report.events,
        report.parts,
        report.bytes,
        report.location,
        secs,
        report.events as f64 / secs
    )
}

/// Progress on standard error: a spinner on a terminal, a line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: Mutex<Instant>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            last: Mutex::new(Instant::now()),
        }
    }

    fn show(&self, users: u64, events: u64, started: Instant) {
        let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
        let text = format!("{users} users, {events} events ({rate:.0} events/s)");
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => {
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    eprintln!("export: {text}");
                }
            }
        }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
