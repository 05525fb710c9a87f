//! Exports: an organization's users and events written as gzip NDJSON in Didomi's batch-export
//! layout (API.md §8) to a `file://` folder or, with the `s3` and `gcs` features, a bucket.
//!
//! [`run`] streams from the store a page of users at a time, so memory stays flat however
//! large the organization; parts are cut before they pass the configured size; `_SUCCESS` is
//! written last, and only when every part is in place. A run first clears what an earlier,
//! failed run of the same export and date left behind.

mod destination;
mod parts;
pub mod schedule;

pub use destination::{Destination, open_destination};
pub use schedule::{ExportSettings, Scheduler};

use assent_model::OrganizationId;
use assent_model::export::{self, Period, Scope};
use assent_model::filter::Filter;
use assent_model::query::{EventsQuery, SortOrder, USER_FILTER_ROOTS, UsersQuery};
use assent_model::user::UserSelector;
use assent_store::{Store, StoreError};
use chrono::NaiveDate;
use futures_util::StreamExt;
use object_store::path::Path;

/// Users read from the store per page.
const USERS_PER_PAGE: usize = 500;
/// Events read per request for one user.
const EVENTS_PER_PAGE: usize = 1000;
/// The read of one user's events (boxed, so that a stream of them can be sent to a task).
type HistoryRead<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Vec<assent_model::ConsentEvent>, ExportError>>
            + Send
            + 'a,
    >,
>;

/// Users whose events are being read at once.
const READS_IN_FLIGHT: usize = 8;

/// What one run exports, and where.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// The organization exported.
    pub organization: OrganizationId,
    /// The export's id: the `export-id=` partition.
    pub export_id: String,
    /// Where the files go: `file:///…`, `s3://…`, `gs://…`.
    pub destination: String,
    /// The day covered (UTC): the `date=` partition.
    pub date: NaiveDate,
    /// Which users and events.
    pub scope: Scope,
    /// The largest part file, compressed.
    pub max_part_bytes: u64,
}

/// What a finished run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Users written (lines).
    pub users: u64,
    /// Events written.
    pub events: u64,
    /// Part files written.
    pub parts: u32,
    /// Compressed bytes written.
    pub bytes: u64,
    /// The run's folder: destination, then `export-id=…/date=…`.
    pub location: String,
}

/// Why a run failed; nothing it wrote carries a `_SUCCESS`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination URL is not one this build can write to.
    #[error("destination: {0}")]
    Destination(String),
    /// Reading the store failed.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    /// Writing the destination failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The object being written.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Runs one export; `progress` hears the running totals of users and events after each page.
pub async fn run(
    store: &dyn Store,
    spec: &ExportSpec,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<ExportReport, ExportError> {
    let destination = open_destination(&spec.destination)?;
    let folder = destination
        .prefix
        .clone()
        .join_str(&export::partition(&spec.export_id, spec.date));
    destination.clear(&folder).await?;

    let period = Period { date: spec.date };
    let mut parts = parts::PartWriter::new(
        destination.store.clone(),
        folder.clone(),
        spec.max_part_bytes,
    );
    let mut report = ExportReport {
        location: format!(
            "{}/{}",
            destination.url.trim_end_matches('/'),
            export::partition(&spec.export_id, spec.date)
        ),
        ..ExportReport::default()
    };
    let mut cursor = None;
    loop {
        let page = store
            .list_users(
                &spec.organization,
                &users_query(spec.scope, &period, cursor.take()),
            )
            .await?;
        // The users' events are read a few at a time, in order, so that the store's readers
        // work while the previous lines are compressed.
        let selected: Vec<_> = page
            .data
            .iter()
            .filter(|u| export::selects_user(spec.scope, &period, u))
            .collect();
        let reads: Vec<HistoryRead<'_>> = selected
            .iter()
            .map(|user| Box::pin(user_events(store, spec, &period, &user.id)) as HistoryRead<'_>)
            .collect();
        let mut histories = futures_util::stream::iter(reads).buffered(READS_IN_FLIGHT);
        for user in &selected {
            let events = histories.next().await.expect("one history per user")?;
            let line = export::line(user, &events);
            let mut bytes = serde_json::to_vec(&line).map_err(|e| ExportError::Write {
                path: folder.to_string(),
                message: e.to_string(),
            })?;
            bytes.push(b'\n');
            parts.write_line(&bytes).await?;
            report.users += 1;
            report.events += events.len() as u64;
        }
        progress(report.users, report.events);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let written = parts.finish().await?;
    report.parts = written.parts;
    report.bytes = written.bytes;
    destination.put_success(&folder).await?;
    Ok(report)
}

/// The users query of one page: every user, or those changed during the day.
fn users_query(scope: Scope, period: &Period, cursor: Option<String>) -> UsersQuery {
    let filter = match scope {
        Scope::Full => Filter::default(),
        Scope::Daily => Filter::parse(
            &[
                ("updated_at[$gte]".to_owned(), period.start().to_rfc3339()),
                ("updated_at[$lt]".to_owned(), period.end().to_rfc3339()),
            ],
            USER_FILTER_ROOTS,
        )
        .unwrap_or_default(),
    };
    UsersQuery {
        regulation: Default::default(),
        filter,
        limit: USERS_PER_PAGE,
        cursor,
    }
}

/// The events of one user that the run exports, oldest first, every regulation and status.
async fn user_events(
    store: &dyn Store,
    spec: &ExportSpec,
    period: &Period,
    user_id: &str,
) -> Result<Vec<assent_model::ConsentEvent>, ExportError> {
    let mut out = Vec::new();
    let mut skip = 0;
    loop {
        let query = EventsQuery {
            user: UserSelector::Id(user_id.to_owned()),
            filter: Filter::default(),
            limit: EVENTS_PER_PAGE,
            skip,
            sort: SortOrder::Ascending,
        };
        let page = store.list_events(&spec.organization, &query).await?;
        let n = page.data.len();
        out.extend(
            page.data
                .into_iter()
                .filter(|e| export::selects_event(spec.scope, period, e)),
        );
        if n < EVENTS_PER_PAGE {
            return Ok(out);
        }
        skip += n;
    }
}

/// The part files under a run's folder.
pub fn part_path(folder: &Path, n: u32) -> Path {
    folder.clone().join_str(&export::part_name(n))
}

/// Extension of [`Path`] to append a relative path of several segments.
trait JoinStr {
    fn join_str(self, rel: &str) -> Path;
}

impl JoinStr for Path {
    fn join_str(self, rel: &str) -> Path {
        rel.split('/')
            .filter(|s| !s.is_empty())
            .fold(self, |p, seg| p.clone().join(seg))
    }
}
