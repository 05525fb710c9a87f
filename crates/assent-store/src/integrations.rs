//! What the stores share about integrations: how an integration's configuration is kept in a
//! row, and what the delivery worker takes from and gives back to the outbox.

use crate::StoreError;
use assent_model::integration::{
    Attempt, ChangeKind, Delivery, Integration, IntegrationType, MAX_ATTEMPTS_KEPT, Mapping,
};
use assent_model::{OrganizationId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A delivery the worker should attempt now, with the change it carries.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    /// The delivery as stored (its attempts so far included).
    pub delivery: Delivery,
    /// The organization of the change.
    pub organization_id: OrganizationId,
    /// The change as destinations receive it (`{"type":…,"parameters":…}`), once
    /// [`Store::render_due`](crate::Store::render_due) has run.
    pub body: Vec<u8>,
    /// The change's number, when the store keeps the change as a reference to its log:
    /// `body` is then that reference until `render_due` replaces it with the body.
    pub unrendered: Option<i64>,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The destination took it.
    Delivered,
    /// Try again at this instant.
    RetryAt(Timestamp),
    /// Give up until someone asks for a retry.
    Park,
    /// The destination is gone (`410 Gone`): park the delivery and disable the integration.
    Gone,
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The delivery attempted.
    pub delivery_id: String,
    /// What happened.
    pub attempt: Attempt,
    /// What to do next.
    pub outcome: Outcome,
}

/// The query of the deliveries list.
#[derive(Debug, Clone, Default)]
pub struct DeliveriesQuery {
    /// Only deliveries in this state.
    pub status: Option<assent_model::integration::DeliveryStatus>,
    /// Page size.
    pub limit: usize,
    /// Deliveries to skip (newest first).
    pub skip: usize,
}

/// The part of an integration kept as one JSON document in its row.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disabled_reason: Option<String>,
    #[serde(default)]
    authentication: Map<String, Value>,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(default)]
    mappings: Vec<Mapping>,
    #[serde(default)]
    upsert_mode: bool,
    event_types: Vec<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inbound_token_hash: Option<String>,
}

/// The columns of an integration row other than its keys.
pub(crate) struct IntegrationRow<'a> {
    /// `type_id`.
    pub type_id: &'a str,
    /// Enabled or not.
    pub enabled: bool,
    /// The JSON document of [`StoredConfig`].
    pub config: Vec<u8>,
}

/// Splits an integration into the columns of its row.
pub(crate) fn integration_row(i: &Integration) -> Result<IntegrationRow<'_>, StoreError> {
    let config = StoredConfig {
        name: i.name.clone(),
        disabled_reason: i.disabled_reason.clone(),
        authentication: i.authentication.clone(),
        properties: i.properties.clone(),
        mappings: i.mappings.clone(),
        upsert_mode: i.upsert_mode,
        event_types: i
            .event_types
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        signing_secret: i.signing_secret.clone(),
        inbound_token_hash: i.inbound_token_hash.clone(),
    };
    Ok(IntegrationRow {
        type_id: i.type_id.as_str(),
        enabled: i.enabled,
        config: serde_json::to_vec(&config).map_err(|e| StoreError::Internal(e.to_string()))?,
    })
}

/// Rebuilds an integration from the columns of its row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn integration_from_row(
    org: &OrganizationId,
    id: String,
    type_id: &str,
    enabled: bool,
    config: &[u8],
    created_at: i64,
    updated_at: i64,
) -> Result<Integration, StoreError> {
    let c: StoredConfig = serde_json::from_slice(config)
        .map_err(|e| StoreError::Internal(format!("integration {id}: {e}")))?;
    Ok(Integration {
        type_id: IntegrationType::parse(type_id)
            .ok_or_else(|| StoreError::Internal(format!("integration {id}: type {type_id}")))?,
        id,
        organization_id: org.clone(),
        name: c.name,
        enabled,
        disabled_reason: c.disabled_reason,
        authentication: c.authentication,
        properties: c.properties,
        mappings: c.mappings,
        upsert_mode: c.upsert_mode,
        event_types: c
            .event_types
            .iter()
            .filter_map(|k| ChangeKind::parse(k))
            .collect(),
        signing_secret: c.signing_secret,
        inbound_token_hash: c.inbound_token_hash,
        created_at: Timestamp::from_millis(created_at),
        updated_at: Timestamp::from_millis(updated_at),
    })
}

/// Encodes a delivery's attempt log.
pub(crate) fn attempts_bytes(attempts: &[Attempt]) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(attempts).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Decodes a delivery's attempt log.
pub(crate) fn attempts_from(bytes: &[u8]) -> Result<Vec<Attempt>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Internal(format!("attempts: {e}")))
}

/// Adds an attempt to a log, keeping the last [`MAX_ATTEMPTS_KEPT`].
pub(crate) fn push_attempt(attempts: &mut Vec<Attempt>, attempt: Attempt) {
    attempts.push(attempt);
    if attempts.len() > MAX_ATTEMPTS_KEPT {
        let excess = attempts.len() - MAX_ATTEMPTS_KEPT;
        attempts.drain(..excess);
    }
}
