//! What an export writes: Didomi's batch-export layout (API.md §8). One line per user, holding
//! the user with its status under every regulation and its events of the period, in files
//! `export-id={id}/date={YYYY-MM-DD}/users/part-NNNNN.json.gz`, then an empty `_SUCCESS`.

use crate::error::{DomainError, FieldErrors};
use crate::event::ConsentEvent;
use crate::json::{Fields, Path};
use crate::time::Timestamp;
use crate::user::UserRecord;
use chrono::{NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The largest part file, compressed: Didomi's 100 MB.
pub const DEFAULT_MAX_PART_BYTES: u64 = 100_000_000;
/// The smallest part size a configuration may ask for.
pub const MIN_MAX_PART_BYTES: u64 = 64 * 1024;
/// The name of the file written last, once every part is in place.
pub const SUCCESS_FILE: &str = "_SUCCESS";

/// Which users and events a run writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The users that changed during the day, each with the events stored or changed that
    /// day: what a nightly export sends.
    #[default]
    Daily,
    /// Every user with its whole history: a complete copy of the organization.
    Full,
}

impl Scope {
    /// Parses `daily` or `full`.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "daily" => Ok(Scope::Daily),
            "full" => Ok(Scope::Full),
            _ => Err("must be one of: daily, full".to_owned()),
        }
    }
}

/// The period a run covers: the UTC day `date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The day, UTC.
    pub date: NaiveDate,
}

impl Period {
    /// The first instant of the day.
    pub fn start(&self) -> Timestamp {
        day_start(self.date)
    }

    /// The first instant of the next day.
    pub fn end(&self) -> Timestamp {
        day_start(self.date.succ_opt().unwrap_or(NaiveDate::MAX))
    }

    /// Whether `t` falls within the day.
    pub fn contains(&self, t: Timestamp) -> bool {
        t >= self.start() && t < self.end()
    }
}

fn day_start(date: NaiveDate) -> Timestamp {
    Timestamp::from_millis(date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| "must be a date as YYYY-MM-DD".to_owned())
}

/// The folder of one run under the destination: `export-id={id}/date={YYYY-MM-DD}`.
pub fn partition(export_id: &str, date: NaiveDate) -> String {
    format!("export-id={export_id}/date={}", date.format("%Y-%m-%d"))
}

/// The path of part `n` (from 0) under the run's folder.
pub fn part_name(n: u32) -> String {
    format!("users/part-{n:05}.json.gz")
}

/// Whether a user belongs in a run of `scope` over `period`.
pub fn selects_user(scope: Scope, period: &Period, user: &UserRecord) -> bool {
    match scope {
        Scope::Full => true,
        Scope::Daily => period.contains(user.updated_at),
    }
}

/// Whether an event belongs in a run of `scope` over `period`: in a daily run, the events
/// stored or changed that day (so that back-dated imports are exported the day they arrive).
pub fn selects_event(scope: Scope, period: &Period, event: &ConsentEvent) -> bool {
    match scope {
        Scope::Full => true,
        Scope::Daily => period.contains(event.updated_at),
    }
}

/// One line of an export: `organization_user_id`, `user` (as the API shows it, with
/// `consents` under GDPR and `regulations` holding the status under each regulation the user
/// has one for) and `events` (as the API shows them, oldest first).
pub fn line(user: &UserRecord, events: &[ConsentEvent]) -> Value {
    let gdpr = crate::Regulation::default();
    let mut view = match serde_json::to_value(user.view(&gdpr)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let regulations: Map<String, Value> = user
        .state
        .regulations()
        .map(|r| {
            let status = serde_json::to_value(user.state.status(r)).unwrap_or(Value::Null);
            (r.to_string(), status)
        })
        .collect();
    view.insert("regulations".to_owned(), Value::Object(regulations));
    let events: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e.view()).unwrap_or(Value::Null))
        .collect();
    json!({
        "organization_user_id": user.organization_user_id,
        "user": view,
        "events": events,
    })
}

/// How many times a scheduled run of one date is tried before it is given up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Checks an export id: it names a folder, so 1 to 64 letters, digits, `_` and `-`.
pub fn check_export_id(id: &str) -> Result<(), String> {
    crate::OrganizationId::parse(id).map(|_| ())
}

/// An export's settings, as `POST|PATCH /v1/exports` set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportConfig {
    /// A name to recognise it by.
    pub name: Option<String>,
    /// Where the files go (`file:///…`, `s3://…`, `gs://…`).
    pub destination: String,
    /// Which users and events each run writes.
    pub scope: Scope,
    /// When the daily run starts, `HH:MM` or `HH:MM:SS`, UTC.
    pub time: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The largest part file, compressed.
    pub max_part_bytes: u64,
}

/// The fields of an export body.
const CONFIG_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "name",
    "destination",
    "scope",
    "time",
    "enabled",
    "max_part_bytes",
];

impl ExportConfig {
    /// Reads a `POST` body (`current` is `None`; `destination` defaults to
    /// `default_destination`) or a `PATCH` body (fields left out keep their `current` value).
    /// Returns the settings and, on create, the id the body asks for.
    pub fn parse(
        body: &Value,
        organization_id: &str,
        current: Option<&ExportConfig>,
        default_destination: &str,
    ) -> Result<(ExportConfig, Option<String>), DomainError> {
        let mut errors = FieldErrors::new();
        let Some(f) = Fields::of(body, Path::Root, CONFIG_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let mut out = current.cloned().unwrap_or(ExportConfig {
            name: None,
            destination: default_destination.to_owned(),
            scope: Scope::Daily,
            time: "02:00".to_owned(),
            enabled: true,
            max_part_bytes: DEFAULT_MAX_PART_BYTES,
        });
        if let Some(o) = f.string("organization_id", &mut errors)
            && o != organization_id
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        let id = match f.string("id", &mut errors) {
            Some(_) if current.is_some() => {
                errors.add("id", "cannot be changed");
                None
            }
            Some(id) => match check_export_id(id) {
                Ok(()) => Some(id.to_owned()),
                Err(m) => {
                    errors.add("id", m);
                    None
                }
            },
            None => None,
        };
        match f.get("name") {
            None => {}
            Some(Value::Null) => out.name = None,
            Some(_) => {
                if let Some(n) = f.string("name", &mut errors) {
                    if n.is_empty() || n.chars().count() > 255 {
                        errors.add("name", "must be 1 to 255 characters");
                    }
                    out.name = Some(n.to_owned());
                }
            }
        }
        if let Some(d) = f.string("destination", &mut errors) {
            match check_destination(d) {
                Ok(()) => out.destination = d.to_owned(),
                Err(m) => errors.add("destination", m),
            }
        }
        if let Some(scope) = f.string("scope", &mut errors) {
            match Scope::parse(scope) {
                Ok(s) => out.scope = s,
                Err(m) => errors.add("scope", m),
            }
        }
        if let Some(t) = f.string("time", &mut errors) {
            match parse_time(t) {
                Ok(_) => out.time = t.to_owned(),
                Err(m) => errors.add("time", m),
            }
        }
        match f.get("enabled") {
            None => {}
            Some(Value::Bool(b)) => out.enabled = *b,
            Some(_) => errors.add("enabled", "must be true or false"),
        }
        match f.get("max_part_bytes") {
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) if (MIN_MAX_PART_BYTES..=DEFAULT_MAX_PART_BYTES).contains(&n) => {
                    out.max_part_bytes = n
                }
                _ => errors.add(
                    "max_part_bytes",
                    format!("must be a whole number from {MIN_MAX_PART_BYTES} to {DEFAULT_MAX_PART_BYTES}"),
                ),
            },
        }
        f.finish(&mut errors);
        errors.into_result()?;
        Ok((out, id))
    }

    /// The time of day of the daily run.
    pub fn time_of_day(&self) -> NaiveTime {
        parse_time(&self.time).unwrap_or(NaiveTime::MIN)
    }
}

/// Parses `HH:MM` or `HH:MM:SS` (UTC).
pub fn parse_time(s: &str) -> Result<NaiveTime, String> {
    let format = match s.len() {
        5 => "%H:%M",
        8 => "%H:%M:%S",
        _ => "",
    };
    NaiveTime::parse_from_str(s, format)
        .ok()
        .filter(|_| !format.is_empty())
        .ok_or_else(|| "must be a time of day as HH:MM or HH:MM:SS (UTC)".to_owned())
}

/// Checks the form of a destination URL: `file:///absolute/folder`, `s3://bucket[/prefix]` or
/// `gs://bucket[/prefix]`.
pub fn check_destination(url: &str) -> Result<(), String> {
    if url.len() > 1024 {
        return Err("must be at most 1024 characters".to_owned());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("must be a URL: file:///folder, s3://bucket/prefix or gs://bucket/prefix")?;
    match scheme {
        "file" if rest.starts_with('/') => Ok(()),
        "file" => Err("a file:// URL must name an absolute folder (file:///…)".to_owned()),
        "s3" | "gs" if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        "s3" | "gs" => Err(format!("a {scheme}:// URL must name a bucket")),
        _ => Err("must be a file://, s3:// or gs:// URL".to_owned()),
    }
}

/// The first instant strictly after `after` at `time` of day, UTC.
pub fn next_run(time: NaiveTime, after: Timestamp) -> Timestamp {
    let Some(now) = chrono::DateTime::from_timestamp_millis(after.millis()) else {
        return after;
    };
    let today = now.date_naive().and_time(time).and_utc();
    let at = if today > now {
        today
    } else {
        today + chrono::Duration::days(1)
    };
    Timestamp::from_millis(at.timestamp_millis())
}

/// The day a run started at `at` exports: the day before for daily runs (a whole day, ended),
/// the same day for full copies.
pub fn run_date(scope: Scope, at: Timestamp) -> NaiveDate {
    let day = chrono::DateTime::from_timestamp_millis(at.millis())
        .map(|d| d.date_naive())
        .unwrap_or_default();
    match scope {
        Scope::Daily => day.pred_opt().unwrap_or(day),
        Scope::Full => day,
    }
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// By the scheduler, at the configured time (or a retry of it).
    Schedule,
    /// By `POST /v1/exports/{id}/execute`.
    Manual,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Under way.
    Running,
    /// Every part and `_SUCCESS` written.
    Succeeded,
    /// Stopped by an error; no `_SUCCESS`.
    Failed,
}

/// One run of an export, as its configuration shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The day exported.
    pub date: String,
    /// How it was started.
    pub trigger: Trigger,
    /// Where it stands.
    pub status: RunStatus,
    /// Which try of this date it is, from 1.
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Users written.
    pub users: u64,
    /// Events written.
    pub events: u64,
    /// Part files written.
    pub parts: u32,
    /// Compressed bytes written.
    pub bytes: u64,
    /// The run's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the scheduler remembers of an export between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    /// The date the next scheduled run exports when it retries a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_date: Option<String>,
    /// Failed tries of `retry_date` so far.
    #[serde(default)]
    pub attempts: u32,
    /// The latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunRecord>,
    /// Runs finished so far, whatever their outcome.
    #[serde(default)]
    pub runs: u64,
}

/// What happens after a scheduled run: the state and the next run time.
pub fn after_scheduled_run(
    config: &ExportConfig,
    mut state: ExportState,
    run: RunRecord,
    now: Timestamp,
    retry_delay_ms: i64,
) -> (ExportState, Timestamp) {
    let next_scheduled = next_run(config.time_of_day(), now);
    let next = if run.status == RunStatus::Failed && run.attempt < MAX_ATTEMPTS {
        state.retry_date = Some(run.date.clone());
        state.attempts = run.attempt;
        Timestamp::from_millis(now.millis() + retry_delay_ms).min(next_scheduled)
    } else {
        state.retry_date = None;
        state.attempts = 0;
        next_scheduled
    };
    state.last_run = Some(run);
    state.runs += 1;
    (state, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn the_next_run_is_today_if_the_time_is_ahead_else_tomorrow() {
        let t = parse_time("02:30").unwrap();
        assert_eq!(
            next_run(t, at("2026-12-04T01:00:00Z")),
            at("2026-12-04T02:30:00Z")
        );
        let s = parse_time("02:30:15").unwrap();
        assert_eq!(
            next_run(s, at("2026-12-04T02:30:00Z")),
            at("2026-12-04T02:30:15Z")
        );
        assert!(parse_time("2:30").is_err());
        assert!(parse_time("24:00:00").is_err());
        assert_eq!(
            next_run(t, at("2026-12-04T02:30:00Z")),
            at("2026-12-05T02:30:00Z")
        );
        assert_eq!(
            next_run(t, at("2026-12-31T23:00:00Z")),
            at("2027-01-01T02:30:00Z")
        );
        assert_eq!(
            run_date(Scope::Daily, at("2026-12-04T02:30:00Z")).to_string(),
            "2026-12-03"
        );
        assert_eq!(
            run_date(Scope::Full, at("2026-12-04T02:30:00Z")).to_string(),
            "2026-12-04"
        );
    }

    #[test]
    fn a_failed_run_is_retried_until_the_attempts_run_out() {
        let (config, _) =
            ExportConfig::parse(&json!({"time": "03:00"}), "o", None, "file:///x").unwrap();
        let run = |attempt, status| RunRecord {
            date: "2026-12-03".into(),
            trigger: Trigger::Schedule,
            status,
            attempt,
            started_at: String::new(),
            finished_at: None,
            users: 0,
            events: 0,
            parts: 0,
            bytes: 0,
            location: None,
            error: None,
        };
        let now = at("2026-12-04T03:00:05Z");
        let (state, next) = after_scheduled_run(
            &config,
            ExportState::default(),
            run(1, RunStatus::Failed),
            now,
            60_000,
        );
        assert_eq!(state.retry_date.as_deref(), Some("2026-12-03"));
        assert_eq!(next, at("2026-12-04T03:01:05Z"));
        let (state, next) = after_scheduled_run(
            &config,
            state,
            run(MAX_ATTEMPTS, RunStatus::Failed),
            now,
            60_000,
        );
        assert_eq!(state.retry_date, None);
        assert_eq!(next, at("2026-12-05T03:00:00Z"));
        let (state, _) =
            after_scheduled_run(&config, state, run(1, RunStatus::Succeeded), now, 60_000);
        assert_eq!(state.attempts, 0);
        assert_eq!(state.last_run.unwrap().status, RunStatus::Succeeded);
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let err = ExportConfig::parse(
            &json!({"id": "a/b", "destination": "ftp://x", "scope": "weekly", "time": "25:00",
                    "enabled": "yes", "max_part_bytes": 5, "colour": 1}),
            "o",
            None,
            "file:///x",
        )
        .unwrap_err();
        let DomainError::Invalid { errors, .. } = &err else {
            panic!("not a validation error: {err:?}");
        };
        let fields: Vec<&str> = errors.as_map().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "colour",
                "destination",
                "enabled",
                "id",
                "max_part_bytes",
                "scope",
                "time"
            ]
        );
        let (c, id) =
            ExportConfig::parse(&json!({"id": "nightly"}), "o", None, "file:///data/o").unwrap();
        assert_eq!(id.as_deref(), Some("nightly"));
        assert_eq!(c.destination, "file:///data/o");
        assert_eq!(c.time, "02:00");
        let (c2, _) = ExportConfig::parse(&json!({"enabled": false}), "o", Some(&c), "").unwrap();
        assert!(!c2.enabled);
        assert_eq!(c2.destination, c.destination);
        assert!(ExportConfig::parse(&json!({"id": "x"}), "o", Some(&c), "").is_err());
        assert!(check_destination("file://relative").is_err());
        assert!(check_destination("s3://bucket/p").is_ok());
        assert!(check_destination("gs://").is_err());
    }

    #[test]
    fn a_day_holds_its_first_instant_and_not_the_next_days() {
        let period = Period {
            date: parse_date("2026-03-01").unwrap(),
        };
        assert!(period.contains(Timestamp::parse("2026-03-01T00:00:00Z").unwrap()));
        assert!(period.contains(Timestamp::parse("2026-03-01T23:59:59.999Z").unwrap()));
        assert!(!period.contains(Timestamp::parse("2026-03-02T00:00:00Z").unwrap()));
        assert!(!period.contains(Timestamp::parse("2026-02-28T23:59:59.999Z").unwrap()));
    }

    #[test]
    fn paths_follow_didomis_layout() {
        let date = parse_date("2026-12-04").unwrap();
        assert_eq!(
            partition("nightly", date),
            "export-id=nightly/date=2026-12-04"
        );
        assert_eq!(part_name(7), "users/part-00007.json.gz");
    }

    #[test]
    fn bad_dates_and_scopes_are_refused() {
        assert!(parse_date("2026-13-01").is_err());
        assert!(parse_date("04/12/2026").is_err());
        assert!(Scope::parse("weekly").is_err());
        assert_eq!(Scope::parse("full"), Ok(Scope::Full));
    }
}
