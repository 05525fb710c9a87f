//! Consent tokens: what an organization grants one end user's browser or app.
//!
//! `POST /consents/tokens` asks for a token that lets a client act for one end user only: read
//! that user and its events, and create events for it. The token carries what the organization
//! wants applied to every event it creates (event metadata, user metadata, a delegate).

use crate::consents::Metadata;
use crate::error::{DomainError, FieldErrors};
use crate::event::{Delegate, parse_delegate};
use crate::json::{Fields, Path, check_bounds};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lifetime of a consent token when the request names none, in seconds.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 900;
/// Longest lifetime of a consent token, in seconds (30 days).
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// What a consent token grants, as asked by `POST /consents/tokens` and carried in the token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsentGrant {
    /// The end user the token acts for.
    pub organization_user_id: String,
    /// Seconds the token lives.
    pub lifetime: u64,
    /// Merged into the metadata of every event the token creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_metadata: Option<Metadata>,
    /// Merged into the user metadata of every event the token creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// Set as the delegate of every event the token creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Free-form metadata kept in the token only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl ConsentGrant {
    /// Parses a `POST /consents/tokens` body for `organization_id` (which the body may repeat).
    pub fn parse(value: &Value, organization_id: &str) -> Result<ConsentGrant, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        const FIELDS: &[&str] = &[
            "organization_id",
            "organization_user_id",
            "lifetime",
            "event",
            "delegate",
            "metadata",
        ];
        let Some(f) = Fields::of(value, Path::Root, FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        if let Some(org) = f.string("organization_id", &mut errors)
            && org != organization_id
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        let user = f.identifier("organization_user_id", &mut errors);
        if f.get("organization_user_id").is_none_or(Value::is_null) {
            errors.add("organization_user_id", "is required");
        }
        let lifetime = match f.get("lifetime") {
            None | Some(Value::Null) => DEFAULT_TOKEN_LIFETIME_SECS,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_TOKEN_LIFETIME_SECS).contains(&n) => n,
                _ => {
                    errors.add(
                        "lifetime",
                        format!(
                            "must be a whole number of seconds from 1 to {MAX_TOKEN_LIFETIME_SECS}"
                        ),
                    );
                    DEFAULT_TOKEN_LIFETIME_SECS
                }
            },
        };
        let (event_metadata, user_metadata) = match f.get("event") {
            None | Some(Value::Null) => (None, None),
            Some(event) => parse_event_part(event, &mut errors),
        };
        let delegate = f
            .get("delegate")
            .filter(|v| !v.is_null())
            .and_then(|v| parse_delegate(v, Path::Root.key("delegate"), &mut errors));
        let metadata = f.metadata("metadata", &mut errors);
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(ConsentGrant {
            organization_user_id: user.unwrap_or_default().to_owned(),
            lifetime,
            event_metadata,
            user_metadata,
            delegate,
            metadata,
        })
    }
}

/// Reads `event: {metadata, user: {metadata}}`.
fn parse_event_part(
    event: &Value,
    errors: &mut FieldErrors,
) -> (Option<Metadata>, Option<Metadata>) {
    let root = Path::Root;
    let path = root.key("event");
    let Some(f) = Fields::of(event, path, &["metadata", "user"], errors) else {
        return (None, None);
    };
    let metadata = f.metadata("metadata", errors);
    let user_metadata = match f.get("user") {
        None | Some(Value::Null) => None,
        Some(user) => {
            let user_path = path.key("user");
            Fields::of(user, user_path, &["metadata"], errors).and_then(|u| {
                let m = u.metadata("metadata", errors);
                u.finish(errors);
                m
            })
        }
    };
    f.finish(errors);
    (metadata, user_metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_bounds_of_the_lifetime() {
        let grant = ConsentGrant::parse(&json!({"organization_user_id": "u"}), "o").unwrap();
        assert_eq!(grant.lifetime, DEFAULT_TOKEN_LIFETIME_SECS);
        for bad in [
            json!(0),
            json!(MAX_TOKEN_LIFETIME_SECS + 1),
            json!("x"),
            json!(1.5),
        ] {
            let err =
                ConsentGrant::parse(&json!({"organization_user_id": "u", "lifetime": bad}), "o")
                    .unwrap_err();
            let DomainError::Invalid { errors, .. } = err else {
                panic!("not a 400");
            };
            assert!(errors.as_map().contains_key("lifetime"));
        }
    }

    #[test]
    fn reads_what_is_applied_to_events() {
        let grant = ConsentGrant::parse(
            &json!({
                "organization_id": "o",
                "organization_user_id": "u",
                "lifetime": 60,
                "event": {"metadata": {"a": 1}, "user": {"metadata": {"b": 2}}},
                "delegate": {"id": "agent"},
                "metadata": {"c": 3}
            }),
            "o",
        )
        .unwrap();
        assert_eq!(grant.event_metadata.unwrap()["a"], 1);
        assert_eq!(grant.user_metadata.unwrap()["b"], 2);
        assert_eq!(grant.delegate.unwrap().id, "agent");
        assert_eq!(grant.metadata.unwrap()["c"], 3);
    }

    #[test]
    fn refuses_a_missing_user_and_another_organization() {
        let DomainError::Invalid { errors, .. } =
            ConsentGrant::parse(&json!({"organization_id": "x"}), "o").unwrap_err()
        else {
            panic!("not a 400");
        };
        assert!(errors.as_map().contains_key("organization_user_id"));
        assert!(errors.as_map().contains_key("organization_id"));
    }
}
