//! Conversions between rows and domain values.

use assent_model::event::EventStatus;
use assent_model::{EventId, Timestamp};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Row, ToSql};

/// Bits of `seq` below the arrival time (see [`next_seq`]).
const SEQ_TIME_SHIFT: u32 = 20;

/// The next arrival number after `last`: the current time in ms shifted left by 20 bits, or
/// `last + 1` if that is not larger (a burst within one millisecond, or a clock step back).
pub fn next_seq(last: i64, now: Timestamp) -> i64 {
    (now.millis() << SEQ_TIME_SHIFT).max(last + 1)
}

/// The arrival time encoded in a `seq`.
pub fn seq_time(seq: i64) -> Timestamp {
    Timestamp::from_millis(seq >> SEQ_TIME_SHIFT)
}

/// An event id as stored: 16 bytes for canonical UUIDs, text otherwise.
pub enum StoredId<'a> {
    /// A canonical lowercase UUID.
    Uuid([u8; 16]),
    /// Any other id.
    Text(&'a str),
}

impl<'a> StoredId<'a> {
    /// The stored form of `id`.
    pub fn of(id: &'a EventId) -> Self {
        match id.as_canonical_uuid() {
            Some(u) => StoredId::Uuid(*u.as_bytes()),
            None => StoredId::Text(id.as_str()),
        }
    }
}

impl ToSql for StoredId<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            StoredId::Uuid(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            StoredId::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// Reads a stored event id back into its text form.
pub fn read_id(row: &Row<'_>, idx: usize) -> rusqlite::Result<EventId> {
    let text = match row.get_ref(idx)? {
        ValueRef::Blob(b) => uuid::Uuid::from_slice(b)
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    idx,
                    rusqlite::types::Type::Blob,
                    e.into(),
                )
            })?
            .to_string(),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                idx,
                "id".into(),
                other.data_type(),
            ));
        }
    };
    EventId::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

/// The stored number of a status.
pub fn status_code(status: EventStatus) -> i64 {
    match status {
        EventStatus::Confirmed => 0,
        EventStatus::PendingApproval => 1,
    }
}

/// The status of a stored number.
pub fn status_of(code: i64) -> EventStatus {
    if code == 0 {
        EventStatus::Confirmed
    } else {
        EventStatus::PendingApproval
    }
}

/// Wraps a decoding failure of a JSON column.
pub fn json_error(idx: usize, e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Blob, Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_monotonic_and_carries_the_time() {
        let t = Timestamp::from_millis(1_700_000_000_000);
        let a = next_seq(0, t);
        let b = next_seq(a, t);
        assert!(b > a);
        assert_eq!(seq_time(b), t);
        // A clock that steps back still yields a larger seq.
        let c = next_seq(b, Timestamp::from_millis(1_600_000_000_000));
        assert!(c > b);
    }
}
