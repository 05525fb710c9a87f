//! The PostgreSQL implementation of [`Store`]: any number of `assent serve` processes share one
//! database.
//!
//! Each write request is one transaction. It resolves its users, locks their rows in key order
//! (`SELECT … FOR UPDATE`), inserts its events with one multi-row statement, folds them into the
//! locked users and writes them back; two nodes writing for the same user therefore take turns,
//! and an event id is made unique by the `(org_id, id)` index, so replays sent to two nodes at
//! once store one event. A transaction that loses a race (a user created or an id stored by
//! another node in the meantime, a deadlock) is retried from the start.

mod admin;
mod exports;
mod fold;
mod known;
mod outbox;
mod read;
mod recent;
mod registry;
mod schema;
mod write;

pub use schema::SCHEMA_VERSION;

use crate::integrations::{AttemptResult, DeliveriesQuery, DueDelivery};
use crate::{
    ApiKey, ExportRecord, PREFERENCE_CENTER, SETTINGS, SecretRecord, Stamped, Store, StoreError,
    UsersPage, WriteOptions,
};
use assent_model::event::EventPatch;
use assent_model::integration::{Delivery, Integration, IntegrationPatch};
use assent_model::look::PreferenceCenterLook;
use assent_model::proof::ProofFile;
use assent_model::purpose::Purpose;
use assent_model::query::{EventsQuery, Page, UsersQuery};
use assent_model::settings::OrganizationSettings;
use assent_model::stats::ConsentCounts;
use assent_model::status::{ConsentsView, status_at};
use assent_model::user::{NewUser, UserPatch, UserRecord, UserSelector};
use assent_model::{
    ConsentEvent, EventId, EventInput, EventStatus, OrganizationId, Regulation, Timestamp,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (libpq URL or key=value form).
    pub url: String,
    /// Most connections this process opens.
    pub pool_size: usize,
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pool: Pool,
    /// What this node knows of the organizations' integrations.
    subscriptions: outbox::Subscriptions,
    /// Stops this node's folder.
    folder: Option<Arc<AtomicBool>>,
    /// Events this node appended and its folder has not folded yet.
    recent: recent::RecentEvents,
    /// Users this node has met.
    known: known::KnownUsers,
}

/// Turns a PostgreSQL failure into a store failure.
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("the database connection failed: {e}"));
    }
    match e.code() {
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS || *c == SqlState::ADMIN_SHUTDOWN => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(match e.as_db_error() {
            Some(d) => format!("{}: {}", d.code().code(), d.message()),
            None => match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }),
    }
}

/// Where the configuration points, for messages (never the password).
fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// One sentence for a failed first connection.
fn connect_error(config: &Config, e: &tokio_postgres::Error) -> StoreError {
    let place = describe(config);
    let user = config.get_user().unwrap_or("?");
    let message = match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => {
            format!("PostgreSQL at {place} refused the password of user '{user}'")
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!(
            "PostgreSQL at {place} refused user '{user}': {}",
            e.as_db_error().map(|d| d.message()).unwrap_or_default()
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
            "database '{}' does not exist on PostgreSQL at {place}",
            config.get_dbname().unwrap_or("?")
        ),
        _ => {
            let cause = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.to_string());
            format!("cannot connect to PostgreSQL at {place}: {cause}")
        }
    };
    StoreError::Unavailable(message)
}

impl PgStore {
    /// Connects, checks the credentials, and brings the schema up to date.
    pub async fn connect(config: &PostgresConfig) -> Result<PgStore, StoreError> {
        let mut store = Self::connect_unmigrated(config).await?;
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        let stop = Arc::new(AtomicBool::new(false));
        tokio::spawn(fold::run(
            store.pool.clone(),
            store.recent.clone(),
            stop.clone(),
        ));
        store.folder = Some(stop);
        Ok(store)
    }

    /// Connects and checks the credentials without touching the schema.
    pub async fn connect_unmigrated(config: &PostgresConfig) -> Result<PgStore, StoreError> {
        let mut pg = Config::from_str(&config.url)
            .map_err(|e| StoreError::Unavailable(format!("the database URL is not valid: {e}")))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        pg.application_name("assent");
        // A first connection tells a bad password from a missing database, in one sentence.
        let (client, connection) = pg
            .connect(NoTls)
            .await
            .map_err(|e| connect_error(&pg, &e))?;
        drop(client);
        drop(connection);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            subscriptions: outbox::Subscriptions::default(),
            folder: None,
            recent: recent::RecentEvents::default(),
            known: known::KnownUsers::default(),
        })
    }

    /// Applies the migrations and returns the schema version.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client).await?;
        schema::version(&client).await
    }

    /// The kinds of change a write for `org` announces.
    async fn mask(
        &self,
        client: &deadpool_postgres::Object,
        org: &OrganizationId,
        options: &WriteOptions,
    ) -> Result<u8, StoreError> {
        if options.disable_integrations {
            return Ok(0);
        }
        self.subscriptions.mask(client, org).await
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        checkout(&self.pool).await
    }
}

/// A connection from `pool`, or 503 when none frees up in time.
pub(crate) async fn checkout(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no database connection available: {e}")))
}

fn unknown_user(user: &UserSelector) -> StoreError {
    StoreError::Domain(user.not_found())
}

#[async_trait]
impl Store for PgStore {
    async fn ready(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let version = schema::version(&client).await?;
        if version == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "schema version {version}, expected {SCHEMA_VERSION}"
            )))
        }
    }

    async fn shutdown(&self) {
        if let Some(stop) = &self.folder {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.pool.close();
    }

    async fn signing_key(&self) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        let fresh: [u8; 32] = rand::random();
        client
            .execute(
                "INSERT INTO assent_meta (key, value) VALUES ('signing_key', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&fresh.as_slice()],
            )
            .await
            .map_err(db)?;
        let row = client
            .query_one(
                "SELECT value FROM assent_meta WHERE key = 'signing_key'",
                &[],
            )
            .await
            .map_err(db)?;
        Ok(row.get(0))
    }

    async fn organization_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT count(*) FROM organizations", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(n as u64)
    }

    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        let mut client = self.client().await?;
        write::create_api_key(&mut client, &key, false).await?;
        Ok(key)
    }

    async fn create_first_api_key(&self, key: ApiKey) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        write::create_api_key(&mut client, &key, true).await
    }

    async fn find_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let client = self.client().await?;
        read::api_key(&client, key).await
    }

    async fn list_api_keys(&self, org: &OrganizationId) -> Result<Vec<ApiKey>, StoreError> {
        admin::list_keys(&self.client().await?, org).await
    }

    async fn get_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError> {
        admin::get_key(&self.client().await?, org, id).await
    }

    async fn update_api_key(&self, key: ApiKey) -> Result<ApiKey, StoreError> {
        admin::update_key(&self.client().await?, &key).await?;
        Ok(key)
    }

    async fn delete_api_key(&self, org: &OrganizationId, id: &str) -> Result<ApiKey, StoreError> {
        admin::delete_key(&self.client().await?, org, id).await
    }

    async fn create_purpose(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError> {
        registry::create(&mut self.client().await?, org, &purpose).await?;
        Ok(purpose)
    }

    async fn list_purposes(&self, org: &OrganizationId) -> Result<Vec<Purpose>, StoreError> {
        registry::list(&self.client().await?, org).await
    }

    async fn get_purpose(
        &self,
        org: &OrganizationId,
        id: &str,
        version: Option<u32>,
    ) -> Result<Purpose, StoreError> {
        registry::get(&self.client().await?, org, id, version).await
    }

    async fn list_purpose_versions(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Vec<Purpose>, StoreError> {
        registry::versions(&self.client().await?, org, id).await
    }

    async fn add_purpose_version(
        &self,
        org: &OrganizationId,
        purpose: Purpose,
    ) -> Result<Purpose, StoreError> {
        registry::add_version(&mut self.client().await?, org, &purpose).await?;
        Ok(purpose)
    }

    async fn delete_purpose(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        registry::delete(&mut self.client().await?, org, id).await
    }

    async fn get_settings(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<OrganizationSettings>>, StoreError> {
        registry::get_setting(&self.client().await?, org, SETTINGS).await
    }

    async fn put_settings(
        &self,
        org: &OrganizationId,
        settings: Stamped<OrganizationSettings>,
    ) -> Result<(), StoreError> {
        registry::put_setting(&self.client().await?, org, SETTINGS, &settings).await
    }

    async fn get_preference_center(
        &self,
        org: &OrganizationId,
    ) -> Result<Option<Stamped<PreferenceCenterLook>>, StoreError> {
        registry::get_setting(&self.client().await?, org, PREFERENCE_CENTER).await
    }

    async fn put_preference_center(
        &self,
        org: &OrganizationId,
        look: Stamped<PreferenceCenterLook>,
    ) -> Result<(), StoreError> {
        registry::put_setting(&self.client().await?, org, PREFERENCE_CENTER, &look).await
    }

    async fn consent_counts(
        &self,
        org: &OrganizationId,
        regulation: &Regulation,
        start: Timestamp,
        end: Timestamp,
    ) -> Result<ConsentCounts, StoreError> {
        registry::consent_counts(&mut self.client().await?, org, regulation, start, end).await
    }

    async fn create_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError> {
        exports::create(&self.client().await?, &export).await?;
        Ok(export)
    }

    async fn list_exports(&self, org: &OrganizationId) -> Result<Vec<ExportRecord>, StoreError> {
        exports::list(&self.client().await?, org).await
    }

    async fn get_export(&self, org: &OrganizationId, id: &str) -> Result<ExportRecord, StoreError> {
        exports::get(&self.client().await?, org, id).await
    }

    async fn update_export(&self, export: ExportRecord) -> Result<ExportRecord, StoreError> {
        exports::update(&self.client().await?, &export).await?;
        Ok(export)
    }

    async fn delete_export(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        exports::delete(&self.client().await?, org, id).await
    }

    async fn due_exports(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(OrganizationId, String)>, StoreError> {
        exports::due(&self.client().await?, now, limit).await
    }

    async fn claim_export(
        &self,
        org: &OrganizationId,
        id: &str,
        now: Timestamp,
        lease_until: Timestamp,
        only_due: bool,
    ) -> Result<Option<ExportRecord>, StoreError> {
        exports::claim(&self.client().await?, org, id, now, lease_until, only_due).await
    }

    async fn save_export_run(
        &self,
        org: &OrganizationId,
        id: &str,
        state: assent_model::export::ExportState,
        next_run_at: Option<Timestamp>,
        release: bool,
    ) -> Result<(), StoreError> {
        exports::save_run(&self.client().await?, org, id, &state, next_run_at, release).await
    }

    async fn create_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError> {
        admin::create_secret(&mut self.client().await?, &secret).await?;
        Ok(secret)
    }

    async fn list_secrets(&self, org: &OrganizationId) -> Result<Vec<SecretRecord>, StoreError> {
        admin::list_secrets(&self.client().await?, org).await
    }

    async fn get_secret(&self, org: &OrganizationId, id: &str) -> Result<SecretRecord, StoreError> {
        admin::get_secret(&self.client().await?, org, id).await
    }

    async fn update_secret(&self, secret: SecretRecord) -> Result<SecretRecord, StoreError> {
        admin::update_secret(&self.client().await?, &secret).await?;
        Ok(secret)
    }

    async fn delete_secret(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<SecretRecord, StoreError> {
        admin::delete_secret(&self.client().await?, org, id).await
    }

    async fn put_proofs(
        &self,
        org: &OrganizationId,
        proofs: Vec<ProofFile>,
    ) -> Result<(), StoreError> {
        if proofs.is_empty() {
            return Ok(());
        }
        admin::put_proofs(&self.client().await?, org, &proofs).await
    }

    async fn get_proof(&self, org: &OrganizationId, id: &str) -> Result<ProofFile, StoreError> {
        admin::get_proof(&self.client().await?, org, id).await
    }

    async fn append_events(
        &self,
        org: &OrganizationId,
        events: Vec<EventInput>,
        options: WriteOptions,
    ) -> Result<Vec<ConsentEvent>, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::append(
            &mut client,
            org,
            events,
            mask,
            options.origin.as_deref(),
            &self.recent,
            &self.known,
        )
        .await
    }

    async fn get_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
    ) -> Result<ConsentEvent, StoreError> {
        let client = self.client().await?;
        read::event_by_id(&client, org, id)
            .await?
            .map(|(e, _)| e)
            .ok_or_else(|| StoreError::not_found(format!("event '{id}' not found")))
    }

    async fn list_events(
        &self,
        org: &OrganizationId,
        query: &EventsQuery,
    ) -> Result<Page<ConsentEvent>, StoreError> {
        let client = self.client().await?;
        let Some(user) = read::user(&client, org, &query.user, false).await? else {
            return Ok(query.page(Vec::new()));
        };
        let events = read::user_events(&client, org, user.key, &user.record.id).await?;
        Ok(query.page(events))
    }

    async fn patch_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        patch: EventPatch,
        options: WriteOptions,
    ) -> Result<ConsentEvent, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::patch_event(&mut client, org, id, &patch, mask).await
    }

    async fn delete_event(
        &self,
        org: &OrganizationId,
        id: &EventId,
        options: WriteOptions,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::delete_events(&mut client, org, write::Doomed::One(id.clone()), mask).await?;
        Ok(())
    }

    async fn delete_events(
        &self,
        org: &OrganizationId,
        query: EventsQuery,
        options: WriteOptions,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::delete_events(&mut client, org, write::Doomed::Matching(query), mask).await
    }

    async fn create_user(
        &self,
        org: &OrganizationId,
        user: NewUser,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::create_user(&mut client, org, user, mask).await
    }

    async fn get_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
    ) -> Result<UserRecord, StoreError> {
        let client = self.client().await?;
        read::user(&client, org, user, false)
            .await?
            .map(|u| u.record)
            .ok_or_else(|| unknown_user(user))
    }

    async fn get_user_at(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        regulation: &Regulation,
        at: Timestamp,
    ) -> Result<(UserRecord, ConsentsView), StoreError> {
        let client = self.client().await?;
        let found = read::user(&client, org, user, false)
            .await?
            .ok_or_else(|| unknown_user(user))?;
        let events = read::user_events(&client, org, found.key, &found.record.id).await?;
        let view = status_at(
            events
                .iter()
                .filter(|e| e.status == EventStatus::Confirmed)
                .map(|e| (&e.regulation, &*e.body, e.stamp())),
            regulation,
            at.millis(),
        );
        Ok((found.record, view))
    }

    async fn list_users(
        &self,
        org: &OrganizationId,
        query: &UsersQuery,
    ) -> Result<UsersPage, StoreError> {
        let client = self.client().await?;
        read::list_users(&client, org, query).await
    }

    async fn patch_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        patch: UserPatch,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::patch_user(&mut client, org, user, &patch, mask).await
    }

    async fn delete_user(
        &self,
        org: &OrganizationId,
        user: &UserSelector,
        options: WriteOptions,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let mask = self.mask(&client, org, &options).await?;
        write::delete_user(&mut client, org, user, mask).await
    }

    async fn create_integration(
        &self,
        integration: Integration,
    ) -> Result<Integration, StoreError> {
        let client = self.client().await?;
        outbox::insert(&client, &integration).await?;
        self.subscriptions.forget(&integration.organization_id);
        Ok(integration)
    }

    async fn list_integrations(
        &self,
        org: &OrganizationId,
    ) -> Result<Vec<Integration>, StoreError> {
        let client = self.client().await?;
        outbox::list(&client, org).await
    }

    async fn get_integration(
        &self,
        org: &OrganizationId,
        id: &str,
    ) -> Result<Integration, StoreError> {
        let client = self.client().await?;
        outbox::find(&client, org, id, false)
            .await?
            .ok_or_else(|| integration_not_found(id))
    }

    async fn patch_integration(
        &self,
        org: &OrganizationId,
        id: &str,
        patch: IntegrationPatch,
    ) -> Result<Integration, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let mut integration = outbox::find(&tx, org, id, true)
            .await?
            .ok_or_else(|| integration_not_found(id))?;
        let was_enabled = integration.enabled;
        integration.apply(patch, Timestamp::now())?;
        outbox::update(&tx, &integration, integration.enabled && !was_enabled).await?;
        tx.commit().await.map_err(db)?;
        self.subscriptions.forget(org);
        Ok(integration)
    }

    async fn delete_integration(&self, org: &OrganizationId, id: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        outbox::find(&tx, org, id, true)
            .await?
            .ok_or_else(|| integration_not_found(id))?;
        outbox::delete(&tx, org, id).await?;
        tx.commit().await.map_err(db)?;
        self.subscriptions.forget(org);
        Ok(())
    }

    async fn list_deliveries(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        query: &DeliveriesQuery,
    ) -> Result<Page<Delivery>, StoreError> {
        let client = self.client().await?;
        let integration = outbox::find(&client, org, integration_id, false)
            .await?
            .ok_or_else(|| integration_not_found(integration_id))?;
        outbox::list_deliveries(&client, &integration, query).await
    }

    async fn retry_delivery(
        &self,
        org: &OrganizationId,
        integration_id: &str,
        delivery_id: &str,
    ) -> Result<Delivery, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let integration = outbox::find(&tx, org, integration_id, false)
            .await?
            .ok_or_else(|| integration_not_found(integration_id))?;
        let delivery = outbox::reschedule(&tx, &integration, delivery_id, Timestamp::now()).await?;
        tx.commit().await.map_err(db)?;
        Ok(delivery)
    }

    async fn active_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        let client = self.client().await?;
        outbox::active(&client).await
    }

    async fn claim_deliveries(
        &self,
        integration: &Integration,
        now: Timestamp,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        outbox::fan_in(&tx, integration, limit.max(256)).await?;
        tx.commit().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        let due = outbox::claim(&tx, integration, now, limit, lease).await?;
        tx.commit().await.map_err(db)?;
        Ok(due)
    }

    async fn record_attempts(
        &self,
        integration: &Integration,
        results: Vec<AttemptResult>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let now = Timestamp::now();
        let gone = outbox::record(&tx, integration, &results, now).await?;
        if gone
            && let Some(mut current) =
                outbox::find(&tx, &integration.organization_id, &integration.id, true).await?
            && current.enabled
        {
            current.enabled = false;
            current.disabled_reason = Some("the destination answered 410 Gone".to_owned());
            current.updated_at = now;
            outbox::update(&tx, &current, false).await?;
        }
        tx.commit().await.map_err(db)?;
        if gone {
            self.subscriptions.forget(&integration.organization_id);
        }
        Ok(())
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError> {
        let client = self.client().await?;
        outbox::prune(&client, before).await
    }
}

/// Stores an integration as it is (for copies from another store); a conflict when it exists.
pub(crate) async fn insert_integration(
    c: &deadpool_postgres::Transaction<'_>,
    integration: &Integration,
) -> Result<(), StoreError> {
    outbox::insert(c, integration).await
}

fn integration_not_found(id: &str) -> StoreError {
    StoreError::not_found(format!("integration '{id}' not found"))
}
