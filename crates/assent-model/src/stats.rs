//! Consent statistics (Assent): per UTC day, how many confirmed events of one regulation were
//! made, and how many of them gave or refused each purpose. The store counts; this module reads
//! the query and lays the counts out day by day, zero days included.

use crate::error::DomainError;
use crate::ids::Regulation;
use crate::query::{self, Pairs};
use crate::time::Timestamp;
use chrono::{Datelike, Days, NaiveDate, NaiveTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The longest range, in days.
pub const MAX_DAYS: u64 = 366;
/// The range when none is asked for, in days up to today.
pub const DEFAULT_DAYS: u64 = 30;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Which days and regulation a statistics read covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRange {
    /// The first day, UTC.
    pub from: NaiveDate,
    /// The last day, UTC, included.
    pub to: NaiveDate,
    /// The regulation counted.
    pub regulation: Regulation,
}

fn date(pairs: &Pairs, name: &str) -> Result<Option<NaiveDate>, DomainError> {
    query::param(pairs, name)
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .filter(|d| s.len() == 10 && d.format("%Y-%m-%d").to_string() == s)
                .filter(|d| (1970..=9999).contains(&d.year()))
                .ok_or_else(|| {
                    DomainError::invalid_field(name, "must be a date as YYYY-MM-DD, from 1970")
                })
        })
        .transpose()
}

impl StatsRange {
    /// Reads `from`, `to` and `regulation`; `today` is the current UTC day. Without `from`
    /// and `to`, the last 30 days up to today; with one of them, 30 days from or up to it.
    pub fn parse(pairs: &Pairs, today: NaiveDate) -> Result<StatsRange, DomainError> {
        query::only(pairs, &["from", "to", "regulation"])?;
        let regulation = query::regulation(pairs)?;
        let span = Days::new(DEFAULT_DAYS - 1);
        let (from, to) = match (date(pairs, "from")?, date(pairs, "to")?) {
            (Some(f), Some(t)) => (f, t),
            (Some(f), None) => (f, f.checked_add_days(span).unwrap_or(f).min(today).max(f)),
            (None, Some(t)) => (t.checked_sub_days(span).unwrap_or(t), t),
            (None, None) => (today.checked_sub_days(span).unwrap_or(today), today),
        };
        if from > to {
            return Err(DomainError::invalid_field(
                "from",
                format!("{from} is after to ({to})"),
            ));
        }
        let days = (to - from).num_days() as u64 + 1;
        if days > MAX_DAYS {
            return Err(DomainError::invalid_field(
                "to",
                format!("the range holds {days} days; the limit is {MAX_DAYS}"),
            ));
        }
        Ok(StatsRange {
            from,
            to,
            regulation,
        })
    }

    /// The first instant of the range.
    pub fn start(&self) -> Timestamp {
        day_start(self.from)
    }

    /// The first instant after the range.
    pub fn end(&self) -> Timestamp {
        Timestamp::from_millis(self.start().millis() + self.days() as i64 * DAY_MS)
    }

    /// How many days the range holds.
    pub fn days(&self) -> usize {
        (self.to - self.from).num_days() as usize + 1
    }
}

fn day_start(date: NaiveDate) -> Timestamp {
    Timestamp::from_millis(date.and_time(NaiveTime::MIN).and_utc().timestamp_millis())
}

/// What the store counted, by day of the range (0 for its first day).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentCounts {
    /// Events per day: (day, events).
    pub events: Vec<(u32, u64)>,
    /// Choices per day and purpose: (day, purpose id, given, refused).
    pub purposes: Vec<(u32, String, u64, u64)>,
}

/// How often a purpose was given and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurposeCounts {
    /// Events that set the purpose's `enabled` to true.
    pub given: u64,
    /// Events that set it to false.
    pub refused: u64,
}

/// One day of statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayStats {
    /// The UTC day, `YYYY-MM-DD`.
    pub date: String,
    /// Confirmed events of the regulation made that day.
    pub events: u64,
    /// Per purpose id: how many of those events gave and refused it.
    pub purposes: BTreeMap<String, PurposeCounts>,
}

/// Consent statistics over a range, as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentStats {
    /// The first day, `YYYY-MM-DD`.
    pub from: String,
    /// The last day, included.
    pub to: String,
    /// The regulation counted.
    pub regulation: String,
    /// Every day of the range, oldest first, days without events included.
    pub days: Vec<DayStats>,
}

impl ConsentStats {
    /// Lays out `counts` over every day of `range`.
    pub fn of(range: &StatsRange, counts: ConsentCounts) -> ConsentStats {
        let mut days: Vec<DayStats> = (0..range.days())
            .map(|i| DayStats {
                date: (range.from + Days::new(i as u64))
                    .format("%Y-%m-%d")
                    .to_string(),
                events: 0,
                purposes: BTreeMap::new(),
            })
            .collect();
        for (day, n) in counts.events {
            if let Some(d) = days.get_mut(day as usize) {
                d.events += n;
            }
        }
        for (day, purpose, given, refused) in counts.purposes {
            if (given, refused) == (0, 0) {
                continue;
            }
            if let Some(d) = days.get_mut(day as usize) {
                let c = d.purposes.entry(purpose).or_default();
                c.given += given;
                c.refused += refused;
            }
        }
        ConsentStats {
            from: range.from.format("%Y-%m-%d").to_string(),
            to: range.to.format("%Y-%m-%d").to_string(),
            regulation: range.regulation.to_string(),
            days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn field_of(r: Result<StatsRange, DomainError>) -> String {
        match r.unwrap_err() {
            DomainError::Invalid { errors, .. } => errors.as_map().keys().next().unwrap().clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_range_is_the_last_thirty_days() {
        let today = day("2026-12-10");
        let r = StatsRange::parse(&pairs(&[("organization_id", "o")]), today).unwrap();
        assert_eq!((r.from, r.to), (day("2026-11-11"), today));
        assert_eq!(r.days(), 30);
        assert_eq!(r.regulation.as_str(), "gdpr");
        assert_eq!(r.end().millis() - r.start().millis(), 30 * DAY_MS);
        let only_to = StatsRange::parse(&pairs(&[("to", "2026-01-30")]), today).unwrap();
        assert_eq!(only_to.from, day("2026-01-01"));
        let only_from = StatsRange::parse(&pairs(&[("from", "2026-12-01")]), today).unwrap();
        assert_eq!(only_from.to, today);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let today = day("2026-12-10");
        let r = |p: &[(&str, &str)]| StatsRange::parse(&pairs(p), today);
        assert_eq!(
            field_of(r(&[("from", "2026-12-05"), ("to", "2026-12-04")])),
            "from"
        );
        assert_eq!(
            field_of(r(&[("from", "2025-01-01"), ("to", "2026-01-02")])),
            "to"
        );
        assert!(
            r(&[("from", "2025-01-01"), ("to", "2026-01-01")]).is_ok(),
            "366 days"
        );
        assert_eq!(field_of(r(&[("from", "2026-2-1")])), "from");
        assert_eq!(field_of(r(&[("to", "2026-02-30")])), "to");
        assert_eq!(field_of(r(&[("regulation", "GDPR")])), "regulation");
        assert_eq!(field_of(r(&[("colour", "x")])), "colour");
    }

    #[test]
    fn counts_are_laid_out_on_every_day() {
        let range = StatsRange::parse(
            &pairs(&[("from", "2026-12-01"), ("to", "2026-12-03")]),
            day("2026-12-10"),
        )
        .unwrap();
        let stats = ConsentStats::of(
            &range,
            ConsentCounts {
                events: vec![(0, 3), (2, 1)],
                purposes: vec![(0, "news".into(), 2, 1), (2, "ads".into(), 0, 0)],
            },
        );
        let dates: Vec<&str> = stats.days.iter().map(|d| d.date.as_str()).collect();
        assert_eq!(dates, ["2026-12-01", "2026-12-02", "2026-12-03"]);
        assert_eq!(stats.days[0].events, 3);
        assert_eq!(
            stats.days[0].purposes["news"],
            PurposeCounts {
                given: 2,
                refused: 1
            }
        );
        assert_eq!(stats.days[1].events, 0);
        assert!(
            stats.days[2].purposes.is_empty(),
            "a purpose only named, never set"
        );
    }
}
