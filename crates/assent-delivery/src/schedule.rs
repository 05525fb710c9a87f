//! When a failed delivery is tried again, and when it is given up (parked).
//!
//! A [`RetrySchedule`] is the list of delays before retry 1, 2, …; once every retry has
//! failed, the delivery is parked for an operator to look at or replay. Each delay gets ±10%
//! of random jitter so that deliveries that failed together do not all come back at once,
//! and a destination's `Retry-After` is honoured (up to a day).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// The longest wait a destination may ask for through `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The relative spread of the random jitter added to each scheduled delay (±10%).
const JITTER: f64 = 0.1;

/// The delays between the attempts of one delivery.
///
/// The default is 5s, 5m, 30m, 2h, 5h, 10h, 10h: eight attempts over about a day and a half,
/// after which the delivery is parked. It reads from and prints as a comma-separated list of
/// durations, such as `5s,5m,30m,2h,5h,10h,10h` or `100ms,200ms`; the empty text means no
/// retries at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// A schedule with these delays before retry 1, 2, ….
    pub fn new(delays: Vec<Duration>) -> RetrySchedule {
        RetrySchedule { delays }
    }

    /// The delays before retry 1, 2, …, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How long to wait before the next attempt, after `failed_attempts` attempts (counting
    /// the first one) have all failed; `None` when the schedule is exhausted and the delivery
    /// must be parked.
    ///
    /// The scheduled delay gets ±10% uniform jitter. A `retry_after` from the destination
    /// (see [`parse_retry_after`]), capped at 24 hours, lengthens the wait when it is longer.
    pub fn next_delay(
        &self,
        failed_attempts: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let index = usize::try_from(failed_attempts.max(1) - 1).ok()?;
        let delay = *self.delays.get(index)?;
        let factor = rand::rng().random_range(1.0 - JITTER..=1.0 + JITTER);
        // A delay so long that the jitter would overflow keeps its exact value.
        let jittered = Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }

    /// The most attempts one delivery gets: the first one and one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}

impl Default for RetrySchedule {
    fn default() -> RetrySchedule {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 60 * MINUTE;
        RetrySchedule::new(
            [
                5,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<RetrySchedule, String> {
        if s.trim().is_empty() {
            return Ok(RetrySchedule::new(Vec::new()));
        }
        let delays = s
            .split(',')
            .enumerate()
            .map(|(index, item)| {
                let item = item.trim();
                if item.is_empty() {
                    return Err(format!(
                        "retry delay {} of {s:?} is empty; expected durations such as 5s,5m,2h",
                        index + 1
                    ));
                }
                humantime::parse_duration(item).map_err(|error| {
                    format!(
                        "retry delay {item:?} is not a duration ({error}); expected durations such as 5s,5m,2h"
                    )
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RetrySchedule::new(delays))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, delay) in self.delays.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", humantime::format_duration(*delay))?;
        }
        Ok(())
    }
}

/// Reads an HTTP `Retry-After` value, either delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), as the wait from `now`. A date already past means no
/// wait. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // An absurdly long number still means "a long time": saturate instead of failing.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn default_schedule_has_seven_retries() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            schedule.delays(),
            [
                secs(5),
                secs(300),
                secs(1800),
                secs(7200),
                secs(18000),
                secs(36000),
                secs(36000)
            ]
        );
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(schedule.to_string(), "5s,5m,30m,2h,5h,10h,10h");
    }

    #[test]
    fn delays_are_jittered_within_ten_percent() {
        let schedule = RetrySchedule::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let delay = schedule.next_delay(3, None).unwrap();
            assert!(delay >= secs(1620) && delay <= secs(1980), "{delay:?}");
            seen.insert(delay);
        }
        assert!(seen.len() > 10, "the jitter must actually vary the delay");
        let first = schedule.next_delay(1, None).unwrap();
        assert!(first >= Duration::from_millis(4500) && first <= Duration::from_millis(5500));
    }

    #[test]
    fn exhausted_schedule_parks() {
        let schedule = RetrySchedule::default();
        assert!(schedule.next_delay(7, None).is_some());
        assert_eq!(schedule.next_delay(8, None), None);
        assert_eq!(schedule.next_delay(u32::MAX, None), None);

        let none: RetrySchedule = "".parse().unwrap();
        assert_eq!(none.max_attempts(), 1);
        assert_eq!(none.next_delay(1, None), None);
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_and_is_capped() {
        let schedule = RetrySchedule::default();
        let longer = schedule.next_delay(1, Some(secs(120))).unwrap();
        assert_eq!(longer, secs(120));
        let shorter = schedule.next_delay(2, Some(secs(1))).unwrap();
        assert!(shorter >= secs(270), "{shorter:?}");
        let huge = schedule.next_delay(1, Some(secs(7 * 24 * 3600))).unwrap();
        assert_eq!(huge, secs(24 * 3600));
        // Retry-After does not revive an exhausted schedule.
        assert_eq!(schedule.next_delay(8, Some(secs(60))), None);
    }

    #[test]
    fn parses_comma_separated_durations() {
        let schedule: RetrySchedule = "100ms, 200ms,1m".parse().unwrap();
        assert_eq!(
            schedule.delays(),
            [
                Duration::from_millis(100),
                Duration::from_millis(200),
                secs(60)
            ]
        );
        assert_eq!(schedule.max_attempts(), 4);
        let default: RetrySchedule = "5s,5m,30m,2h,5h,10h,10h".parse().unwrap();
        assert_eq!(default, RetrySchedule::default());
        assert_eq!(
            default.to_string().parse::<RetrySchedule>().unwrap(),
            default
        );
    }

    #[test]
    fn parse_errors_name_the_bad_item() {
        let error = "5s,soon,2h".parse::<RetrySchedule>().unwrap_err();
        assert!(error.contains("\"soon\""), "{error}");
        let error = "5s,,2h".parse::<RetrySchedule>().unwrap_err();
        assert!(error.contains("retry delay 2"), "{error}");
        assert!(error.contains("empty"), "{error}");
        let error = "5".parse::<RetrySchedule>().unwrap_err();
        assert!(error.contains("\"5\""), "{error}");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(secs(0)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("tomorrow", now), None);
    }
}
