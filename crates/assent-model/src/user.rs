//! Users: how an event's user reference resolves, what clients may create and change, and how
//! a user is shown.

use crate::consents::Metadata;
use crate::error::{DomainError, FieldErrors};
use crate::event::UserRef;
use crate::ids::{OrganizationId, Regulation, check_identifier, parse_country};
use crate::json::{Fields, Path, check_bounds, type_name};
use crate::status::{ConsentsView, UserState};
use crate::tcf::{PurposeMap, TcfRequest, UserTcf, parse_params};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A stored user with everything derived from its events.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// The user id.
    pub id: String,
    /// The owning organization.
    pub organization_id: OrganizationId,
    /// The organization's own id for the user, if known.
    pub organization_user_id: Option<String>,
    /// Incremented on every change, for optimistic locking.
    pub version: i64,
    /// When the user was created.
    pub created_at: Timestamp,
    /// When the user last changed.
    pub updated_at: Timestamp,
    /// Profile and statuses with their stamps.
    pub state: UserState,
}

impl UserRecord {
    /// The user as the API shows it, with its status under `regulation`.
    pub fn view(&self, regulation: &Regulation) -> UserView {
        self.view_with(self.state.status(regulation))
    }

    /// The user as the API shows it, with the given status (a point-in-time one, say).
    pub fn view_with(&self, consents: ConsentsView) -> UserView {
        let profile = self.state.profile();
        UserView {
            id: self.id.clone(),
            organization_id: self.organization_id.to_string(),
            organization_user_id: self.organization_user_id.clone(),
            version: self.version,
            created_at: self.created_at.to_rfc3339(),
            updated_at: self.updated_at.to_rfc3339(),
            metadata: profile.metadata,
            country: profile.country,
            last_seen_country: profile.last_seen_country,
            consents,
        }
    }
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// User id.
    pub id: String,
    /// Owning organization.
    pub organization_id: String,
    /// The organization's own id for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_user_id: Option<String>,
    /// Version for optimistic locking.
    pub version: i64,
    /// When the user was created.
    pub created_at: String,
    /// When the user last changed.
    pub updated_at: String,
    /// Merged metadata.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    /// ISO 3166-1 alpha-2 country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Country of the latest event that carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_country: Option<String>,
    /// Consent status under the requested regulation.
    pub consents: ConsentsView,
}

/// A user found by a lookup, as [`resolve`] needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<K> {
    /// The store's key of the user.
    pub key: K,
    /// The user id.
    pub id: String,
    /// Its organization user id, if any.
    pub organization_user_id: Option<String>,
}

/// What to do with an event's user reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution<K> {
    /// The event belongs to an existing user; attach an organization user id if given.
    Existing {
        /// The user's key.
        key: K,
        /// An organization user id to set on a user that has none.
        attach_organization_user_id: Option<String>,
    },
    /// The event names a user that does not exist: create it.
    Create {
        /// The new user's id (the client's, or a fresh one).
        id: String,
        /// Its organization user id, if named.
        organization_user_id: Option<String>,
    },
}

/// Resolves an event's user: by `user.id` when given, else by `organization_user_id`;
/// `by_id` and `by_organization_user_id` are what the store found for each.
pub fn resolve<K: Copy + PartialEq>(
    user: &UserRef,
    by_id: Option<Found<K>>,
    by_organization_user_id: Option<Found<K>>,
) -> Result<Resolution<K>, DomainError> {
    let ouid = user.organization_user_id.as_deref();
    match (&user.id, by_id) {
        (Some(_), Some(found)) => {
            let attach = match (ouid, found.organization_user_id.as_deref()) {
                (None, _) => None,
                (Some(o), Some(existing)) if o == existing => None,
                (Some(o), Some(existing)) => {
                    return Err(DomainError::Conflict(format!(
                        "user '{}' already has organization_user_id '{existing}'; the event names '{o}'",
                        found.id
                    )));
                }
                (Some(o), None) => {
                    if let Some(other) = by_organization_user_id.filter(|f| f.key != found.key) {
                        return Err(DomainError::Conflict(format!(
                            "organization_user_id '{o}' already belongs to user '{}'",
                            other.id
                        )));
                    }
                    Some(o.to_owned())
                }
            };
            Ok(Resolution::Existing {
                key: found.key,
                attach_organization_user_id: attach,
            })
        }
        (Some(id), None) => {
            if let (Some(o), Some(other)) = (ouid, by_organization_user_id) {
                return Err(DomainError::Conflict(format!(
                    "organization_user_id '{o}' already belongs to user '{}', not to '{id}'",
                    other.id
                )));
            }
            Ok(Resolution::Create {
                id: id.clone(),
                organization_user_id: ouid.map(str::to_owned),
            })
        }
        (None, _) => match by_organization_user_id {
            Some(found) => Ok(Resolution::Existing {
                key: found.key,
                attach_organization_user_id: None,
            }),
            None => Ok(Resolution::Create {
                id: uuid::Uuid::now_v7().to_string(),
                organization_user_id: ouid.map(str::to_owned),
            }),
        },
    }
}

/// A user created directly (`POST /consents/users`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewUser {
    /// The id to give the user; a fresh one when absent.
    pub id: Option<String>,
    /// The organization's own id for the user.
    pub organization_user_id: Option<String>,
    /// Initial metadata.
    pub metadata: Option<Metadata>,
    /// Country.
    pub country: Option<String>,
    /// Last seen country.
    pub last_seen_country: Option<String>,
    /// With `$generate_tcfcs=true`: the TCF string to build for the new user's (empty) status.
    pub tcf: Option<UserTcf>,
}

/// A direct change to a user (`PATCH /consents/users/{id}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch {
    /// A new organization user id.
    pub organization_user_id: Option<String>,
    /// Metadata merged by key; a `null` value removes the key.
    pub metadata: Option<Metadata>,
    /// New country.
    pub country: Option<String>,
    /// New last seen country.
    pub last_seen_country: Option<String>,
    /// The version the client last saw; a mismatch is a conflict.
    pub version: Option<i64>,
    /// With `$generate_tcfcs=true`: the TCF string to build from the user's status.
    pub tcf: Option<UserTcf>,
}

/// What `$generate_tcfcs=true` brings to the parse of a user route: the server's purpose map
/// and the route's regulation, whose status the string encodes.
#[derive(Debug, Clone, Copy)]
pub struct GenerateTcfcs<'a> {
    /// The server's purpose map.
    pub map: &'a Arc<PurposeMap>,
    /// The route's `regulation`.
    pub regulation: &'a Regulation,
}

/// Reads `iab` (accepted, and ignored unless `generate` is given) and, with `generate`, its
/// `tcf` parameters.
fn parse_tcf(
    f: &Fields<'_, '_>,
    generate: Option<GenerateTcfcs<'_>>,
    errors: &mut FieldErrors,
) -> Option<UserTcf> {
    if let Some(v) = f.get("iab").filter(|v| !v.is_null() && !v.is_object()) {
        errors.add("iab", format!("must be an object, not {}", type_name(v)));
        return None;
    }
    let generate = generate?;
    let params = parse_params(f.get("iab"), f.child("iab"), errors)?;
    Some(UserTcf {
        regulation: generate.regulation.clone(),
        request: TcfRequest {
            params,
            map: generate.map.clone(),
        },
    })
}

const NEW_USER_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "organization_user_id",
    "metadata",
    "country",
    "last_seen_country",
    "iab",
];
const PATCH_FIELDS: &[&str] = &[
    "organization_user_id",
    "metadata",
    "country",
    "last_seen_country",
    "version",
    "iab",
];

fn country(f: &Fields<'_, '_>, key: &str, errors: &mut FieldErrors) -> Option<String> {
    f.string(key, errors).and_then(|s| match parse_country(s) {
        Ok(c) => Some(c),
        Err(message) => {
            errors.add(f.child(key), message);
            None
        }
    })
}

impl NewUser {
    /// Parses a `POST /consents/users` body; `generate` when the route asks for
    /// `$generate_tcfcs=true`.
    pub fn parse(
        value: &Value,
        organization_id: &OrganizationId,
        generate: Option<GenerateTcfcs<'_>>,
    ) -> Result<NewUser, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(value, Path::Root, NEW_USER_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        if let Some(org) = f.string("organization_id", &mut errors)
            && org != organization_id.as_str()
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        let user = NewUser {
            id: f.identifier("id", &mut errors).map(str::to_owned),
            organization_user_id: f
                .identifier("organization_user_id", &mut errors)
                .map(str::to_owned),
            metadata: f.metadata("metadata", &mut errors),
            country: country(&f, "country", &mut errors),
            last_seen_country: country(&f, "last_seen_country", &mut errors),
            tcf: parse_tcf(&f, generate, &mut errors),
        };
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(user)
    }
}

impl UserPatch {
    /// Parses a `PATCH /consents/users/{id}` body; `generate` when the route asks for
    /// `$generate_tcfcs=true`.
    pub fn parse(
        value: &Value,
        generate: Option<GenerateTcfcs<'_>>,
    ) -> Result<UserPatch, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(value, Path::Root, PATCH_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let version = match f.get("version") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v >= 0) => n.as_i64(),
            Some(other) => {
                errors.add(
                    "version",
                    format!("must be a non-negative integer, not {}", type_name(other)),
                );
                None
            }
        };
        let patch = UserPatch {
            organization_user_id: f
                .identifier("organization_user_id", &mut errors)
                .map(str::to_owned),
            metadata: f.metadata("metadata", &mut errors),
            country: country(&f, "country", &mut errors),
            last_seen_country: country(&f, "last_seen_country", &mut errors),
            version,
            tcf: parse_tcf(&f, generate, &mut errors),
        };
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(patch)
    }
}

/// How a users path names its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSelector {
    /// By user id.
    Id(String),
    /// By organization user id (`$by_organization_user_id=true`).
    OrganizationUserId(String),
}

impl UserSelector {
    /// Builds a selector from a path segment, checking it is a valid identifier.
    pub fn parse(raw: &str, by_organization_user_id: bool) -> Result<Self, DomainError> {
        check_identifier(raw).map_err(|m| DomainError::invalid_field("id", m))?;
        Ok(if by_organization_user_id {
            UserSelector::OrganizationUserId(raw.to_owned())
        } else {
            UserSelector::Id(raw.to_owned())
        })
    }

    /// A message for when no such user exists.
    pub fn not_found(&self) -> DomainError {
        DomainError::NotFound(match self {
            UserSelector::Id(id) => format!("user '{id}' not found"),
            UserSelector::OrganizationUserId(o) => {
                format!("user with organization_user_id '{o}' not found")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(key: i64, id: &str, ouid: Option<&str>) -> Option<Found<i64>> {
        Some(Found {
            key,
            id: id.into(),
            organization_user_id: ouid.map(Into::into),
        })
    }

    fn user(id: Option<&str>, ouid: Option<&str>) -> UserRef {
        UserRef {
            id: id.map(Into::into),
            organization_user_id: ouid.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn naming_both_attaches_the_organization_user_id_once() {
        let r = resolve(&user(Some("u"), Some("o")), found(1, "u", None), None).unwrap();
        assert_eq!(
            r,
            Resolution::Existing {
                key: 1,
                attach_organization_user_id: Some("o".into())
            }
        );
    }

    #[test]
    fn a_different_organization_user_id_is_a_conflict() {
        let r = resolve(
            &user(Some("u"), Some("o2")),
            found(1, "u", Some("o1")),
            None,
        );
        assert!(matches!(r, Err(DomainError::Conflict(_))));
    }

    #[test]
    fn an_organization_user_id_of_another_user_is_a_conflict() {
        let r = resolve(
            &user(Some("new"), Some("o")),
            None,
            found(2, "other", Some("o")),
        );
        assert!(matches!(r, Err(DomainError::Conflict(_))));
    }

    #[test]
    fn unknown_users_are_created() {
        let r = resolve::<i64>(&user(None, Some("o")), None, None).unwrap();
        assert!(matches!(r, Resolution::Create { organization_user_id: Some(o), .. } if o == "o"));
    }
}
