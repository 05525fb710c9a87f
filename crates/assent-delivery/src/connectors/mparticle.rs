//! `mparticle`: a user's choices sent as GDPR consent state through mParticle's
//! server-to-server Events API (v2, <https://docs.mparticle.com/developers/apis/http/>).
//!
//! One `POST {base_url}/v2/events` per change, authenticated with HTTP Basic auth
//! (`api_key:api_secret` of a server-to-server input), carrying one batch:
//!
//! ```json
//! {"source_request_id": "<delivery id>",
//!  "environment": "production",
//!  "user_identities": {"customer_id": "<organization_user_id>"},
//!  "consent_state": {"gdpr": {"<mapping id>": {"consented": true,
//!                                              "timestamp_unixtime_ms": 1700000000000}}},
//!  "events": []}
//! ```
//!
//! `environment` is `properties.environment` (`production` by default, or `development`).
//! Each mapping whose path key has a choice in the user's status becomes a purpose of
//! `consent_state.gdpr`, keyed by the mapping's `id` (the mParticle purpose); a mapping without
//! one is left out, so mParticle keeps what it had (with none at all, nothing is sent).
//! `timestamp_unixtime_ms` is when the event
//! that caused the change was made (the user's `updated_at` without one). `document`,
//! `location` and `hardware_id` are optional in mParticle's schema and Assent has nothing to
//! put there. `source_request_id` is the delivery id, the same on every retry. mParticle
//! answers `202 Accepted`; `429` and `503` come with `Retry-After`, which is honoured.

use super::{ConnectorState, Sent, change_to_send};
use crate::http::{OutboundClient, OutboundRequest};
use crate::webhook::Failure;
use assent_model::integration::Integration;
use assent_store::integrations::DueDelivery;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde::Serialize;
use std::collections::BTreeMap;

/// Where mParticle's Events API is unless `properties.base_url` says otherwise (other pods:
/// `https://s2s.us2.mparticle.com`, `https://s2s.eu1.mparticle.com`,
/// `https://s2s.au1.mparticle.com`).
pub const DEFAULT_BASE_URL: &str = "https://s2s.mparticle.com";

/// One purpose of `consent_state.gdpr`.
#[derive(Serialize)]
struct Purpose {
    consented: bool,
    timestamp_unixtime_ms: i64,
}

#[derive(Serialize)]
struct ConsentState<'a> {
    gdpr: BTreeMap<&'a str, Purpose>,
}

#[derive(Serialize)]
struct UserIdentities<'a> {
    customer_id: &'a str,
}

/// An Events API batch.
#[derive(Serialize)]
struct Batch<'a> {
    source_request_id: &'a str,
    environment: &'a str,
    user_identities: UserIdentities<'a>,
    consent_state: ConsentState<'a>,
    events: &'a [serde_json::Value],
}

/// Sends one delivery to mParticle; see the module documentation.
pub async fn send(
    client: &OutboundClient,
    _state: &ConnectorState,
    integration: &Integration,
    due: &DueDelivery,
) -> Result<Sent, Failure> {
    let Some(change) = change_to_send(integration, due, "mParticle")? else {
        return Ok(Sent::Nothing);
    };
    let (Some(key), Some(secret)) = (
        integration.credential("api_key"),
        integration.credential("api_secret"),
    ) else {
        return Err(Failure::other(
            "the integration has no authentication.api_key and api_secret",
        ));
    };
    let gdpr: BTreeMap<&str, Purpose> = integration
        .mappings
        .iter()
        .filter_map(|m| {
            change.keys.get(&m.value).map(|consented| {
                (
                    m.id.as_str(),
                    Purpose {
                        consented,
                        timestamp_unixtime_ms: change.at_millis,
                    },
                )
            })
        })
        .collect();
    if gdpr.is_empty() {
        tracing::debug!(integration = %integration.id, delivery = %due.delivery.id, "no mapped purpose has a choice: nothing to send to mParticle");
        return Ok(Sent::Nothing);
    }
    let body = serde_json::to_vec(&Batch {
        source_request_id: &due.delivery.id,
        environment: integration.property("environment").unwrap_or("production"),
        user_identities: UserIdentities {
            customer_id: &change.organization_user_id,
        },
        consent_state: ConsentState { gdpr },
        events: &[],
    })
    .map_err(|e| Failure::other(format!("the batch could not be written: {e}")))?;
    let base = integration.property("base_url").unwrap_or(DEFAULT_BASE_URL);
    let mut url = url::Url::parse(base)
        .map_err(|e| Failure::other(format!("properties.base_url is not a URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| Failure::other("properties.base_url cannot take a path"))?
        .pop_if_empty()
        .extend(["v2", "events"]);
    let response = client
        .send(OutboundRequest {
            method: Method::POST,
            url: url.into(),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("accept".to_owned(), "application/json".to_owned()),
                (
                    "authorization".to_owned(),
                    format!("Basic {}", STANDARD.encode(format!("{key}:{secret}"))),
                ),
            ],
            body,
        })
        .await
        .map_err(Failure::of)?;
    if response.is_success() {
        Ok(Sent::Answered(response.status))
    } else {
        Err(Failure::answered(&response))
    }
}
