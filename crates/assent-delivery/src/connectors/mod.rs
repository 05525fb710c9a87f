//! Connectors: integrations that write a user's consent into another product's own API
//! instead of POSTing Didomi's webhook body ([`actito`] profiles and subscriptions,
//! [`mparticle`] GDPR consent state).
//!
//! Both work the same way. A connector reads the user of a `user.created` or `user.updated`
//! change (its `new_entity`), identifies it by its `organization_user_id`, looks up each of
//! the integration's `mappings` (`value`: a path key of the status, see
//! [`assent_model::integration::PathKeys`]; `id`: the destination's field) and sends what it
//! found through the [`OutboundClient`](crate::http::OutboundClient), so the SSRF rules of
//! webhooks apply to `properties.base_url` too. Their answers go through the same retry,
//! parking and `410 Gone` rules as webhooks ([`Failure`]).
//!
//! Some changes have nothing to send; they count as delivered at once, with no request and
//! no response code in the log ([`Sent::Nothing`]):
//!
//! - `event.*` changes: the user change that comes with them carries the resulting status;
//! - `user.deleted`: erasing a user in Assent does not delete the destination's contact (that
//!   is the destination's own erasure process) and there is no status left to send;
//! - users without an `organization_user_id`: the destination could not match them;
//! - changes caused by an event under another regulation than GDPR: mappings name GDPR
//!   choices, and the user is shown under the event's regulation.

pub mod actito;
pub mod mparticle;

use crate::webhook::Failure;
use assent_model::Timestamp;
use assent_model::integration::{ChangeKind, Integration, PathKeys};
use assent_model::user::UserView;
use assent_store::integrations::DueDelivery;
use serde::Deserialize;
use serde_json::Value;

/// What a connector did with a change it did not fail on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The destination took it, answering this status (or, for a dropped update, the status
    /// that says why it was dropped).
    Answered(u16),
    /// The change needed no request.
    Nothing,
}

impl Sent {
    /// The status to log, if a request was made.
    pub fn response_code(self) -> Option<u16> {
        match self {
            Sent::Answered(code) => Some(code),
            Sent::Nothing => None,
        }
    }
}

/// What connectors keep between deliveries (cloning it is cheap and shares the state).
#[derive(Debug, Clone, Default)]
pub struct ConnectorState {
    /// Actito access tokens.
    pub actito: actito::Tokens,
}

/// A user change a connector has something to send for.
#[derive(Debug, Clone)]
pub(crate) struct UserChange {
    /// The user after the change.
    pub user: UserView,
    /// Its `organization_user_id`.
    pub organization_user_id: String,
    /// The user's status as path keys.
    pub keys: PathKeys,
    /// When the choices were made: the `created_at` of the event that caused the change, or
    /// the user's `updated_at` when no event did, in milliseconds since the epoch.
    pub at_millis: i64,
}

/// The parts of a `user.*` body connectors read.
#[derive(Deserialize)]
struct UserMessage {
    parameters: UserParameters,
}

#[derive(Deserialize)]
struct UserParameters {
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    new_entity: Option<UserView>,
}

/// The user change of `due` that a connector has something to send for, or `None` (logged at
/// debug) when there is nothing to send to `destination`.
pub(crate) fn change_to_send(
    integration: &Integration,
    due: &DueDelivery,
    destination: &str,
) -> Result<Option<UserChange>, Failure> {
    match user_change(due.delivery.kind, &due.body)? {
        Ok(change) => Ok(Some(change)),
        Err(reason) => {
            tracing::debug!(integration = %integration.id, delivery = %due.delivery.id, reason, "nothing to send to {destination}");
            Ok(None)
        }
    }
}

/// The user change of a delivery, or why there is nothing to send for it.
fn user_change(kind: ChangeKind, body: &[u8]) -> Result<Result<UserChange, &'static str>, Failure> {
    if !matches!(kind, ChangeKind::UserCreated | ChangeKind::UserUpdated) {
        return Ok(Err(match kind {
            ChangeKind::UserDeleted => "user.deleted changes are not sent to connectors",
            _ => "event changes are not sent to connectors",
        }));
    }
    let message: UserMessage = serde_json::from_slice(body)
        .map_err(|e| Failure::other(format!("the change could not be read: {e}")))?;
    let Some(user) = message.parameters.new_entity else {
        return Err(Failure::other("the change has no new_entity"));
    };
    let source = message.parameters.source.as_ref();
    if let Some(regulation) = source
        .and_then(|s| s.get("regulation"))
        .and_then(Value::as_str)
        && regulation != "gdpr"
    {
        return Ok(Err(
            "changes under another regulation than GDPR are not sent",
        ));
    }
    let Some(ouid) = user.organization_user_id.clone() else {
        return Ok(Err("the user has no organization_user_id"));
    };
    let at = source
        .and_then(|s| s.get("created_at"))
        .and_then(Value::as_str)
        .unwrap_or(&user.updated_at);
    let at_millis = Timestamp::parse(at)
        .unwrap_or_else(|_| Timestamp::now())
        .millis();
    Ok(Ok(UserChange {
        keys: PathKeys::of(&user.consents),
        user,
        organization_user_id: ouid,
        at_millis,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(ouid: Option<&str>) -> Value {
        let mut u = json!({
            "id": "u1", "organization_id": "acme", "version": 2,
            "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-02T00:00:00.000Z",
            "metadata": {"plan": "pro"},
            "consents": {"purposes": [{"id": "news", "enabled": true, "enabled_li": null}],
                         "channels": [], "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []}}
        });
        if let Some(o) = ouid {
            u["organization_user_id"] = json!(o);
        }
        u
    }

    fn body(kind: &str, parameters: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "parameters": parameters})).unwrap()
    }

    #[test]
    fn user_changes_are_read_with_their_time() {
        let b = body(
            "user.updated",
            json!({"new_entity": user(Some("alice")),
                   "source": {"regulation": "gdpr", "created_at": "2024-01-03T00:00:00.000Z"}}),
        );
        let change = user_change(ChangeKind::UserUpdated, &b).unwrap().unwrap();
        assert_eq!(change.organization_user_id, "alice");
        assert_eq!(
            change.keys.get("consents_purposes_news_enabled"),
            Some(true)
        );
        assert_eq!(
            change.at_millis,
            Timestamp::parse("2024-01-03T00:00:00.000Z")
                .unwrap()
                .millis()
        );
        let b = body("user.created", json!({"new_entity": user(Some("alice"))}));
        let change = user_change(ChangeKind::UserCreated, &b).unwrap().unwrap();
        assert_eq!(
            change.at_millis,
            Timestamp::parse("2024-01-02T00:00:00.000Z")
                .unwrap()
                .millis(),
            "no source: the user's updated_at"
        );
    }

    #[test]
    fn some_changes_have_nothing_to_send() {
        let event = body("event.created", json!({"entity": {}}));
        assert!(
            user_change(ChangeKind::EventCreated, &event)
                .unwrap()
                .is_err()
        );
        let deleted = body("user.deleted", json!({"old_entity": user(Some("a"))}));
        assert!(
            user_change(ChangeKind::UserDeleted, &deleted)
                .unwrap()
                .is_err()
        );
        let anonymous = body("user.created", json!({"new_entity": user(None)}));
        assert!(
            user_change(ChangeKind::UserCreated, &anonymous)
                .unwrap()
                .is_err()
        );
        let ccpa = body(
            "user.updated",
            json!({"new_entity": user(Some("a")), "source": {"regulation": "ccpa"}}),
        );
        assert!(
            user_change(ChangeKind::UserUpdated, &ccpa)
                .unwrap()
                .is_err()
        );
        assert!(user_change(ChangeKind::UserUpdated, b"not json").is_err());
    }
}
