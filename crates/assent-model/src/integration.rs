//! Integrations: where changes to consent are delivered (webhooks and connectors), the changes
//! themselves as the destinations receive them, and the record of each delivery.
//!
//! A write that changes events or users produces [`Change`]s (Didomi's webhook bodies:
//! `{"type": "event.created", "parameters": {…}}`); the store keeps them in its outbox in the
//! same transaction, and the delivery worker hands each to every enabled integration that
//! subscribes to its [`ChangeKind`].

use crate::error::{DomainError, FieldErrors};
use crate::event::{ConsentEvent, EventJson};
use crate::ids::{OrganizationId, Regulation};
use crate::json::{Fields, Path, check_bounds, type_name};
use crate::time::Timestamp;
use crate::user::{UserRecord, UserView};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What happened, as a webhook's `type` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// An event was stored.
    EventCreated,
    /// An event was changed (its status, say).
    EventUpdated,
    /// An event was deleted.
    EventDeleted,
    /// A user was created.
    UserCreated,
    /// A user's status or profile changed.
    UserUpdated,
    /// A user was erased.
    UserDeleted,
}

impl ChangeKind {
    /// Every kind, in code order.
    pub const ALL: [ChangeKind; 6] = [
        ChangeKind::EventCreated,
        ChangeKind::EventUpdated,
        ChangeKind::EventDeleted,
        ChangeKind::UserCreated,
        ChangeKind::UserUpdated,
        ChangeKind::UserDeleted,
    ];

    /// The name used in webhook bodies and in `event_types`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::EventCreated => "event.created",
            ChangeKind::EventUpdated => "event.updated",
            ChangeKind::EventDeleted => "event.deleted",
            ChangeKind::UserCreated => "user.created",
            ChangeKind::UserUpdated => "user.updated",
            ChangeKind::UserDeleted => "user.deleted",
        }
    }

    /// Reads a name made by [`ChangeKind::as_str`].
    pub fn parse(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A small number for storage.
    pub fn code(self) -> i64 {
        ChangeKind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed") as i64
    }

    /// Reads a number made by [`ChangeKind::code`].
    pub fn from_code(code: i64) -> Option<ChangeKind> {
        usize::try_from(code)
            .ok()
            .and_then(|i| ChangeKind::ALL.get(i).copied())
    }

    /// The bit of this kind in a set of kinds.
    pub fn bit(self) -> u8 {
        1 << self.code()
    }
}

/// A set of change kinds as a bit mask (see [`ChangeKind::bit`]).
pub fn kinds_mask(kinds: &[ChangeKind]) -> u8 {
    kinds.iter().fold(0, |m, k| m | k.bit())
}

/// The kind of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrationType {
    /// A signed HTTP POST of each change to `properties.url`.
    WebhookHttp,
    /// Actito profiles and their subscriptions.
    Actito,
    /// mParticle GDPR consent state, through its server-to-server API.
    Mparticle,
}

impl IntegrationType {
    /// Every type.
    pub const ALL: [IntegrationType; 3] = [
        IntegrationType::WebhookHttp,
        IntegrationType::Actito,
        IntegrationType::Mparticle,
    ];

    /// The `type_id` of the API.
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationType::WebhookHttp => "webhook-http",
            IntegrationType::Actito => "actito",
            IntegrationType::Mparticle => "mparticle",
        }
    }

    /// Reads a `type_id`.
    pub fn parse(s: &str) -> Option<IntegrationType> {
        IntegrationType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Fields of `authentication` that hold secrets: accepted on input, never shown again.
    fn secret_fields(self) -> &'static [&'static str] {
        match self {
            IntegrationType::WebhookHttp => &["client_secret"],
            IntegrationType::Actito => &["private_api_key"],
            IntegrationType::Mparticle => &["api_secret"],
        }
    }

    /// The fields of `authentication` for this type, and which are required.
    fn authentication_fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            IntegrationType::WebhookHttp => (
                &["url", "client_id", "client_secret", "scope"],
                &["url", "client_id", "client_secret"],
            ),
            IntegrationType::Actito => (&["private_api_key"], &["private_api_key"]),
            IntegrationType::Mparticle => (&["api_key", "api_secret"], &["api_key", "api_secret"]),
        }
    }

    /// The fields of `properties` for this type, and which are required.
    fn property_fields(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            IntegrationType::WebhookHttp => (&["url"], &["url"]),
            IntegrationType::Actito => (
                &["entity_id", "table_name", "user_unique_key", "base_url"],
                &["entity_id", "table_name", "user_unique_key"],
            ),
            IntegrationType::Mparticle => (&["base_url", "environment"], &[]),
        }
    }

    /// Fields of `properties` that are URLs.
    fn url_fields(self) -> &'static [&'static str] {
        match self {
            IntegrationType::WebhookHttp => &["url"],
            IntegrationType::Actito | IntegrationType::Mparticle => &["base_url"],
        }
    }
}

/// One mapping of a connector: `value` is the path key of a status leaf
/// (`consents_channels_email_enabled`), `id` the destination field it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Mapping {
    /// The destination's field (an Actito subscription, an mParticle purpose).
    pub id: String,
    /// The path key of the status leaf.
    pub value: String,
}

/// An integration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    /// Its id (a UUID).
    pub id: String,
    /// The owning organization.
    pub organization_id: OrganizationId,
    /// The kind of destination.
    pub type_id: IntegrationType,
    /// A name to recognise it by.
    pub name: Option<String>,
    /// A disabled integration receives nothing.
    pub enabled: bool,
    /// Why the server disabled it (a `410 Gone`), if it did.
    pub disabled_reason: Option<String>,
    /// Credentials (secrets included: they are needed to call the destination).
    pub authentication: Map<String, Value>,
    /// Where and how to deliver.
    pub properties: Map<String, Value>,
    /// Connector mappings.
    pub mappings: Vec<Mapping>,
    /// Whether a connector may create a contact the destination does not know.
    pub upsert_mode: bool,
    /// The changes it receives.
    pub event_types: Vec<ChangeKind>,
    /// The `whsec_…` secret that signs its webhooks.
    pub signing_secret: Option<String>,
    /// The SHA-256 (lowercase hex) of the token that authenticates the destination's calls to
    /// `POST /v1/integrations/{id}/inbound` (Actito); the token itself is never kept.
    pub inbound_token_hash: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Integration {
    /// Whether it receives changes of `kind`.
    pub fn wants(&self, kind: ChangeKind) -> bool {
        self.event_types.contains(&kind)
    }

    /// A string property, if set.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).and_then(Value::as_str)
    }

    /// A string of `authentication`, if set.
    pub fn credential(&self, key: &str) -> Option<&str> {
        self.authentication.get(key).and_then(Value::as_str)
    }

    /// The integration as the API shows it: secrets left out.
    pub fn view(&self) -> IntegrationView {
        let mut authentication = self.authentication.clone();
        for key in self.type_id.secret_fields() {
            authentication.remove(*key);
        }
        IntegrationView {
            id: self.id.clone(),
            organization_id: self.organization_id.to_string(),
            type_id: self.type_id.as_str().to_owned(),
            name: self.name.clone(),
            enabled: self.enabled,
            disabled_reason: self.disabled_reason.clone(),
            authentication,
            properties: self.properties.clone(),
            mappings: self.mappings.clone(),
            upsert_mode: self.upsert_mode,
            event_types: self
                .event_types
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            created_at: self.created_at.to_rfc3339(),
            updated_at: self.updated_at.to_rfc3339(),
            secret: None,
            inbound_token: None,
        }
    }
}

/// An integration as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntegrationView {
    /// Integration id.
    pub id: String,
    /// Owning organization.
    pub organization_id: String,
    /// `webhook-http`, `actito` or `mparticle`.
    pub type_id: String,
    /// A name to recognise it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A disabled integration receives nothing.
    pub enabled: bool,
    /// Why the server disabled it (the destination answered `410 Gone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Credentials, without their secret fields.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub authentication: Map<String, Value>,
    /// Where and how to deliver.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub properties: Map<String, Value>,
    /// Connector mappings.
    pub mappings: Vec<Mapping>,
    /// Whether a connector may create a contact the destination does not know.
    pub upsert_mode: bool,
    /// The changes it receives.
    pub event_types: Vec<String>,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// The webhook signing secret: only in the answer that created the integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Actito: the token of `POST /v1/integrations/{id}/inbound` (Assent), only in the answer
    /// that created the integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_token: Option<String>,
}

const INTEGRATION_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "type_id",
    "name",
    "enabled",
    "authentication",
    "properties",
    "mappings",
    "upsert_mode",
    "event_types",
];

const PATCH_FIELDS: &[&str] = &[
    "name",
    "enabled",
    "authentication",
    "properties",
    "mappings",
    "upsert_mode",
    "event_types",
];

/// Most mappings of one integration.
pub const MAX_MAPPINGS: usize = 500;

/// A change to an integration (`PATCH`): absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntegrationPatch {
    /// New name.
    pub name: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// Fields of `authentication` to set (the others are kept, secrets included).
    pub authentication: Option<Map<String, Value>>,
    /// Replaces `properties`.
    pub properties: Option<Map<String, Value>>,
    /// Replaces `mappings`.
    pub mappings: Option<Vec<Mapping>>,
    /// New upsert mode.
    pub upsert_mode: Option<bool>,
    /// Replaces `event_types`.
    pub event_types: Option<Vec<ChangeKind>>,
}

impl Integration {
    /// Parses a `POST /marketplace/integrations` body into a new, enabled integration.
    pub fn parse_new(
        value: &Value,
        organization_id: &OrganizationId,
        now: Timestamp,
    ) -> Result<Integration, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(value, Path::Root, INTEGRATION_FIELDS, &mut errors) else {
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
        let id = match f.string("id", &mut errors) {
            Some(id) => match uuid::Uuid::parse_str(id) {
                Ok(u) => u.hyphenated().to_string(),
                Err(_) => {
                    errors.add("id", "must be a UUID");
                    String::new()
                }
            },
            None => uuid::Uuid::now_v7().to_string(),
        };
        let type_id = match f.string("type_id", &mut errors) {
            Some(t) => IntegrationType::parse(t).or_else(|| {
                errors.add(
                    "type_id",
                    format!(
                        "'{t}' is not a type; expected one of: webhook-http, actito, mparticle"
                    ),
                );
                None
            }),
            None => {
                if f.get("type_id").is_none() {
                    errors.add("type_id", "is required");
                }
                None
            }
        };
        let patch = read_patch(&f, &mut errors);
        f.finish(&mut errors);
        errors.clone().into_result()?;
        let type_id = type_id.expect("checked above");
        let integration = Integration {
            id,
            organization_id: organization_id.clone(),
            type_id,
            name: patch.name.flatten(),
            enabled: patch.enabled.unwrap_or(true),
            disabled_reason: None,
            authentication: patch.authentication.unwrap_or_default(),
            properties: patch.properties.unwrap_or_default(),
            mappings: patch.mappings.unwrap_or_default(),
            upsert_mode: patch.upsert_mode.unwrap_or(false),
            event_types: patch
                .event_types
                .unwrap_or_else(|| default_event_types(type_id)),
            signing_secret: None,
            inbound_token_hash: None,
            created_at: now,
            updated_at: now,
        };
        integration.check()?;
        Ok(integration)
    }

    /// Applies a `PATCH` and checks the result; on error the integration is unchanged.
    pub fn apply(&mut self, patch: IntegrationPatch, now: Timestamp) -> Result<(), DomainError> {
        let mut next = self.clone();
        if let Some(name) = patch.name {
            next.name = name;
        }
        if let Some(enabled) = patch.enabled {
            next.enabled = enabled;
            if enabled {
                next.disabled_reason = None;
            }
        }
        if let Some(auth) = patch.authentication {
            for (k, v) in auth {
                if v.is_null() {
                    next.authentication.remove(&k);
                } else {
                    next.authentication.insert(k, v);
                }
            }
        }
        if let Some(p) = patch.properties {
            next.properties = p;
        }
        if let Some(m) = patch.mappings {
            next.mappings = m;
        }
        if let Some(u) = patch.upsert_mode {
            next.upsert_mode = u;
        }
        if let Some(t) = patch.event_types {
            next.event_types = t;
        }
        next.check()?;
        next.updated_at = now;
        *self = next;
        Ok(())
    }

    /// Checks what the type needs: required fields present, strings where strings go, URLs
    /// that are http(s) URLs.
    fn check(&self) -> Result<(), DomainError> {
        let mut errors = FieldErrors::new();
        let t = self.type_id;
        check_object(
            "authentication",
            &self.authentication,
            t.authentication_fields(),
            self.type_id == IntegrationType::WebhookHttp,
            &mut errors,
        );
        check_object(
            "properties",
            &self.properties,
            t.property_fields(),
            false,
            &mut errors,
        );
        for key in t.url_fields() {
            if let Some(Value::String(url)) = self.properties.get(*key)
                && let Err(message) = check_url(url)
            {
                errors.add(format!("properties.{key}"), message);
            }
        }
        if let Some(Value::String(url)) = self.authentication.get("url")
            && let Err(message) = check_url(url)
        {
            errors.add("authentication.url", message);
        }
        if let Some(env) = self.properties.get("environment")
            && !matches!(env.as_str(), Some("production" | "development"))
        {
            errors.add(
                "properties.environment",
                "must be 'production' or 'development'",
            );
        }
        if matches!(t, IntegrationType::Actito | IntegrationType::Mparticle)
            && self.mappings.is_empty()
        {
            errors.add("mappings", "needs at least one mapping for this type");
        }
        errors.into_result()
    }
}

/// The changes an integration receives when its `event_types` are not given: every kind for a
/// webhook; `user.created` and `user.updated` for a connector, which sends users' statuses
/// and has nothing to send for the rest.
fn default_event_types(t: IntegrationType) -> Vec<ChangeKind> {
    match t {
        IntegrationType::WebhookHttp => ChangeKind::ALL.to_vec(),
        IntegrationType::Actito | IntegrationType::Mparticle => {
            vec![ChangeKind::UserCreated, ChangeKind::UserUpdated]
        }
    }
}

/// Checks an `authentication` or `properties` object: known fields only, strings, the
/// required ones present. With `all_or_nothing`, an empty object is fine too (optional OAuth).
fn check_object(
    name: &str,
    map: &Map<String, Value>,
    (allowed, required): (&[&str], &[&str]),
    all_or_nothing: bool,
    errors: &mut FieldErrors,
) {
    for (k, v) in map {
        if !allowed.contains(&k.as_str()) {
            errors.add(
                format!("{name}.{k}"),
                format!(
                    "is not a known field for this type; expected one of: {}",
                    allowed.join(", ")
                ),
            );
        } else if !v.is_string() {
            errors.add(
                format!("{name}.{k}"),
                format!("must be a string, not {}", type_name(v)),
            );
        } else if v.as_str().is_some_and(|s| s.is_empty() || s.len() > 2048) {
            errors.add(format!("{name}.{k}"), "must be 1 to 2048 characters");
        }
    }
    if all_or_nothing && map.is_empty() {
        return;
    }
    for r in required {
        if !map.contains_key(*r) {
            errors.add(format!("{name}.{r}"), "is required");
        }
    }
}

/// An `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("must name a host".into());
    }
    Ok(())
}

/// Reads the fields shared by create and patch bodies.
fn read_patch(f: &Fields<'_, '_>, errors: &mut FieldErrors) -> IntegrationPatch {
    let object = |key: &str, errors: &mut FieldErrors| match f.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.clone()),
        Some(other) => {
            errors.add(key, format!("must be an object, not {}", type_name(other)));
            None
        }
    };
    let boolean = |key: &str, errors: &mut FieldErrors| match f.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errors.add(key, format!("must be a boolean, not {}", type_name(other)));
            None
        }
    };
    let name = match f.get("name") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => f
            .string("name", errors)
            .map(|s| Some(s.chars().take(255).collect())),
    };
    let mappings = f.array("mappings", errors).map(|items| {
        if items.len() > MAX_MAPPINGS {
            errors.add(
                "mappings",
                format!("has {} items; the limit is {MAX_MAPPINGS}", items.len()),
            );
        }
        let path = f.child("mappings");
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = path.index(i);
            let Some(m) = Fields::of(item, p, &["id", "value"], errors) else {
                continue;
            };
            let id = m.identifier("id", errors);
            let value = m.identifier("value", errors);
            for (key, v) in [("id", id), ("value", value)] {
                if v.is_none() && m.get(key).is_none() {
                    errors.add(m.child(key), "is required");
                }
            }
            m.finish(errors);
            if let (Some(id), Some(value)) = (id, value) {
                out.push(Mapping {
                    id: id.to_owned(),
                    value: value.to_owned(),
                });
            }
        }
        out
    });
    let event_types = f.array("event_types", errors).map(|items| {
        let path = f.child("event_types");
        let mut kinds = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(ChangeKind::parse) {
                Some(k) if !kinds.contains(&k) => kinds.push(k),
                Some(_) => {}
                None => errors.add(
                    path.index(i),
                    format!(
                        "must be one of: {}",
                        ChangeKind::ALL.map(ChangeKind::as_str).join(", ")
                    ),
                ),
            }
        }
        if items.is_empty() {
            errors.add("event_types", "must name at least one type");
        }
        kinds.sort();
        kinds
    });
    IntegrationPatch {
        name,
        enabled: boolean("enabled", errors),
        authentication: object("authentication", errors),
        properties: object("properties", errors),
        mappings,
        upsert_mode: boolean("upsert_mode", errors),
        event_types,
    }
}

impl IntegrationPatch {
    /// Parses a `PATCH /marketplace/integrations/{id}` body.
    pub fn parse(value: &Value) -> Result<IntegrationPatch, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(value, Path::Root, PATCH_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let patch = read_patch(&f, &mut errors);
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(patch)
    }
}

/// A change as destinations receive it: Didomi's webhook body, already serialized.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// `{"type": …, "parameters": …}` as JSON.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Message<'a, P> {
    #[serde(rename = "type")]
    kind: &'a str,
    parameters: P,
}

// Events are written straight from the stored event ([`EventJson`], the shape of
// [`EventView`]), without copying them first.
#[derive(Serialize)]
struct EventParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    entity: Option<EventJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_entity: Option<EventJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_entity: Option<EventJson<'a>>,
}

#[derive(Serialize)]
struct UserParameters<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<EventJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_entity: Option<UserView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_entity: Option<UserView>,
}

fn message<P: Serialize>(kind: ChangeKind, parameters: P) -> Change {
    let body = serde_json::to_vec(&Message {
        kind: kind.as_str(),
        parameters,
    })
    .expect("views serialize");
    Change { kind, body }
}

/// Writes a body from parts already written as JSON: `{"type": kind, "parameters": {…}}` with
/// the parameters present, in the order given (the order of the parameter structs above).
fn message_of_parts(kind: ChangeKind, parts: &[(&str, Option<&[u8]>)]) -> Change {
    let present = || parts.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
    let len: usize = present().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut body = Vec::with_capacity(len + 48);
    body.extend_from_slice(b"{\"type\":\"");
    body.extend_from_slice(kind.as_str().as_bytes());
    body.extend_from_slice(b"\",\"parameters\":{");
    for (i, (key, json)) in present().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(key.as_bytes());
        body.extend_from_slice(b"\":");
        body.extend_from_slice(json);
    }
    body.extend_from_slice(b"}}");
    Change { kind, body }
}

/// An event as change bodies show it, as JSON (to be shared by the bodies that name it).
pub fn event_json(event: &ConsentEvent) -> Vec<u8> {
    serde_json::to_vec(&EventJson(event)).expect("events serialize")
}

/// A user as change bodies show it under `regulation`, as JSON.
pub fn user_json(user: &UserRecord, regulation: &Regulation) -> Vec<u8> {
    serde_json::to_vec(&crate::status::UserJson { user, regulation }).expect("users serialize")
}

impl Change {
    /// [`Change::event_created`] from the event already written as JSON ([`event_json`]).
    pub fn event_created_from_json(entity: &[u8]) -> Change {
        message_of_parts(ChangeKind::EventCreated, &[("entity", Some(entity))])
    }

    /// [`Change::user_changed`] from parts already written as JSON: the user before (`None`:
    /// created) and after ([`user_json`], under the regulation of `source`), and the source
    /// event ([`event_json`]).
    pub fn user_changed_from_json(old: Option<&[u8]>, new: &[u8], source: Option<&[u8]>) -> Change {
        message_of_parts(
            if old.is_some() {
                ChangeKind::UserUpdated
            } else {
                ChangeKind::UserCreated
            },
            &[
                ("source", source),
                ("old_entity", old),
                ("new_entity", Some(new)),
            ],
        )
    }

    /// `event.created`: `parameters.entity` is the event.
    pub fn event_created(event: &ConsentEvent) -> Change {
        Change::event_created_from_json(&event_json(event))
    }

    /// `event.updated`: the event before and after.
    pub fn event_updated(old: &ConsentEvent, new: &ConsentEvent) -> Change {
        message(
            ChangeKind::EventUpdated,
            EventParameters {
                entity: None,
                old_entity: Some(EventJson(old)),
                new_entity: Some(EventJson(new)),
            },
        )
    }

    /// `event.deleted`: `parameters.entity` is the event as it was.
    pub fn event_deleted(event: &ConsentEvent) -> Change {
        message(
            ChangeKind::EventDeleted,
            EventParameters {
                entity: Some(EventJson(event)),
                old_entity: None,
                new_entity: None,
            },
        )
    }

    /// `user.created` or `user.updated` (when `old` is given): the user before and after,
    /// shown under the regulation of `source` (the event that caused the change), GDPR when
    /// there is none.
    pub fn user_changed(
        old: Option<&UserRecord>,
        new: &UserRecord,
        source: Option<&ConsentEvent>,
    ) -> Change {
        let regulation = Change::regulation_of(source);
        Change::user_changed_from_json(
            old.map(|u| user_json(u, &regulation)).as_deref(),
            &user_json(new, &regulation),
            source.map(event_json).as_deref(),
        )
    }

    /// The regulation a user change is shown under: that of its source event, GDPR when there
    /// is none.
    pub fn regulation_of(source: Option<&ConsentEvent>) -> Regulation {
        source.map(|e| e.regulation.clone()).unwrap_or_default()
    }

    /// `user.deleted`: the user as it was, under GDPR.
    pub fn user_deleted(old: &UserRecord) -> Change {
        message(
            ChangeKind::UserDeleted,
            UserParameters {
                source: None,
                old_entity: Some(old.view(&Regulation::default())),
                new_entity: None,
            },
        )
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    /// Waiting for its first attempt, or for an earlier delivery of the same user.
    Queued,
    /// Failed at least once; another attempt is scheduled.
    Retrying,
    /// Received by the destination.
    Delivered,
    /// Every attempt failed (or the destination is gone); retried only on request.
    Parked,
}

impl DeliveryStatus {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Parked => "parked",
        }
    }

    /// Reads a name made by [`DeliveryStatus::as_str`].
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Retrying,
            DeliveryStatus::Delivered,
            DeliveryStatus::Parked,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// A small number for storage.
    pub fn code(self) -> i64 {
        match self {
            DeliveryStatus::Queued => 0,
            DeliveryStatus::Retrying => 1,
            DeliveryStatus::Delivered => 2,
            DeliveryStatus::Parked => 3,
        }
    }

    /// Reads a number made by [`DeliveryStatus::code`].
    pub fn from_code(code: i64) -> Option<DeliveryStatus> {
        match code {
            0 => Some(DeliveryStatus::Queued),
            1 => Some(DeliveryStatus::Retrying),
            2 => Some(DeliveryStatus::Delivered),
            3 => Some(DeliveryStatus::Parked),
            _ => None,
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (milliseconds since the epoch in storage; RFC 3339 in views).
    pub at: Timestamp,
    /// The destination's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What went wrong, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Most attempts kept in a delivery's log (the last ones).
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// A delivery of one change to one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id, which is also the `webhook-id` (stable across retries).
    pub id: String,
    /// The integration it is for.
    pub integration_id: String,
    /// The change it carries.
    pub kind: ChangeKind,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Its attempts, oldest first.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due, while one is.
    pub next_attempt_at: Option<Timestamp>,
    /// When the change happened.
    pub created_at: Timestamp,
    /// When the delivery last changed.
    pub updated_at: Timestamp,
}

impl Delivery {
    /// The delivery as the API shows it.
    pub fn view(&self) -> DeliveryView {
        DeliveryView {
            id: self.id.clone(),
            integration_id: self.integration_id.clone(),
            type_: self.kind.as_str().to_owned(),
            status: self.status,
            attempts: self
                .attempts
                .iter()
                .map(|a| AttemptView {
                    at: a.at.to_rfc3339(),
                    response_code: a.response_code,
                    duration_ms: a.duration_ms,
                    error: a.error.clone(),
                })
                .collect(),
            next_attempt_at: self.next_attempt_at.map(|t| t.to_rfc3339()),
            created_at: self.created_at.to_rfc3339(),
            updated_at: self.updated_at.to_rfc3339(),
        }
    }
}

/// A delivery as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryView {
    /// Delivery id (the `webhook-id` header of webhooks).
    pub id: String,
    /// The integration it is for.
    pub integration_id: String,
    /// The change: `event.created`, `user.updated`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `queued`, `retrying`, `delivered` or `parked`.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// When the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// When the change happened.
    pub created_at: String,
    /// When the delivery last changed.
    pub updated_at: String,
}

/// An attempt as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    /// When it started.
    pub at: String,
    /// The destination's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// What went wrong, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A user's consent status as path keys: the names connectors' `mappings[].value` use for the
/// leaves of a status, each with its choice.
///
/// Keys (ids as they are, joined with `_`):
///
/// | key | true / false |
/// |---|---|
/// | `consents_purposes_{purpose}_enabled` | the purpose's `enabled` |
/// | `consents_purposes_{purpose}_enabled_li` | the purpose's `enabled_li` |
/// | `consents_purposes_{purpose}_channels_{channel}_enabled` | a channel of the purpose |
/// | `consents_purposes_{purpose}_preferences_{pref}_enabled` | a (v1) preference |
/// | `consents_purposes_{purpose}_preferences_{pref}_channels_{channel}_enabled` | a channel of a (v1) preference |
/// | `consents_purposes_{purpose}_preferences_{pref}_{value}_enabled` | whether `value` is among the selected `values` of `pref` (false for any other value once the preference has values) |
/// | `consents_channels_{channel}_enabled` | a channel outside any purpose |
/// | `consents_vendors_{vendor}_enabled` | true in `vendors.enabled`, false in `vendors.disabled` |
/// | `consents_vendors_{vendor}_enabled_li` | true in `vendors.enabled_li`, false in `vendors.disabled_li` |
///
/// A leaf without a choice (`null`, or never mentioned) has no key: [`PathKeys::get`] answers
/// `None` and connectors leave it out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathKeys {
    leaves: std::collections::BTreeMap<String, bool>,
    /// `consents_purposes_{purpose}_preferences_{pref}_` of each preference that has selected
    /// values; a key under it ending in `_enabled` names a value, selected or not.
    value_prefixes: Vec<String>,
}

impl PathKeys {
    /// The path keys of a status.
    pub fn of(consents: &crate::status::ConsentsView) -> PathKeys {
        let mut keys = PathKeys::default();
        for p in &consents.purposes {
            let prefix = format!("consents_purposes_{}_", p.id);
            keys.put(format!("{prefix}enabled"), p.enabled);
            keys.put(format!("{prefix}enabled_li"), p.enabled_li);
            keys.channels(&prefix, &p.channels);
            for pref in &p.preferences {
                let prefix = format!("{prefix}preferences_{}_", pref.id);
                keys.put(format!("{prefix}enabled"), pref.enabled);
                keys.channels(&prefix, &pref.channels);
            }
            for (pref, selected) in &p.values {
                let prefix = format!("{prefix}preferences_{pref}_");
                for value in selected.value.split(',').map(str::trim) {
                    if !value.is_empty() {
                        keys.put(format!("{prefix}{value}_enabled"), Some(true));
                    }
                }
                keys.value_prefixes.push(prefix);
            }
        }
        keys.channels("consents_", &consents.channels);
        let vendors = &consents.vendors;
        for (list, suffix, choice) in [
            (&vendors.enabled, "enabled", true),
            (&vendors.disabled, "enabled", false),
            (&vendors.enabled_li, "enabled_li", true),
            (&vendors.disabled_li, "enabled_li", false),
        ] {
            for v in list {
                keys.put(format!("consents_vendors_{v}_{suffix}"), Some(choice));
            }
        }
        keys
    }

    fn put(&mut self, key: String, choice: Option<bool>) {
        if let Some(b) = choice {
            self.leaves.insert(key, b);
        }
    }

    fn channels(&mut self, prefix: &str, channels: &[crate::status::ChannelView]) {
        for c in channels {
            self.put(format!("{prefix}channels_{}_enabled", c.id), c.enabled);
        }
    }

    /// The choice at `key`, if the status holds one.
    pub fn get(&self, key: &str) -> Option<bool> {
        if let Some(b) = self.leaves.get(key) {
            return Some(*b);
        }
        // A value of a preference that has values but not this one: not selected.
        self.value_prefixes.iter().find_map(|prefix| {
            let value = key
                .strip_prefix(prefix.as_str())?
                .strip_suffix("_enabled")?;
            (!value.is_empty()).then_some(false)
        })
    }

    /// Every key with a choice (values of a preference only as far as they are selected), in
    /// key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> {
        self.leaves.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

/// Flattens a status into its path keys (see [`PathKeys`]): every leaf that holds a choice.
pub fn path_keys(
    consents: &crate::status::ConsentsView,
) -> std::collections::BTreeMap<String, bool> {
    PathKeys::of(consents).leaves
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bodies built from parts written apart are the bodies written whole.
    #[test]
    fn bodies_from_json_parts_are_the_bodies_written_whole() {
        use crate::event::{EventBody, EventStatus};
        use crate::status::Stamp;
        use crate::user::UserRecord;
        use std::sync::Arc;
        let body: EventBody = serde_json::from_value(json!({
            "user": {"id": "u-1", "organization_user_id": "dana@example.com",
                     "metadata": {"plan": "gold"}},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}],
                         "vendors": {"enabled": ["v1"]}},
            "metadata": {"origin": "web"}
        }))
        .unwrap();
        let event = ConsentEvent {
            id: crate::EventId::generate(),
            organization_id: org(),
            user_id: "u-1".into(),
            created_at: Timestamp::from_millis(1_700_000_000_000),
            updated_at: Timestamp::from_millis(1_700_000_000_500),
            status: EventStatus::Confirmed,
            regulation: Regulation::default(),
            seq: 7,
            body: Arc::new(body),
        };
        let old = UserRecord {
            id: "u-1".into(),
            organization_id: org(),
            organization_user_id: Some("dana@example.com".into()),
            version: 3,
            created_at: Timestamp::from_millis(1_600_000_000_000),
            updated_at: Timestamp::from_millis(1_600_000_000_000),
            state: Default::default(),
        };
        let mut new = old.clone();
        new.version = 4;
        new.state.apply(
            &event.regulation,
            &event.body,
            Stamp {
                at: event.created_at.millis(),
                seq: event.seq,
            },
        );
        let regulation = Change::regulation_of(Some(&event));
        let parsed = |c: &Change| serde_json::from_slice::<Value>(&c.body).unwrap();
        let whole = message(
            ChangeKind::EventCreated,
            EventParameters {
                entity: Some(EventJson(&event)),
                old_entity: None,
                new_entity: None,
            },
        );
        let parts = Change::event_created(&event);
        assert_eq!(parts, whole);
        for (before, source) in [
            (Some(&old), Some(&event)),
            (None, Some(&event)),
            (Some(&old), None),
        ] {
            let whole = message(
                if before.is_some() {
                    ChangeKind::UserUpdated
                } else {
                    ChangeKind::UserCreated
                },
                UserParameters {
                    source: source.map(EventJson),
                    old_entity: before.map(|u| u.view(&regulation)),
                    new_entity: Some(new.view(&regulation)),
                },
            );
            let parts = Change::user_changed(before, &new, source);
            assert_eq!(parsed(&parts), parsed(&whole));
            assert_eq!(parts, whole, "byte for byte");
        }
    }

    fn org() -> OrganizationId {
        OrganizationId::parse("acme").unwrap()
    }

    #[test]
    fn a_webhook_needs_a_url_and_takes_every_type_by_default() {
        let now = Timestamp::from_millis(0);
        let err =
            Integration::parse_new(&json!({"type_id": "webhook-http"}), &org(), now).unwrap_err();
        assert!(format!("{err:?}").contains("properties.url"), "{err:?}");
        let i = Integration::parse_new(
            &json!({"type_id": "webhook-http", "properties": {"url": "https://example.com/h"}}),
            &org(),
            now,
        )
        .unwrap();
        assert!(i.enabled);
        assert_eq!(i.event_types, ChangeKind::ALL.to_vec());
    }

    #[test]
    fn unknown_types_and_event_types_name_the_field() {
        let now = Timestamp::from_millis(0);
        let err = Integration::parse_new(
            &json!({"type_id": "fax", "event_types": ["event.created", "nope"]}),
            &org(),
            now,
        )
        .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("type_id") && text.contains("event_types[1]"),
            "{text}"
        );
    }

    #[test]
    fn secrets_are_not_shown() {
        let now = Timestamp::from_millis(0);
        let i = Integration::parse_new(
            &json!({"type_id": "actito", "authentication": {"private_api_key": "s3cret"},
                    "properties": {"entity_id": "e", "table_name": "t", "user_unique_key": "k"},
                    "mappings": [{"id": "NEWS", "value": "consents_channels_email_enabled"}]}),
            &org(),
            now,
        )
        .unwrap();
        let shown = serde_json::to_string(&i.view()).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn connectors_take_user_changes_by_default() {
        let i = Integration::parse_new(
            &json!({"type_id": "mparticle", "authentication": {"api_key": "k", "api_secret": "s"},
                    "mappings": [{"id": "Marketing", "value": "consents_purposes_ads_enabled"}]}),
            &org(),
            Timestamp::from_millis(0),
        )
        .unwrap();
        assert_eq!(
            i.event_types,
            [ChangeKind::UserCreated, ChangeKind::UserUpdated]
        );
    }

    #[test]
    fn kinds_round_trip_through_codes() {
        for k in ChangeKind::ALL {
            assert_eq!(ChangeKind::from_code(k.code()), Some(k));
            assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        }
    }
}

#[cfg(test)]
mod path_key_tests {
    use super::*;
    use crate::status::ConsentsView;
    use serde_json::json;

    fn status(value: Value) -> ConsentsView {
        serde_json::from_value(value).unwrap()
    }

    fn sample() -> ConsentsView {
        status(json!({
            "purposes": [
                {"id": "newsletter", "enabled": true, "enabled_li": null,
                 "channels": [{"id": "email", "enabled": false}, {"id": "sms", "enabled": null}],
                 "preferences": [
                     {"id": "weekly", "enabled": true,
                      "channels": [{"id": "email", "enabled": true}]}
                 ],
                 "values": {"topics": {"value": "tech, sport"}}},
                {"id": "select_basic_ads", "enabled": null, "enabled_li": false}
            ],
            "channels": [{"id": "email", "enabled": true}, {"id": "push", "enabled": false}],
            "vendors": {"enabled": ["google"], "disabled": ["iab:42"],
                        "enabled_li": ["acme"], "disabled_li": []}
        }))
    }

    #[test]
    fn every_leaf_with_a_choice_has_its_key() {
        let keys = path_keys(&sample());
        let expected: Vec<(&str, bool)> = vec![
            ("consents_channels_email_enabled", true),
            ("consents_channels_push_enabled", false),
            ("consents_purposes_newsletter_channels_email_enabled", false),
            ("consents_purposes_newsletter_enabled", true),
            (
                "consents_purposes_newsletter_preferences_topics_sport_enabled",
                true,
            ),
            (
                "consents_purposes_newsletter_preferences_topics_tech_enabled",
                true,
            ),
            (
                "consents_purposes_newsletter_preferences_weekly_channels_email_enabled",
                true,
            ),
            (
                "consents_purposes_newsletter_preferences_weekly_enabled",
                true,
            ),
            ("consents_purposes_select_basic_ads_enabled_li", false),
            ("consents_vendors_acme_enabled_li", true),
            ("consents_vendors_google_enabled", true),
            ("consents_vendors_iab:42_enabled", false),
        ];
        let got: Vec<(&str, bool)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, expected);
        let leaves = PathKeys::of(&sample());
        assert_eq!(leaves.iter().count(), expected.len());
    }

    #[test]
    fn leaves_without_a_choice_have_no_key() {
        let keys = PathKeys::of(&sample());
        for absent in [
            "consents_purposes_newsletter_enabled_li",
            "consents_purposes_newsletter_channels_sms_enabled",
            "consents_purposes_select_basic_ads_enabled",
            "consents_purposes_unknown_enabled",
            "consents_vendors_unknown_enabled",
            "consents_channels_fax_enabled",
            "not_a_key",
        ] {
            assert_eq!(keys.get(absent), None, "{absent}");
        }
        assert_eq!(PathKeys::of(&ConsentsView::default()), PathKeys::default());
    }

    #[test]
    fn values_of_a_preference_are_true_when_selected_and_false_otherwise() {
        let keys = PathKeys::of(&sample());
        let key = |v: &str| format!("consents_purposes_newsletter_preferences_topics_{v}_enabled");
        assert_eq!(keys.get(&key("tech")), Some(true));
        assert_eq!(keys.get(&key("sport")), Some(true));
        assert_eq!(keys.get(&key("music")), Some(false), "a value not selected");
        assert_eq!(keys.get(&key("")), None);
        // A preference without values says nothing about values.
        assert_eq!(
            keys.get("consents_purposes_newsletter_preferences_other_tech_enabled"),
            None
        );
    }

    #[test]
    fn lookups_agree_with_the_flattened_keys() {
        let keys = PathKeys::of(&sample());
        for (k, v) in path_keys(&sample()) {
            assert_eq!(keys.get(&k), Some(v), "{k}");
        }
    }

    #[test]
    fn ids_with_underscores_are_kept_whole() {
        let keys = PathKeys::of(&status(json!({
            "purposes": [{"id": "market_research", "enabled": false,
                          "channels": [{"id": "in_app", "enabled": true}]}],
            "channels": [], "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []}
        })));
        assert_eq!(
            keys.get("consents_purposes_market_research_enabled"),
            Some(false)
        );
        assert_eq!(
            keys.get("consents_purposes_market_research_channels_in_app_enabled"),
            Some(true)
        );
    }
}
