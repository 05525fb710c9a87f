//! `webhook-http`: each change is POSTed as Didomi's body to `properties.url`, signed per
//! Standard Webhooks 1.0, with an OAuth bearer token when the integration has credentials.

use crate::http::{OutboundClient, OutboundRequest, OutboundResponse, SendError};
use crate::oauth::{ClientCredentials, TokenCache};
use crate::signature::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, WebhookSecret};
use assent_model::integration::Integration;
use assent_store::integrations::DueDelivery;
use std::time::Duration;

/// Why an attempt failed, for the delivery log and the retry decision.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The destination's HTTP status, if it answered.
    pub response_code: Option<u16>,
    /// What went wrong (no secrets, no bodies of ours).
    pub error: String,
    /// The destination's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The destination answered `410 Gone`.
    pub gone: bool,
}

impl Failure {
    /// No answer: the request could not be sent or got no reply.
    pub fn of(e: SendError) -> Failure {
        Failure {
            response_code: None,
            error: e.to_string(),
            retry_after: None,
            gone: false,
        }
    }

    /// A failure before anything was sent (a configuration that cannot be used, say).
    pub fn other(error: impl Into<String>) -> Failure {
        Failure {
            response_code: None,
            error: error.into(),
            retry_after: None,
            gone: false,
        }
    }

    /// The destination answered `response`, which is not a success: its status, the start of
    /// its body, its `Retry-After`, and whether it is `410 Gone`.
    pub fn answered(response: &OutboundResponse) -> Failure {
        let excerpt: String = String::from_utf8_lossy(&response.body)
            .chars()
            .take(200)
            .collect();
        Failure {
            response_code: Some(response.status),
            error: if excerpt.trim().is_empty() {
                format!("the destination answered {}", response.status)
            } else {
                format!(
                    "the destination answered {}: {}",
                    response.status,
                    excerpt.trim()
                )
            },
            retry_after: response.retry_after,
            gone: response.status == 410,
        }
    }
}

/// The OAuth client credentials of an integration, if it has some.
pub fn credentials(integration: &Integration) -> Option<ClientCredentials> {
    Some(ClientCredentials {
        url: integration.credential("url")?.to_owned(),
        client_id: integration.credential("client_id")?.to_owned(),
        client_secret: integration.credential("client_secret")?.to_owned(),
        scope: integration.credential("scope").map(str::to_owned),
    })
}

/// Sends one delivery; returns the destination's 2xx status, or why it failed.
pub async fn send(
    client: &OutboundClient,
    tokens: &TokenCache,
    integration: &Integration,
    due: &DueDelivery,
) -> Result<u16, Failure> {
    let url = integration
        .property("url")
        .ok_or_else(|| Failure::other("the integration has no properties.url"))?;
    let secret = integration
        .signing_secret
        .as_deref()
        .map(WebhookSecret::parse)
        .transpose()
        .map_err(|e| Failure::of(SendError::Other(format!("signing secret: {e}"))))?;
    let id = &due.delivery.id;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        (HEADER_ID.to_owned(), id.clone()),
        (HEADER_TIMESTAMP.to_owned(), timestamp.to_string()),
    ];
    if let Some(secret) = &secret {
        headers.push((
            HEADER_SIGNATURE.to_owned(),
            secret.sign(id, timestamp, &due.body),
        ));
    }
    let creds = credentials(integration);
    if let Some(creds) = &creds {
        let token = tokens.bearer(client, creds).await.map_err(|e| Failure {
            error: format!("getting an OAuth token: {e}"),
            ..Failure::of(e)
        })?;
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    let response = client
        .send(OutboundRequest {
            method: reqwest::Method::POST,
            url: url.to_owned(),
            headers,
            body: due.body.clone(),
        })
        .await
        .map_err(Failure::of)?;
    if (200..300).contains(&response.status) {
        return Ok(response.status);
    }
    if response.status == 401
        && let Some(creds) = &creds
    {
        tokens.forget(creds);
    }
    Err(Failure::answered(&response))
}
