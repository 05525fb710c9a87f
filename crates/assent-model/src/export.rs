//! What an export writes: Didomi's batch-export layout (API.md §8). One line per user, holding
//! the user with its status under every regulation and its events of the period, in files
//! `export-id={id}/date={YYYY-MM-DD}/users/part-NNNNN.json.gz`, then an empty `_SUCCESS`.

use crate::event::ConsentEvent;
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

#[cfg(test)]
mod tests {
    use super::*;

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
