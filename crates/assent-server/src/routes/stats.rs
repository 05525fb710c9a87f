//! `/v1/stats/consents` (Assent): consent statistics per day, for the admin console's
//! dashboard.

use super::OrganizationParam;
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryPairs;
use assent_model::stats::{ConsentStats, StatsRange};
use axum::Json;
use axum::extract::State;

/// Query of `GET /v1/stats/consents`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents the query; the handler reads it as pairs"
)]
pub struct StatsParams {
    /// The first UTC day, `YYYY-MM-DD`; default: 29 days before `to`.
    #[param(format = Date)]
    from: Option<String>,
    /// The last UTC day, included; default: today (or 29 days after `from`, at most today).
    /// At most 366 days from `from`.
    #[param(format = Date)]
    to: Option<String>,
    /// The regulation counted; default `gdpr`.
    regulation: Option<String>,
}

/// Per UTC day of the range (days without events included): the confirmed events of the
/// regulation made that day (`created_at`), and per purpose how many of them set its
/// `enabled` to true (`given`) and to false (`refused`). The cost grows with the number of
/// events in the range: each one's body is read once.
#[utoipa::path(
    get,
    path = "/v1/stats/consents",
    tag = "stats",
    params(OrganizationParam, StatsParams),
    responses(
        (status = 200, description = "The statistics", body = ConsentStats),
        (status = 400, description = "A bad date, `from` after `to`, or more than 366 days", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn consents(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<ConsentStats>, ApiError> {
    let today = chrono::Utc::now().date_naive();
    let range = StatsRange::parse(&q, today)?;
    let counts = state
        .store
        .consent_counts(&tenant.org, &range.regulation, range.start(), range.end())
        .await?;
    Ok(Json(ConsentStats::of(&range, counts)))
}
