//! `/v1/consents/proofs`: files that prove how a consent was given, stored by content address.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, MAX_PROOF_BODY_BYTES, QueryPairs};
use assent_model::json::{Fields, Path};
use assent_model::proof::ProofFile;
use assent_model::{FieldErrors, query};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A proof to store.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProofIn {
    /// `data:<mime>;base64,<bytes>`: a PDF, PNG, JPEG, GIF, DOC, DOCX or MSG file of at most
    /// 15 MB once encoded; its type is read from its bytes.
    pub file: String,
}

/// A stored proof.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProofOut {
    /// `<sha256 hex>.<extension>`: reference it from events with `proofs_id`.
    pub id: String,
    /// Bytes of the file.
    pub size: usize,
    /// The file as a data URI (on reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Stores a proof file (the same file twice is stored once).
#[utoipa::path(
    post,
    path = "/v1/consents/proofs",
    tag = "consents/proofs",
    params(OrganizationParam),
    request_body = ProofIn,
    responses(
        (status = 200, description = "The proof's id and size", body = ProofOut),
        (status = 400, description = "Not a data URI, or not an accepted type", body = ErrorBody),
        (status = 413, description = "Body over 20 MiB", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody<MAX_PROOF_BODY_BYTES>,
) -> Result<Json<ProofOut>, ApiError> {
    query::only(&q, &[])?;
    let mut errors = FieldErrors::new();
    let f = Fields::of(&body, Path::Root, &["file"], &mut errors);
    let uri = f.as_ref().and_then(|f| f.string("file", &mut errors));
    if f.as_ref()
        .is_some_and(|f| f.get("file").is_none_or(Value::is_null))
    {
        errors.add("file", "is required");
    }
    let uri = uri.map(str::to_owned);
    if let Some(f) = f {
        f.finish(&mut errors);
    }
    errors.into_result()?;
    let uri = uri.unwrap_or_default();
    if uri.len() > assent_model::proof::MAX_PROOF_ENCODED_BYTES {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the proof is {} bytes once encoded; the limit is {}",
                uri.len(),
                assent_model::proof::MAX_PROOF_ENCODED_BYTES
            ),
        ));
    }
    let proof = tokio::task::spawn_blocking(move || ProofFile::from_data_uri(&uri, "file"))
        .await
        .map_err(ApiError::internal)??;
    let out = ProofOut {
        id: proof.id.clone(),
        size: proof.bytes.len(),
        file: None,
    };
    state.store.put_proofs(&tenant.org, vec![proof]).await?;
    Ok(Json(out))
}

/// One proof file.
#[utoipa::path(
    get,
    path = "/v1/consents/proofs/{id}",
    tag = "consents/proofs",
    params(("id" = String, Path, description = "Proof id"), OrganizationParam),
    responses(
        (status = 200, description = "The proof with its file", body = ProofOut),
        (status = 404, description = "No such proof", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<ProofOut>, ApiError> {
    query::only(&q, &[])?;
    if !assent_model::proof::is_proof_id(&id) {
        return Err(assent_model::DomainError::NotFound(format!("proof '{id}' not found")).into());
    }
    let proof = state.store.get_proof(&tenant.org, &id).await?;
    Ok(Json(ProofOut {
        id: proof.id.clone(),
        size: proof.bytes.len(),
        file: Some(proof.data_uri()),
    }))
}
