//! Instants as the API writes them: RFC 3339, UTC, millisecond precision.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An instant, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Earliest accepted instant: 1970-01-01T00:00:00Z.
const MIN_MS: i64 = 0;
/// Latest accepted instant: 9999-12-31T23:59:59.999Z.
const MAX_MS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// The current instant from the system clock.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// Parses an RFC 3339 date-time with any offset; sub-millisecond digits are dropped.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parsed = DateTime::parse_from_rfc3339(s)
            .map_err(|_| "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z".to_owned())?;
        let ms = parsed.timestamp_millis();
        if !(MIN_MS..=MAX_MS).contains(&ms) {
            return Err("must be between 1970-01-01 and 9999-12-31".to_owned());
        }
        Ok(Timestamp(ms))
    }

    /// The instant as `2024-05-01T12:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_prints_utc_millis() {
        let t = Timestamp::parse("2020-06-03T23:28:55.123456+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2020-06-03T21:28:55.123Z");
        assert_eq!(
            Timestamp::parse("2020-06-03T21:28:55Z").unwrap().millis(),
            1_591_219_735_000
        );
    }

    #[test]
    fn rejects_non_rfc3339() {
        assert!(Timestamp::parse("2020-06-03").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("1960-01-01T00:00:00Z").is_err());
    }
}
