//! Identifiers and small value types, each parsed once so the rest of the code only holds valid
//! values.

use crate::limits::MAX_ID_CHARS;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Checks a client-chosen identifier: 1 to 255 characters, none of them control characters.
pub fn check_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.chars().count() > MAX_ID_CHARS {
        return Err(format!("must be at most {MAX_ID_CHARS} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(())
}

/// The identifier of an organization, the unit of tenancy. Shared, not copied: every stored
/// event and user in memory names its organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrganizationId(std::sync::Arc<str>);

impl OrganizationId {
    /// Parses an organization id: 1 to 64 characters among letters, digits, `_` and `-`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters".to_owned());
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("may contain only letters, digits, '_' and '-'".to_owned());
        }
        Ok(OrganizationId(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrganizationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identifier of a consent event: chosen by the client (an idempotency key) or made by the
/// server (a UUIDv7, so that ids sort by creation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Parses a client-chosen event id.
    pub fn parse(s: &str) -> Result<Self, String> {
        check_identifier(s)?;
        Ok(EventId(s.to_owned()))
    }

    /// A fresh server-made id.
    pub fn generate() -> Self {
        EventId(uuid::Uuid::now_v7().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a UUID, when it is written in canonical lowercase hyphenated form (so that
    /// storing it as 16 bytes gives back the same text).
    pub fn as_canonical_uuid(&self) -> Option<uuid::Uuid> {
        let parsed = uuid::Uuid::try_parse(&self.0).ok()?;
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        (parsed.hyphenated().encode_lower(&mut buf) == self.0.as_str()).then_some(parsed)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The regulation an event or a status belongs to (`gdpr`, `ccpa`, `cpra`, `lgpd`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Regulation(String);

impl Regulation {
    /// Parses a regulation: 1 to 32 characters among `a-z`, `0-9`, `_` and `-`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 32 {
            return Err("must be 1 to 32 characters".to_owned());
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err("may contain only a-z, 0-9, '_' and '-'".to_owned());
        }
        Ok(Regulation(s.to_owned()))
    }

    /// The regulation as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// False for `none`: an event under no regulation is stored and listed, but it changes
    /// no consent status (API-DECISIONS.md, "Notice events").
    pub fn changes_status(&self) -> bool {
        self.0 != Regulation::NONE
    }

    /// The regulation of an event made under no regulation.
    pub const NONE: &'static str = "none";
}

impl Default for Regulation {
    /// GDPR, the regulation of an event or a read that names none.
    fn default() -> Self {
        Regulation("gdpr".to_owned())
    }
}

impl fmt::Display for Regulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses an ISO 3166-1 alpha-2 country code (any case) into its upper-case form.
pub fn parse_country(s: &str) -> Result<String, String> {
    let upper = s.to_ascii_uppercase();
    if upper.len() == 2 && celes::Country::from_alpha2(&upper).is_ok() {
        Ok(upper)
    } else {
        Err(format!(
            "'{}' is not an ISO 3166-1 alpha-2 country code",
            truncate(s, 16)
        ))
    }
}

/// The first `max` characters of `s`, for quoting user input in messages.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_bounded_and_printable() {
        assert!(check_identifier("user@example.com").is_ok());
        assert!(check_identifier("").is_err());
        assert!(check_identifier(&"x".repeat(256)).is_err());
        assert!(check_identifier("a\nb").is_err());
    }

    #[test]
    fn only_canonical_uuids_are_stored_as_uuids() {
        let lower = EventId::parse("9556b7f5-ae22-4616-97f9-3f61e22f0ec7").unwrap();
        assert!(lower.as_canonical_uuid().is_some());
        let upper = EventId::parse("9556B7F5-AE22-4616-97F9-3F61E22F0EC7").unwrap();
        assert!(upper.as_canonical_uuid().is_none());
        assert!(
            EventId::parse("evt-1")
                .unwrap()
                .as_canonical_uuid()
                .is_none()
        );
    }

    #[test]
    fn countries_are_iso_alpha2() {
        assert_eq!(parse_country("fr").unwrap(), "FR");
        assert!(parse_country("XX").is_err());
        assert!(parse_country("FRA").is_err());
    }

    #[test]
    fn regulations_are_lowercase_slugs() {
        assert!(Regulation::parse("chilean-law-25").is_ok());
        assert!(Regulation::parse("GDPR").is_err());
        assert!(Regulation::parse("").is_err());
    }

    #[test]
    fn only_none_leaves_statuses_alone() {
        assert!(!Regulation::parse("none").unwrap().changes_status());
        for r in ["gdpr", "tcf", "gpp", "none-such"] {
            assert!(Regulation::parse(r).unwrap().changes_status(), "{r}");
        }
    }
}
