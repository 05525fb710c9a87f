//! Runs of configured exports: the scheduler inside `assent serve`, and the runs started by
//! `POST /v1/exports/{id}/execute`. A run holds its export in the store while it works, so
//! that of many nodes sharing a database one runs a given export at a time.

use crate::{ExportSpec, run};
use assent_model::Timestamp;
use assent_model::export::{
    self, ExportState, RunRecord, RunStatus, Trigger, after_scheduled_run, run_date,
};
use assent_store::{ExportRecord, Store};
use chrono::NaiveDate;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How configured exports run.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// How often the scheduler looks for due exports.
    pub tick: Duration,
    /// The wait before a failed scheduled run is tried again.
    pub retry_delay: Duration,
    /// How long a run holds its export; a node that dies mid-run frees it after this.
    pub lease: Duration,
    /// The folder `file://` destinations of the API must lie in, under a sub-folder per
    /// organization.
    pub file_root: PathBuf,
}

impl ExportSettings {
    /// The folder of `org`'s `file://` exports.
    pub fn organization_root(&self, org: &str) -> PathBuf {
        self.file_root.join(org)
    }

    /// The destination of an export that names none: the organization's folder.
    pub fn default_destination(&self, org: &str) -> String {
        url::Url::from_directory_path(self.organization_root(org))
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Checks that this build can write to `url` and, for `file://`, that it lies in the
    /// organization's folder.
    pub fn check_destination(&self, org: &str, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| "must name an absolute local folder".to_owned())?;
                let root = self.organization_root(org);
                if !path.starts_with(&root) {
                    return Err(format!(
                        "a file:// destination must lie in this organization's export folder, {}",
                        self.default_destination(org)
                    ));
                }
                Ok(())
            }
            "s3" if !cfg!(feature = "s3") => Err(
                "this build of Assent has no s3:// support (built without the s3 feature)"
                    .to_owned(),
            ),
            "gs" if !cfg!(feature = "gcs") => Err(
                "this build of Assent has no gs:// support (built without the gcs feature)"
                    .to_owned(),
            ),
            _ => Ok(()),
        }
    }
}

/// The scheduler task of one node.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Scheduler {
    /// Starts looking for due exports every `settings.tick`.
    pub fn start(store: Arc<dyn Store>, settings: ExportSettings) -> Scheduler {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                if let Err(e) = tick(&store, &settings).await {
                    tracing::warn!("export scheduler: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(settings.tick) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Scheduler { stop, task }
    }

    /// Stops after the run under way, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Runs the exports due now, one after the other; returns how many ran.
pub async fn tick(
    store: &Arc<dyn Store>,
    settings: &ExportSettings,
) -> Result<usize, assent_store::StoreError> {
    let now = Timestamp::now();
    let mut ran = 0;
    for (org, id) in store.due_exports(now, 16).await? {
        let lease_until = Timestamp::from_millis(now.millis() + settings.lease.as_millis() as i64);
        let Some(record) = store
            .claim_export(&org, &id, now, lease_until, true)
            .await?
        else {
            continue; // another node took it
        };
        let date = record
            .state
            .retry_date
            .as_deref()
            .and_then(|d| export::parse_date(d).ok())
            .unwrap_or_else(|| run_date(record.config.scope, record.next_run_at.unwrap_or(now)));
        run_claimed(store.clone(), record, date, Trigger::Schedule, settings).await;
        ran += 1;
    }
    Ok(ran)
}

/// The record of a run of `record` for `date` that starts now.
pub fn starting_run(record: &ExportRecord, date: NaiveDate, trigger: Trigger) -> RunRecord {
    let date_text = date.format("%Y-%m-%d").to_string();
    let attempt = match (trigger, &record.state.retry_date) {
        (Trigger::Schedule, Some(d)) if *d == date_text => record.state.attempts + 1,
        _ => 1,
    };
    RunRecord {
        date: date_text,
        trigger,
        status: RunStatus::Running,
        attempt,
        started_at: Timestamp::now().to_rfc3339(),
        finished_at: None,
        users: 0,
        events: 0,
        parts: 0,
        bytes: 0,
        location: None,
        error: None,
    }
}

/// Runs an export that this node holds, for `date`, and records how it went (the attempt,
/// the counts, the error); the hold ends with it.
pub async fn run_claimed(
    store: Arc<dyn Store>,
    record: ExportRecord,
    date: NaiveDate,
    trigger: Trigger,
    settings: &ExportSettings,
) -> RunRecord {
    let (org, id) = (record.organization_id.clone(), record.id.clone());
    let mut run_record = starting_run(&record, date, trigger);
    let running = ExportState {
        last_run: Some(run_record.clone()),
        ..record.state.clone()
    };
    if let Err(e) = store.save_export_run(&org, &id, running, None, false).await {
        tracing::warn!(export = %id, "cannot record the start of an export run: {e}");
    }
    let spec = ExportSpec {
        organization: org.clone(),
        export_id: id.clone(),
        destination: record.config.destination.clone(),
        date,
        scope: record.config.scope,
        max_part_bytes: record.config.max_part_bytes,
    };
    let checked = match settings.check_destination(org.as_str(), &spec.destination) {
        Ok(()) => run(store.as_ref(), &spec, &|_, _| {})
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("destination {e}")),
    };
    match checked {
        Ok(report) => {
            run_record.status = RunStatus::Succeeded;
            run_record.users = report.users;
            run_record.events = report.events;
            run_record.parts = report.parts;
            run_record.bytes = report.bytes;
            run_record.location = Some(report.location);
        }
        Err(e) => {
            tracing::warn!(export = %id, "export run failed: {e}");
            run_record.status = RunStatus::Failed;
            run_record.error = Some(e);
        }
    }
    let now = Timestamp::now();
    run_record.finished_at = Some(now.to_rfc3339());
    let (state, next) = match trigger {
        Trigger::Schedule => {
            let (state, next) = after_scheduled_run(
                &record.config,
                record.state.clone(),
                run_record.clone(),
                now,
                settings.retry_delay.as_millis() as i64,
            );
            (state, Some(next))
        }
        Trigger::Manual => (
            ExportState {
                last_run: Some(run_record.clone()),
                runs: record.state.runs + 1,
                ..record.state.clone()
            },
            None,
        ),
    };
    if let Err(e) = store.save_export_run(&org, &id, state, next, true).await {
        tracing::warn!(export = %id, "cannot record the end of an export run: {e}");
    }
    run_record
}
