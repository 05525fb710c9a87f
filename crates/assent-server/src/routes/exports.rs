//! `/v1/exports`: daily exports of an organization's users and events to a folder or a bucket
//! (API.md §8), run by the scheduler inside `assent serve` or on demand.

use super::{IdPath, OrganizationParam};
use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, QueryPairs};
use assent_model::export::{self, ExportConfig, RunRecord, RunStatus, Trigger, run_date};
use assent_model::{DomainError, Timestamp, query};
use assent_store::ExportRecord;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An export as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportView {
    /// The export's id: the `export-id=` folder.
    pub id: String,
    /// The organization exported.
    pub organization_id: String,
    /// A name to recognise it by.
    pub name: Option<String>,
    /// Where the files go.
    pub destination: String,
    /// `daily` (users changed that day, with that day's events) or `full` (everything).
    pub scope: String,
    /// When the daily run starts, `HH:MM` or `HH:MM:SS`, UTC.
    pub time: String,
    /// Whether the scheduler runs it.
    pub enabled: bool,
    /// The largest part file, compressed.
    pub max_part_bytes: u64,
    /// When the scheduler runs it next.
    pub next_run_at: Option<String>,
    /// Whether a run holds it now.
    pub running: bool,
    /// Runs finished so far.
    pub runs: u64,
    /// The latest run: date, trigger, status (`running`, `succeeded`, `failed`), attempt,
    /// times, counts, location and error.
    #[schema(value_type = Option<Object>)]
    pub last_run: Option<RunRecord>,
    /// When it was made.
    pub created_at: String,
    /// When its settings last changed.
    pub updated_at: String,
}

impl ExportView {
    fn of(e: &ExportRecord) -> ExportView {
        let now = Timestamp::now();
        ExportView {
            id: e.id.clone(),
            organization_id: e.organization_id.to_string(),
            name: e.config.name.clone(),
            destination: e.config.destination.clone(),
            scope: match e.config.scope {
                export::Scope::Daily => "daily",
                export::Scope::Full => "full",
            }
            .to_owned(),
            time: e.config.time.clone(),
            enabled: e.config.enabled,
            max_part_bytes: e.config.max_part_bytes,
            next_run_at: e.next_run_at.map(Timestamp::to_rfc3339),
            running: e.lease_until.is_some_and(|l| l > now)
                && e.state
                    .last_run
                    .as_ref()
                    .is_some_and(|r| r.status == RunStatus::Running),
            last_run: e.state.last_run.clone(),
            runs: e.state.runs,
            created_at: e.created_at.to_rfc3339(),
            updated_at: e.updated_at.to_rfc3339(),
        }
    }
}

/// A page of exports.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExportList {
    /// Exports, over all pages.
    pub total: usize,
    /// Page size.
    pub limit: usize,
    /// Exports skipped.
    pub skip: usize,
    /// This page, oldest first.
    pub data: Vec<ExportView>,
}

/// A new export, or a change to one: every field is optional.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExportIn {
    /// On create only: the id (1–64 letters, digits, `_`, `-`); made up if left out.
    pub id: Option<String>,
    /// A name.
    pub name: Option<String>,
    /// `file:///…` inside the organization's export folder (the default), `s3://bucket/prefix`
    /// or `gs://bucket/prefix` where the build has them.
    pub destination: Option<String>,
    /// `daily` (default) or `full`.
    pub scope: Option<String>,
    /// `HH:MM` or `HH:MM:SS` UTC; default `02:00`.
    pub time: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// 65,536 to 100,000,000; default 100,000,000.
    pub max_part_bytes: Option<u64>,
}

fn check_destination(state: &AppState, org: &str, config: &ExportConfig) -> Result<(), ApiError> {
    state
        .exports
        .check_destination(org, &config.destination)
        .map_err(|m| DomainError::invalid_field("destination", m).into())
}

/// The next scheduled run of `config`, keeping `current` when the time did not change.
fn next_run(
    config: &ExportConfig,
    before: Option<(&ExportConfig, Option<Timestamp>)>,
) -> Option<Timestamp> {
    if !config.enabled {
        return None;
    }
    match before {
        Some((old, Some(at))) if old.time == config.time => Some(at),
        _ => Some(export::next_run(config.time_of_day(), Timestamp::now())),
    }
}

/// Lists the organization's exports.
#[utoipa::path(
    get,
    path = "/v1/exports",
    tag = "exports",
    params(OrganizationParam),
    responses((status = 200, description = "A page of exports", body = ExportList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
) -> Result<Json<ExportList>, ApiError> {
    query::only(&q, &["$limit", "$skip"])?;
    let (limit, skip) = query::paging(&q)?;
    let all = state.store.list_exports(&tenant.org).await?;
    Ok(Json(ExportList {
        total: all.len(),
        limit,
        skip,
        data: all
            .iter()
            .skip(skip)
            .take(limit)
            .map(ExportView::of)
            .collect(),
    }))
}

/// Configures an export; the scheduler runs it daily at its `time`.
#[utoipa::path(
    post,
    path = "/v1/exports",
    tag = "exports",
    params(OrganizationParam),
    request_body = ExportIn,
    responses(
        (status = 200, description = "The new export", body = ExportView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 409, description = "An export with that id exists", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<ExportView>, ApiError> {
    query::only(&q, &[])?;
    let org = tenant.org.as_str();
    let (config, id) =
        ExportConfig::parse(&body, org, None, &state.exports.default_destination(org))?;
    check_destination(&state, org, &config)?;
    let now = Timestamp::now();
    let record = ExportRecord {
        id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        organization_id: tenant.org.clone(),
        next_run_at: next_run(&config, None),
        config,
        state: Default::default(),
        lease_until: None,
        created_at: now,
        updated_at: now,
    };
    let stored = state.store.create_export(record).await?;
    Ok(Json(ExportView::of(&stored)))
}

/// One export, with its latest run.
#[utoipa::path(
    get,
    path = "/v1/exports/{id}",
    tag = "exports",
    params(("id" = String, Path, description = "Export id"), OrganizationParam),
    responses(
        (status = 200, description = "The export", body = ExportView),
        (status = 404, description = "No such export", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<ExportView>, ApiError> {
    query::only(&q, &[])?;
    let record = state.store.get_export(&tenant.org, &id).await?;
    Ok(Json(ExportView::of(&record)))
}

/// Changes an export's settings; fields left out keep their value.
#[utoipa::path(
    patch,
    path = "/v1/exports/{id}",
    tag = "exports",
    params(("id" = String, Path, description = "Export id"), OrganizationParam),
    request_body = ExportIn,
    responses(
        (status = 200, description = "The export", body = ExportView),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such export", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
    JsonBody(body): JsonBody,
) -> Result<Json<ExportView>, ApiError> {
    query::only(&q, &[])?;
    let org = tenant.org.as_str();
    let mut record = state.store.get_export(&tenant.org, &id).await?;
    let (config, _) = ExportConfig::parse(&body, org, Some(&record.config), "")?;
    check_destination(&state, org, &config)?;
    record.next_run_at = next_run(&config, Some((&record.config, record.next_run_at)));
    record.config = config;
    record.updated_at = Timestamp::now();
    let record = state.store.update_export(record).await?;
    Ok(Json(ExportView::of(&record)))
}

/// Deletes an export configuration; the files it wrote stay.
#[utoipa::path(
    delete,
    path = "/v1/exports/{id}",
    tag = "exports",
    params(("id" = String, Path, description = "Export id"), OrganizationParam),
    responses(
        (status = 200, description = "The deleted export", body = ExportView),
        (status = 404, description = "No such export", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<Json<ExportView>, ApiError> {
    query::only(&q, &[])?;
    let record = state.store.get_export(&tenant.org, &id).await?;
    state.store.delete_export(&tenant.org, &id).await?;
    Ok(Json(ExportView::of(&record)))
}

/// Query of `POST /v1/exports/{id}/execute`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents the query; the handler reads it as pairs"
)]
pub struct ExecuteParams {
    /// The day to export, `YYYY-MM-DD` (UTC); default: yesterday for `daily`, today for `full`.
    date: Option<String>,
}

/// Starts a run now, in the background; the answer shows it running, and `GET` shows how it
/// ends (`last_run`).
#[utoipa::path(
    post,
    path = "/v1/exports/{id}/execute",
    tag = "exports",
    params(("id" = String, Path, description = "Export id"), ExecuteParams, OrganizationParam),
    responses(
        (status = 202, description = "The run started", body = ExportView),
        (status = 400, description = "Invalid date", body = ErrorBody),
        (status = 404, description = "No such export", body = ErrorBody),
        (status = 409, description = "A run of this export is under way", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn execute(
    State(state): State<AppState>,
    tenant: Tenant,
    IdPath(id): IdPath,
    QueryPairs(q): QueryPairs,
) -> Result<(StatusCode, Json<ExportView>), ApiError> {
    query::only(&q, &["date"])?;
    let date = match q.iter().find(|(k, _)| k == "date") {
        Some((_, d)) => {
            Some(export::parse_date(d).map_err(|m| DomainError::invalid_field("date", m))?)
        }
        None => None,
    };
    // 404 before 409: an unknown export is not "busy".
    state.store.get_export(&tenant.org, &id).await?;
    let now = Timestamp::now();
    let lease_until = Timestamp::from_millis(now.millis() + state.exports.lease.as_millis() as i64);
    let Some(mut record) = state
        .store
        .claim_export(&tenant.org, &id, now, lease_until, false)
        .await?
    else {
        return Err(DomainError::Conflict(format!("a run of export '{id}' is under way")).into());
    };
    let date = date.unwrap_or_else(|| run_date(record.config.scope, now));
    let store = state.store.clone();
    let settings = state.exports.clone();
    let claimed = record.clone();
    tokio::spawn(async move {
        assent_export::schedule::run_claimed(store, claimed, date, Trigger::Manual, &settings)
            .await;
    });
    record.state.last_run = Some(assent_export::schedule::starting_run(
        &record,
        date,
        Trigger::Manual,
    ));
    record.lease_until = Some(lease_until);
    Ok((StatusCode::ACCEPTED, Json(ExportView::of(&record))))
}
