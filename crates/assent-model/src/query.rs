//! The query strings of list and delete routes: paging, sorting, flags and filters.

use crate::error::DomainError;
use crate::filter::Filter;
use crate::ids::Regulation;
use crate::limits::{DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use crate::time::Timestamp;
use crate::user::UserSelector;

/// Query parameters as decoded from a URL, in order.
pub type Pairs = [(String, String)];

/// Parameters every route accepts and that are not filters.
const COMMON: &[&str] = &[
    "organization_id",
    "$disable_integrations",
    "$generate_tcfcs",
];

/// Fields of an event that can be filtered on.
pub const EVENT_FILTER_ROOTS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "status",
    "regulation",
    "metadata.",
    "user.",
    "consents.",
    "proofs_id",
    "delegate.",
    "notice_id",
    "source.",
];

/// Fields of a user that can be filtered on.
pub const USER_FILTER_ROOTS: &[&str] = &[
    "id",
    "organization_user_id",
    "created_at",
    "updated_at",
    "version",
    "country",
    "last_seen_country",
    "metadata.",
];

/// Reads a boolean flag such as `$disable_integrations=true`.
pub fn flag(pairs: &Pairs, name: &str) -> Result<bool, DomainError> {
    match pairs.iter().rev().find(|(k, _)| k == name) {
        None => Ok(false),
        Some((_, v)) => match v.as_str() {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(DomainError::invalid_field(name, "must be true or false")),
        },
    }
}

fn single<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `$limit` and `$skip` of a list route: (limit, skip).
pub fn paging(pairs: &Pairs) -> Result<(usize, usize), DomainError> {
    Ok((
        number(pairs, "$limit", DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
        number(pairs, "$skip", 0, usize::MAX)?,
    ))
}

/// The value of parameter `name`, if given (the last one wins).
pub fn param<'a>(pairs: &'a Pairs, name: &str) -> Option<&'a str> {
    single(pairs, name)
}

fn number(pairs: &Pairs, name: &str, default: usize, max: usize) -> Result<usize, DomainError> {
    match single(pairs, name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(DomainError::invalid_field(
                name,
                format!("must be an integer between 0 and {max}"),
            )),
        },
    }
}

/// One page of a list, as `GET` list routes answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// How many items match, over all pages.
    pub total: usize,
    /// The page size asked for.
    pub limit: usize,
    /// How many matching items come before this page.
    pub skip: usize,
    /// The items of this page.
    pub data: Vec<T>,
}

/// Sort order of a list of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Oldest first (`$sort[created_at]=1`, the default).
    #[default]
    Ascending,
    /// Newest first (`$sort[created_at]=-1`).
    Descending,
}

/// The query of `GET` and `DELETE /consents/events`.
#[derive(Debug, Clone)]
pub struct EventsQuery {
    /// The one user whose events are selected.
    pub user: UserSelector,
    /// Conditions on the events.
    pub filter: Filter,
    /// Page size.
    pub limit: usize,
    /// Events to skip.
    pub skip: usize,
    /// Order by `created_at`, then arrival.
    pub sort: SortOrder,
}

impl EventsQuery {
    /// Parses the query of `GET /consents/events`: status defaults to `confirmed` and
    /// regulation to `gdpr` unless filtered on.
    pub fn for_list(pairs: &Pairs) -> Result<EventsQuery, DomainError> {
        let mut q = Self::parse(pairs, true)?;
        q.filter.default_to("status", "confirmed");
        q.filter.default_to("regulation", "gdpr");
        Ok(q)
    }

    /// Parses the query of `DELETE /consents/events`: at least one filter besides the user is
    /// required, so that a missing parameter cannot erase a user's whole history.
    pub fn for_delete(pairs: &Pairs) -> Result<EventsQuery, DomainError> {
        let q = Self::parse(pairs, false)?;
        if q.filter.is_empty() {
            return Err(DomainError::bad_request(
                "deleting events needs at least one filter besides the user \
                 (for example metadata.booking_id=42); to erase a user, use DELETE /consents/users/{id}",
            ));
        }
        Ok(q)
    }

    fn parse(pairs: &Pairs, paged: bool) -> Result<EventsQuery, DomainError> {
        let mut filters = Vec::new();
        let mut sort = SortOrder::Ascending;
        for (k, v) in pairs {
            match k.as_str() {
                k if COMMON.contains(&k) || k == "user_id" || k == "organization_user_id" => {}
                "$limit" | "$skip" | "$format" if paged => {}
                "$sort[created_at]" if paged => {
                    sort = match v.as_str() {
                        "1" => SortOrder::Ascending,
                        "-1" => SortOrder::Descending,
                        _ => return Err(DomainError::invalid_field(k, "must be 1 or -1")),
                    }
                }
                k if k.starts_with('$') => {
                    return Err(DomainError::invalid_field(
                        k,
                        "is not a known query parameter",
                    ));
                }
                _ => filters.push((k.clone(), v.clone())),
            }
        }
        for (k, _) in flags_of(pairs) {
            flag(pairs, k)?;
        }
        let user = match (
            single(pairs, "user_id"),
            single(pairs, "organization_user_id"),
        ) {
            (Some(id), _) => UserSelector::parse(id, false)
                .map_err(|_| DomainError::invalid_field("user_id", "is not a valid user id"))?,
            (None, Some(o)) => UserSelector::parse(o, true).map_err(|_| {
                DomainError::invalid_field("organization_user_id", "is not a valid id")
            })?,
            (None, None) => {
                return Err(DomainError::invalid_field(
                    "user_id",
                    "user_id or organization_user_id is required",
                ));
            }
        };
        Ok(EventsQuery {
            user,
            filter: Filter::parse(&filters, EVENT_FILTER_ROOTS)?,
            limit: number(pairs, "$limit", DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?,
            skip: number(pairs, "$skip", 0, usize::MAX)?,
            sort,
        })
    }
}

impl EventsQuery {
    /// Selects, sorts and pages `events` (all events of the query's user).
    pub fn page(
        &self,
        events: Vec<crate::event::ConsentEvent>,
    ) -> Page<crate::event::ConsentEvent> {
        let mut matching: Vec<crate::event::ConsentEvent> = events
            .into_iter()
            .filter(|e| serde_json::to_value(e.view()).is_ok_and(|doc| self.filter.matches(&doc)))
            .collect();
        matching.sort_by_key(|e| e.stamp());
        if self.sort == SortOrder::Descending {
            matching.reverse();
        }
        let total = matching.len();
        let data = matching
            .into_iter()
            .skip(self.skip)
            .take(self.limit)
            .collect();
        Page {
            total,
            limit: self.limit,
            skip: self.skip,
            data,
        }
    }

    /// True when `event` meets the query's conditions.
    pub fn selects(&self, event: &crate::event::ConsentEvent) -> bool {
        serde_json::to_value(event.view()).is_ok_and(|doc| self.filter.matches(&doc))
    }
}

fn flags_of(pairs: &Pairs) -> impl Iterator<Item = (&str, &str)> {
    pairs
        .iter()
        .filter(|(k, _)| k == "$disable_integrations" || k == "$generate_tcfcs")
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// The shape in which `GET /consents/events` shows events (`$format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// The Consents API shape (the default).
    #[default]
    Consents,
    /// The notice shape of CMP SDKs (`$format=notice`), see [`crate::notice`].
    Notice,
}

impl EventFormat {
    /// Reads `$format` (absent: the Consents API shape).
    pub fn parse(pairs: &Pairs) -> Result<EventFormat, DomainError> {
        match single(pairs, "$format") {
            None => Ok(EventFormat::Consents),
            Some("notice") => Ok(EventFormat::Notice),
            Some(_) => Err(DomainError::invalid_field(
                "$format",
                "must be 'notice' (leave $format out for the Consents API shape)",
            )),
        }
    }
}

/// The query of `GET /consents/users`.
#[derive(Debug, Clone)]
pub struct UsersQuery {
    /// The regulation whose status is shown.
    pub regulation: Regulation,
    /// Conditions on the users.
    pub filter: Filter,
    /// Page size.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

impl UsersQuery {
    /// Parses the query of `GET /consents/users`.
    pub fn parse(pairs: &Pairs) -> Result<UsersQuery, DomainError> {
        let mut filters = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                k if COMMON.contains(&k) => {}
                "$limit" | "$cursor" | "regulation" => {}
                k if k.starts_with('$') || k.starts_with("regulation[") => {
                    return Err(DomainError::invalid_field(
                        k,
                        "is not a known query parameter",
                    ));
                }
                _ => filters.push((k.clone(), v.clone())),
            }
        }
        Ok(UsersQuery {
            regulation: regulation(pairs)?,
            filter: Filter::parse(&filters, USER_FILTER_ROOTS)?,
            limit: number(pairs, "$limit", DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT)?.max(1),
            cursor: single(pairs, "$cursor").map(str::to_owned),
        })
    }
}

/// The `regulation` of a users read (default `gdpr`).
pub fn regulation(pairs: &Pairs) -> Result<Regulation, DomainError> {
    match single(pairs, "regulation") {
        None => Ok(Regulation::default()),
        Some(r) => Regulation::parse(r).map_err(|m| DomainError::invalid_field("regulation", m)),
    }
}

/// The `at` of a point-in-time user read, if given.
pub fn at(pairs: &Pairs) -> Result<Option<Timestamp>, DomainError> {
    single(pairs, "at")
        .map(|s| Timestamp::parse(s).map_err(|m| DomainError::invalid_field("at", m)))
        .transpose()
}

/// Checks that a single-resource query has only known parameters.
pub fn only(pairs: &Pairs, allowed: &[&str]) -> Result<(), DomainError> {
    for (k, _) in pairs {
        if !COMMON.contains(&k.as_str()) && !allowed.contains(&k.as_str()) {
            return Err(DomainError::invalid_field(
                k,
                "is not a known query parameter",
            ));
        }
    }
    for (k, _) in flags_of(pairs) {
        flag(pairs, k)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn listing_defaults_to_confirmed_gdpr() {
        let q =
            EventsQuery::for_list(&pairs(&[("organization_id", "o"), ("user_id", "u")])).unwrap();
        assert!(
            q.filter
                .matches(&json!({"status": "confirmed", "regulation": "gdpr"}))
        );
        assert!(
            !q.filter
                .matches(&json!({"status": "pending_approval", "regulation": "gdpr"}))
        );
    }

    #[test]
    fn listing_needs_a_user() {
        assert!(EventsQuery::for_list(&pairs(&[("organization_id", "o")])).is_err());
    }

    #[test]
    fn deleting_needs_a_filter_besides_the_user() {
        assert!(EventsQuery::for_delete(&pairs(&[("user_id", "u")])).is_err());
        assert!(EventsQuery::for_delete(&pairs(&[("user_id", "u"), ("metadata.k", "v")])).is_ok());
    }

    #[test]
    fn the_format_is_notice_or_left_out() {
        let with = |v: &str| pairs(&[("user_id", "u"), ("$format", v)]);
        assert_eq!(EventFormat::parse(&with("notice")), Ok(EventFormat::Notice));
        assert_eq!(
            EventFormat::parse(&pairs(&[("user_id", "u")])),
            Ok(EventFormat::Consents)
        );
        assert!(EventFormat::parse(&with("csv")).is_err());
        assert!(EventsQuery::for_list(&with("notice")).is_ok());
        assert!(EventsQuery::for_delete(&with("notice")).is_err());
    }

    #[test]
    fn notice_fields_can_be_filtered_on() {
        let q = EventsQuery::for_list(&pairs(&[
            ("user_id", "u"),
            ("source.type", "ios"),
            ("notice_id", "n"),
        ]))
        .unwrap();
        assert!(
            q.filter
                .matches(&json!({"status": "confirmed", "regulation": "gdpr",
            "notice_id": "n", "source": {"type": "ios"}}))
        );
        assert!(
            !q.filter
                .matches(&json!({"status": "confirmed", "regulation": "gdpr",
            "notice_id": "n", "source": {"type": "web"}}))
        );
    }

    #[test]
    fn limits_are_bounded() {
        assert!(EventsQuery::for_list(&pairs(&[("user_id", "u"), ("$limit", "1001")])).is_err());
        assert!(EventsQuery::for_list(&pairs(&[("user_id", "u"), ("$bogus", "1")])).is_err());
    }
}
