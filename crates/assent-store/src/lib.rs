//! Storage of Assent.
//!
//! [`Store`] is what the server needs from a database; [`sqlite::SqliteStore`] implements it on
//! an embedded SQLite file. Every implementation keeps the same promises: a write returns only
//! once it is durable, a batch is applied entirely or not at all, and no call ever reads or
//! writes outside the organization it is given.

pub mod copy;
pub mod integrations;
pub mod postgres;
pub mod sqlite;

use assent_model::event::EventPatch;
use assent_model::integration::{Delivery, Integration, IntegrationPatch};
use assent_model::look::PreferenceCenterLook;
use assent_model::purpose::Purpose;
use assent_model::query::{EventsQuery, Page, UsersQuery};
use assent_model::settings::OrganizationSettings;
use assent_model::stats::ConsentCounts;
use assent_model::status::ConsentsView;
use assent_model::user::{NewUser, UserPatch, UserRecord, UserSelector};
use assent_model::{
    ConsentEvent, DomainError, EventId, EventInput, OrganizationId, Regulation, Timestamp,
};
use async_trait::async_trait;
use integrations::{AttemptResult, DeliveriesQuery, DueDelivery};

/// What can go wrong in a store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request breaks a rule of the domain (400, 404 or 409).
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store cannot serve now (overloaded, shutting down, database unreachable).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A fault of the store itself; the cause is for the log, not for the client.
    #[error("store failure: {0}")]
    Internal(String),
}

impl StoreError {
    /// A "not found" domain error.
    pub fn not_found(message: impl Into<String>) -> Self {
        StoreError::Domain(DomainError::NotFound(message.into()))
    }

    /// A "conflict" domain error.
    pub fn conflict(message: impl Into<String>) -> Self {
        StoreError::Domain(DomainError::Conflict(message.into()))
    }
}

/// Options of a write request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `$disable_integrations=true`: announce the change to no integration.
    pub disable_integrations: bool,
    /// The id of the integration the change came from (an inbound webhook): its changes are
    /// announced to every other integration but not to that one (no echo). Honoured by
    /// [`Store::append_events`], the only write an inbound webhook makes; other writes ignore
    /// it.
    pub origin: Option<String>,
}

/// An API key as stored: the secret itself is never kept, only its slow hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's id.
    pub id: String,
    /// The organization the key acts for.
    pub organization_id: OrganizationId,
    /// The public key string, sent with the secret to open a session.
    pub key: String,
    /// A name to recognise the key by.
    pub name: Option<String>,
    /// A disabled key opens no new session.
    pub enabled: bool,
    /// The PHC string of the secret's hash.
    pub secret_hash: String,
    /// When the key was created.
    pub created_at: Timestamp,
    /// When the key last changed.
    pub updated_at: Timestamp,
}

/// A secret of an organization (`/v1/secrets`). The value itself is shown once, when it is
/// made; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// The secret's id.
    pub id: String,
    /// The organization that owns it.
    pub organization_id: OrganizationId,
    /// A name to recognise it by.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The SHA-256 of the value, in hex.
    pub secret_hash: String,
    /// Revision number, 1 when made and one more at each change.
    pub version: i64,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// An export configuration with where its runs stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The export's id (the `export-id=` folder).
    pub id: String,
    /// The organization that owns it.
    pub organization_id: OrganizationId,
    /// Its settings.
    pub config: assent_model::export::ExportConfig,
    /// Its latest run and pending retry.
    pub state: assent_model::export::ExportState,
    /// When the scheduler runs it next; `None` while it is disabled.
    pub next_run_at: Option<Timestamp>,
    /// While a run holds it: the time after which another node may take it over.
    pub lease_until: Option<Timestamp>,
    /// When it was made.
    pub created_at: Timestamp,
    /// When its settings last changed.
    pub updated_at: Timestamp,
}

/// A value with the time it was last set: an organization's settings, its preference
/// center's look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    /// The value.
    pub value: T,
    /// When it was last set.
    pub updated_at: Timestamp,
}

/// The name under which the settings table keeps an organization's [`OrganizationSettings`].
pub(crate) const SETTINGS: &str = "settings";
/// The name under which the settings table keeps an organization's [`PreferenceCenterLook`].
pub(crate) const PREFERENCE_CENTER: &str = "preference_center";

/// Most secrets an organization may hold.
pub const MAX_SECRETS_PER_ORGANIZATION: u64 = 300;

/// One page of users and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct UsersPage {
    /// The users of this page, in creation order.
    pub data: Vec<UserRecord>,
    /// The cursor of the next page, or `None` at the end.
    pub cursor: Option<String>,
}

/// What the server needs from a database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the store is reachable and its schema is current.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Finishes the writes already accepted and stops taking new ones.
    async fn shutdown(&self);

    /// The secret that signs session tokens, made on first use and kept by the store.
    async fn signing_key(&self) -> Result<Vec<u8>, StoreError>;

    /// How many organizations exist (zero on a fresh store).
    async fn organization_count(&self) -> Result<u64, StoreError>;

    /// Stores a new API key, creating its organization if needed.
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError>;

    /// Stores the first API key of a fresh store: only if no organization exists yet, and
    /// once even when several servers start together. Returns whether it was stored.
    async fn create_first_api_key(&self, key: ApiKey) -> Result<bool, StoreError>;

    /// Finds an API key by its public key string.
    async fn find_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError>;

    /// The API keys of an organization, oldest first.
    async fn list_api_keys(&self, org: &OrganizationId) -> Result<Vec<ApiKey>, StoreError>;

    /// One API key of an organization, by id.
    async fn get_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError>;

    /// Saves the name, the enabled flag and the update time of a stored key.
    async fn update_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError>;

    /// Deletes an API key; returns it as it was.
    async fn delete_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError>;

    /// Stores a new secret, unless the organization already holds
    /// [`MAX_SECRETS_PER_ORGANIZATION`] (409).
    async fn create_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError>;

    /// The secrets of an organization, oldest first.
    async fn list_secrets(&self, org: &OrganizationId) -> Result<Vec<SecretRecord>, StoreError>;

    /// One secret by id.
    async fn get_secret(&self, org: &OrganizationId, id: &str) -> Result<SecretRecord, StoreError>;

    /// Saves a changed secret whose `version` is one more than the stored one; 409 when the
    /// stored version moved meanwhile.
    async fn update_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError>;

    /// Deletes a secret; returns it as it was.
    async fn delete_secret(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<SecretRecord, StoreError>;

    /// Stores proof files (content-addressed: a file already stored is kept as it is).
    async fn put_proofs(
        &self,
        org: &OrganizationId,
        proofs: Vec<assent_model::proof::ProofFile>,
    ) -> Result<(), StoreError>;

    /// One proof file by id.
    async fn get_proof(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<assent_model::proof::ProofFile, StoreError>;

    /// Stores a new export configuration; 409 if the organization has one with that id.
    async fn create_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError>;

    /// The export configurations of an organization, oldest first.
    async fn list_exports(&self, org: &OrganizationId) -> Result<Vec<ExportRecord>, StoreError>;

    /// One export configuration.
    async fn get_export(&self, org: &OrganizationId, id: &str) -> Result<ExportRecord, StoreError>;

    /// Replaces an export's settings and its next run time (its run state is left alone).
    async fn update_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError>;

    /// Deletes an export configuration (the files it wrote stay).
    async fn delete_export(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError>;

    /// Exports whose next run is due at `now` and that no run holds, at most `limit`.
    async fn due_exports(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(OrganizationId, String)>, StoreError>;

    /// Takes an export for a run until `lease_until`, unless a run holds it (or, with
    /// `only_due`, unless its next run is due at `now`); `None` when it cannot be taken. Of
    /// many nodes asking at once, one gets it.
    async fn claim_export(
        &self,
        org: &OrganizationId,
        id: &str,
        now: Timestamp,
        lease_until: Timestamp,
        only_due: bool,
    ) -> Result<Option<ExportRecord>, StoreError>;

    /// Records a run's state; `next_run_at` replaces the next run time when given; `release`
    /// ends the run's hold on the export.
    async fn save_export_run(
        &self,
        org: &OrganizationId,
        id: &str,
        state: assent_model::export::ExportState,
        next_run_at: Option<Timestamp>,
        release: bool,
    ) -> Result<(), StoreError>;

    /// Registers a purpose at version 1; 409 when the organization has a purpose with that id
    /// or already holds [`MAX_PURPOSES_PER_ORGANIZATION`](assent_model::purpose::MAX_PURPOSES_PER_ORGANIZATION).
    async fn create_purpose(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError>;

    /// The current version of every purpose of the organization, in creation order.
    async fn list_purposes(&self, org: &OrganizationId) -> Result<Vec<Purpose>, StoreError>;

    /// One purpose: its current version, or version `version` (404 when there is none).
    async fn get_purpose(
        &self,
        org: &OrganizationId,
        id: &str,
        version: Option<u32>,
    ) -> Result<Purpose, StoreError>;

    /// Every version of a purpose, newest first (404 when the purpose does not exist).
    async fn list_purpose_versions(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Vec<Purpose>, StoreError>;

    /// Stores the next version of a purpose: `purpose.version` must be one more than the
    /// stored current version (409 when another change came first, 404 when the purpose does
    /// not exist). Earlier versions are kept.
    async fn add_purpose_version(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError>;

    /// Deletes a purpose with all its versions.
    async fn delete_purpose(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError>;

    /// The organization's settings, if they were ever set.
    async fn get_settings(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<OrganizationSettings>>, StoreError>;

    /// Replaces the organization's settings.
    async fn put_settings(
        &self,
        org: &OrganizationId,
        settings: Stamped<OrganizationSettings>,
    ) -> Result<(), StoreError>;

    /// The look of the organization's preference center, if it was ever set.
    async fn get_preference_center(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<PreferenceCenterLook>>, StoreError>;

    /// Replaces the look of the organization's preference center.
    async fn put_preference_center(
        &self,
        org: &OrganizationId,
        look: Stamped<PreferenceCenterLook>,
    ) -> Result<(), StoreError>;

    /// Counts, per day from `start` (a day is 86,400,000 ms; day 0 starts at `start`) until
    /// `end`, the confirmed events of `regulation` by `created_at`, and per purpose how many of
    /// them set its `enabled` to true and to false. Reads the body of every such event once.
    async fn consent_counts(
        &self,
        org: &OrganizationId,
        regulation: &Regulation,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<ConsentCounts, StoreError>;

    /// Appends events (one request: all or nothing) and folds them into their users.
    /// Returns the stored events in input order; replays of stored ids return the stored event.
    async fn append_events(
        &self,
        org: &OrganizationId,
        events: Vec<EventInput>,
        options: WriteOptions,
    ) -> Result<Vec<ConsentEvent>, StoreError>;

    /// One event by id.
    async fn get_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
    ) -> Result<ConsentEvent, StoreError>;

    /// The events of one user that match the query, paged.
    async fn list_events(
        &self,
        org: &OrganizationId,
        query: &EventsQuery,
    ) -> Result<Page<ConsentEvent>, StoreError>;

    /// Changes an event and recomputes its user.
    async fn patch_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        patch: EventPatch,
        options: WriteOptions,
    ) -> Result<ConsentEvent, StoreError>;

    /// Deletes an event and recomputes its user.
    async fn delete_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        options: WriteOptions,
    ) -> Result<(), StoreError>;

    /// Deletes the events of one user that match the query and recomputes the user; returns
    /// how many were deleted.
    async fn delete_events(
        &self,
        org: &OrganizationId,
        query: EventsQuery,
        options: WriteOptions,
    ) -> Result<u64, StoreError>;

    /// Creates a user.
    async fn create_user(
        &self,
        org: &OrganizationId,
        user: NewUser,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError>;

    /// One user.
    async fn get_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
    ) -> Result<UserRecord, StoreError>;

    /// One user and its status under `regulation` as it stood at instant `at`.
    async fn get_user_at(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        regulation: &assent_model::Regulation,
        at: Timestamp,
    ) -> Result<(UserRecord, ConsentsView), StoreError>;

    /// A page of users matching the query.
    async fn list_users(
        &self,
        org: &OrganizationId,
        query: &UsersQuery,
    ) -> Result<UsersPage, StoreError>;

    /// Changes a user's profile.
    async fn patch_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        patch: UserPatch,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError>;

    /// Erases a user with all its events, and the proofs of those events that no other user's
    /// events reference; returns the user as it was.
    async fn delete_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError>;

    /// Stores a new integration; it receives the changes made from now on.
    async fn create_integration(&self, integration: Integration)
    -> Result<Integration, StoreError>;

    /// The integrations of an organization, oldest first.
    async fn list_integrations(&self, org: &OrganizationId)
    -> Result<Vec<Integration>, StoreError>;

    /// One integration.
    async fn get_integration(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Integration, StoreError>;

    /// Changes an integration. Enabling a disabled one makes it receive the changes made from
    /// then on (not those made while it was disabled).
    async fn patch_integration(
        &self,
        org: &OrganizationId,
        id: &str,
        patch: IntegrationPatch,
    ) -> Result<Integration, StoreError>;

    /// Deletes an integration and its deliveries.
    async fn delete_integration(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError>;

    /// The deliveries of an integration, newest first.
    async fn list_deliveries(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        query: &DeliveriesQuery,
    ) -> Result<Page<Delivery>, StoreError>;

    /// Schedules a parked (or retrying) delivery for an attempt now.
    async fn retry_delivery(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        delivery_id: &str,
    ) -> Result<Delivery, StoreError>;

    /// Every enabled integration of every organization (for the delivery worker).
    async fn active_integrations(&self) -> Result<Vec<Integration>, StoreError>;

    /// Takes up to `limit` deliveries of `integration` that are due at `now`, at most one per
    /// user (the oldest not yet delivered), none already taken by a worker within `lease`.
    /// Moves new changes from the outbox into deliveries first when few are waiting.
    async fn claim_deliveries(
        &self,
        integration: &Integration,
        now: Timestamp,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Replaces the bodies of claimed deliveries that the store keeps as references to its log
    /// ([`DueDelivery::unrendered`]) with the bodies themselves. Called by the delivery worker
    /// on its own threads, so that rendering runs at the deliveries' priority; a store that
    /// keeps whole bodies has nothing to do.
    async fn render_due(&self, due: Vec<DueDelivery>) -> Result<Vec<DueDelivery>, StoreError> {
        Ok(due)
    }

    /// Records attempts made on claimed deliveries and releases them.
    async fn record_attempts(
        &self,
        integration: &Integration,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError>;

    /// Forgets delivered deliveries, and changes nobody needs any more, older than `before`;
    /// returns how many rows went.
    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The cursor of the users list that resumes after the user with store key `key`.
pub(crate) fn encode_cursor(key: i64) -> String {
    format!("u{key}")
}

/// Reads a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> Result<i64, StoreError> {
    cursor
        .strip_prefix('u')
        .and_then(|k| k.parse::<i64>().ok())
        .filter(|k| *k >= 0)
        .ok_or_else(|| {
            StoreError::Domain(DomainError::invalid_field(
                "$cursor",
                "is not a cursor returned by this API",
            ))
        })
}
