//! Consent events: what a client sends, how it is validated, and how a stored event is shown.

use crate::consents::{ChannelChoice, Consents, Metadata, PurposeChoice, parse_consents};
use crate::error::{DomainError, FieldErrors};
use crate::ids::{EventId, OrganizationId, Regulation, parse_country};
use crate::json::{Fields, Path, check_bounds, type_name};
use crate::limits::{MAX_BATCH_EVENTS, MAX_FUTURE_SKEW_MS};
use crate::notice::{NoticeRecord, NoticeSource};
use crate::proof::ProofFile;
use crate::registry::PurposeVersions;
use crate::status::{Stamp, VendorsView};
use crate::tcf::{PurposeMap, TcfRequest, parse_params};
use crate::time::Timestamp;
use crate::token::ConsentGrant;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub mod plain;

/// Whether an event counts toward its user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventStatus {
    /// The event is part of the status.
    #[default]
    Confirmed,
    /// The event is stored and listed but changes nothing until confirmed.
    PendingApproval,
}

impl EventStatus {
    /// Parses `confirmed` or `pending_approval`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "confirmed" => Ok(EventStatus::Confirmed),
            "pending_approval" => Ok(EventStatus::PendingApproval),
            _ => Err("must be 'confirmed' or 'pending_approval'".to_owned()),
        }
    }

    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Confirmed => "confirmed",
            EventStatus::PendingApproval => "pending_approval",
        }
    }
}

/// The user an event is about, as the client named it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserRef {
    /// The user id; a user is created if it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The organization's own id for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_user_id: Option<String>,
    /// Merged into the user's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// ISO 3166-1 alpha-2 country of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// ISO 3166-1 alpha-2 country where the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_country: Option<String>,
}

impl UserRef {
    /// True when the client named nothing about the user.
    pub fn is_empty(&self) -> bool {
        *self == UserRef::default()
    }
}

/// A third party that made the event on behalf of the user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delegate {
    /// The delegate's id (an agent, a team, ...).
    pub id: String,
    /// The delegate's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
}

/// The content of an event as stored: what the client sent, minus the fields kept apart
/// (`id`, `created_at`, `status`, `regulation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    /// Free-form metadata on the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// The user, as named by the client.
    #[serde(default, skip_serializing_if = "UserRef::is_empty")]
    pub user: UserRef,
    /// The choices.
    #[serde(default, skip_serializing_if = "Consents::is_empty")]
    pub consents: Consents,
    /// Ids of the proofs attached to the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs_id: Vec<String>,
    /// Who made the event on the user's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// (Assent) The version in force, when the event was written, of each purpose it names
    /// that is in the organization's purpose registry. Set by the server, never by clients.
    #[serde(default, skip_serializing_if = "PurposeVersions::is_empty")]
    pub purpose_versions: PurposeVersions,
    /// For an event written in the notice shape: what that shape says beyond the consents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<NoticeRecord>,
}

impl EventBody {
    /// True when `self` and `other` hold the same content apart from their purpose versions,
    /// which record the registry at the time of writing, not what the client sent.
    fn same_as_sent(&self, other: &EventBody) -> bool {
        self.metadata == other.metadata
            && self.user == other.user
            && self.consents == other.consents
            && self.proofs_id == other.proofs_id
            && self.delegate == other.delegate
            && self.notice == other.notice
    }
}

/// A validated event as a client sent it, before the store gives it a user and a place.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInput {
    /// The client's idempotency key, if it sent one.
    pub id: Option<EventId>,
    /// When the choice was made, if the client said (back-dated imports).
    pub created_at: Option<Timestamp>,
    /// Confirmed, or pending approval.
    pub status: EventStatus,
    /// The regulation of the event.
    pub regulation: Regulation,
    /// The content (shared with the stored event it becomes, so that answering and folding
    /// do not copy it).
    pub body: Arc<EventBody>,
    /// The content as stored: compact JSON of `body`, made while parsing so that the writer
    /// does not have to.
    pub body_json: Vec<u8>,
    /// Parameters for generating a TCF string (`iab`), not stored.
    pub iab: Option<Value>,
    /// With `$generate_tcfcs=true`: the string to build, from `iab.tcf` and the server's
    /// purpose map. The store builds it from the status the user has once this event is
    /// folded, and puts it in `consents.tcfcs` before the event is written.
    pub tcf: Option<TcfRequest>,
    /// Proof files sent inside the event (`proofs`); their ids are already in
    /// `body.proofs_id`, and the server stores the files before the event.
    pub proofs: Vec<ProofFile>,
}

/// What a parse needs to know beyond the body.
#[derive(Debug, Clone)]
pub struct ParseContext {
    /// The organization of the request.
    pub organization_id: OrganizationId,
    /// The current instant, to refuse events dated in the future.
    pub now: Timestamp,
    /// `Some` with the server's purpose map when the request asks for `$generate_tcfcs=true`:
    /// each event's `iab.tcf` is then read (and required) and the event asks for a string.
    pub generate_tcfcs: Option<Arc<PurposeMap>>,
    /// The server's purpose map, to read the purposes of a notice's TCF consent string back
    /// into purpose ids.
    pub purpose_map: Arc<PurposeMap>,
}

impl ParseContext {
    /// True when `t` is later than now, beyond the clock skew an event may have.
    pub(crate) fn is_future(&self, t: Timestamp) -> bool {
        t.millis() > self.now.millis() + MAX_FUTURE_SKEW_MS
    }
}

/// A parsed `POST /consents/events` body: one event or a batch.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// The events, in input order.
    pub events: Vec<EventInput>,
    /// True when the body was an array (the response is then an array too).
    pub is_array: bool,
}

const EVENT_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "created_at",
    "status",
    "regulation",
    "metadata",
    "user",
    "consents",
    "proofs",
    "proofs_id",
    "delegate",
    "iab",
];

impl EventInput {
    /// An event with `body` as its content and its stored form, no TCF request and no proof
    /// files: what every reader of events makes once the body is checked.
    pub fn new(
        id: Option<EventId>,
        created_at: Option<Timestamp>,
        status: EventStatus,
        regulation: Regulation,
        body: EventBody,
    ) -> EventInput {
        let body_json = serde_json::to_vec(&body).unwrap_or_default();
        EventInput {
            id,
            created_at,
            status,
            regulation,
            body: Arc::new(body),
            body_json,
            iab: None,
            tcf: None,
            proofs: Vec::new(),
        }
    }

    /// Parses one event at `path`, recording every problem in `errors`.
    pub fn parse(
        value: &Value,
        path: Path<'_>,
        ctx: &ParseContext,
        errors: &mut FieldErrors,
    ) -> Option<EventInput> {
        if crate::notice::is_notice(value) {
            return crate::notice::parse::parse(value, path, ctx, errors);
        }
        let before = errors.len();
        let f = Fields::of(value, path, EVENT_FIELDS, errors)?;
        let id = read_id(&f, errors);
        check_organization(&f, ctx, errors);
        let created_at = read_created_at(&f, ctx, errors);
        let status = f
            .string("status", errors)
            .map(|s| {
                EventStatus::parse(s).unwrap_or_else(|message| {
                    errors.add(f.child("status"), message);
                    EventStatus::Confirmed
                })
            })
            .unwrap_or_default();
        let regulation = f
            .string("regulation", errors)
            .map(|s| {
                Regulation::parse(s).unwrap_or_else(|message| {
                    errors.add(f.child("regulation"), message);
                    Regulation::default()
                })
            })
            .unwrap_or_default();
        let user = match f.get("user") {
            None | Some(Value::Null) => UserRef::default(),
            Some(v) => parse_user_ref(v, f.child("user"), errors),
        };
        let consents = match f.get("consents") {
            None | Some(Value::Null) => Consents::default(),
            Some(v) => parse_consents(v, f.child("consents"), errors),
        };
        let proofs = parse_proofs(&f, errors);
        let mut proofs_id = f.identifier_list("proofs_id", errors);
        for proof in &proofs {
            if !proofs_id.contains(&proof.id) {
                proofs_id.push(proof.id.clone());
            }
        }
        let body = EventBody {
            metadata: f.metadata("metadata", errors),
            user,
            consents,
            proofs_id,
            delegate: f
                .get("delegate")
                .filter(|v| !v.is_null())
                .and_then(|v| parse_delegate(v, f.child("delegate"), errors)),
            purpose_versions: PurposeVersions::new(),
            notice: None,
        };
        let iab = match f.get("iab") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                errors.add(
                    f.child("iab"),
                    format!("must be an object, not {}", type_name(other)),
                );
                None
            }
        };
        let tcf = ctx.generate_tcfcs.as_ref().and_then(|map| {
            if body.consents.tcfcs.is_some() {
                errors.add(
                    f.child("consents").key("tcfcs"),
                    "cannot be sent with $generate_tcfcs=true, which makes the string",
                );
            }
            parse_params(f.get("iab"), f.child("iab"), errors).map(|params| TcfRequest {
                params,
                map: map.clone(),
            })
        });
        f.finish(errors);
        if errors.len() != before {
            return None;
        }
        Some(EventInput {
            iab,
            tcf,
            proofs,
            ..EventInput::new(id, created_at, status, regulation, body)
        })
    }

    /// Sets the event's TCF string (a generated one) and the stored form of its content.
    pub fn set_tcfcs(&mut self, tcfcs: String) {
        Arc::make_mut(&mut self.body).consents.tcfcs = Some(tcfcs);
        self.body_json = serde_json::to_vec(&self.body).unwrap_or_default();
    }

    /// Applies what a consent token grants to an event it creates: the token's user, event
    /// metadata, user metadata and delegate (the token's values win over the event's).
    pub fn apply_grant(&mut self, grant: &ConsentGrant) {
        let body = Arc::make_mut(&mut self.body);
        body.user.organization_user_id = Some(grant.organization_user_id.clone());
        if let Some(extra) = &grant.event_metadata {
            body.metadata
                .get_or_insert_with(Metadata::new)
                .extend(extra.clone());
        }
        if let Some(extra) = &grant.user_metadata {
            body.user
                .metadata
                .get_or_insert_with(Metadata::new)
                .extend(extra.clone());
        }
        if let Some(delegate) = &grant.delegate {
            body.delegate = Some(delegate.clone());
        }
        self.body_json = serde_json::to_vec(&self.body).unwrap_or_default();
    }

    /// True when `stored` holds the same content as this input, so that a replay of the same
    /// id is answered with the stored event. The status is not compared (it is the event's
    /// lifecycle, changed by `PATCH`), nor `created_at` when this input leaves it to the server.
    /// An input that asks for a generated TCF string matches whatever string was generated
    /// for the stored event. Purpose versions are not compared: a replay after a purpose was
    /// edited is still the same event.
    pub fn same_content(&self, stored: &ConsentEvent) -> bool {
        let same_body = if self.tcf.is_some() && stored.body.consents.tcfcs.is_some() {
            let mut sent = (*self.body).clone();
            sent.consents.tcfcs.clone_from(&stored.body.consents.tcfcs);
            sent.same_as_sent(&stored.body)
        } else {
            self.body.same_as_sent(&stored.body)
        };
        same_body
            && self.regulation == stored.regulation
            && self.created_at.is_none_or(|t| t == stored.created_at)
    }
}

/// Reads the client's idempotency key `id` of an event, if it sent one.
pub(crate) fn read_id(f: &Fields<'_, '_>, errors: &mut FieldErrors) -> Option<EventId> {
    f.string("id", errors)
        .and_then(|s| match EventId::parse(s) {
            Ok(id) => Some(id),
            Err(message) => {
                errors.add(f.child("id"), message);
                None
            }
        })
}

/// Checks that the `organization_id` of an event, when present, is the query's.
pub(crate) fn check_organization(f: &Fields<'_, '_>, ctx: &ParseContext, errors: &mut FieldErrors) {
    if let Some(org) = f.string("organization_id", errors)
        && org != ctx.organization_id.as_str()
    {
        errors.add(
            f.child("organization_id"),
            "must equal the organization_id of the query",
        );
    }
}

/// Reads the `created_at` of an event, refusing instants in the future.
pub(crate) fn read_created_at(
    f: &Fields<'_, '_>,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<Timestamp> {
    f.string("created_at", errors)
        .and_then(|s| match Timestamp::parse(s) {
            Ok(t) if ctx.is_future(t) => {
                errors.add(f.child("created_at"), "is in the future");
                None
            }
            Ok(t) => Some(t),
            Err(message) => {
                errors.add(f.child("created_at"), message);
                None
            }
        })
}

/// Parses a `POST /consents/events` body: one event object, or an array of 1 to 100. Each
/// event is in the Consents API shape, or in the notice shape of CMP SDKs (recognised by its
/// `events` array, see [`crate::notice`]); a batch may mix them.
pub fn parse_batch(value: &Value, ctx: &ParseContext) -> Result<EventBatch, DomainError> {
    let mut errors = FieldErrors::new();
    check_bounds(value, Path::Root, &mut errors);
    if !errors.is_empty() {
        return Err(DomainError::invalid(errors));
    }
    match value {
        Value::Object(_) => {
            let event = EventInput::parse(value, Path::Root, ctx, &mut errors);
            match event {
                Some(event) if errors.is_empty() => Ok(EventBatch {
                    events: vec![event],
                    is_array: false,
                }),
                _ => Err(DomainError::invalid(errors)),
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Err(DomainError::bad_request(
                    "the batch is empty; send 1 to 100 events",
                ));
            }
            if items.len() > MAX_BATCH_EVENTS {
                return Err(DomainError::bad_request(format!(
                    "batch has {} events; the limit is {MAX_BATCH_EVENTS}",
                    items.len()
                )));
            }
            let mut events = Vec::with_capacity(items.len());
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let root = Path::Root;
            for (i, item) in items.iter().enumerate() {
                let path = root.index(i);
                if let Some(event) = EventInput::parse(item, path, ctx, &mut errors) {
                    if let Some(id) = &event.id {
                        if let Some(first) = seen.get(id.as_str()) {
                            errors.add(
                                path.key("id"),
                                format!("event id '{id}' appears twice in this batch (first at [{first}])"),
                            );
                        } else {
                            seen.insert(item_id(item), i);
                        }
                    }
                    events.push(event);
                }
            }
            if errors.is_empty() {
                Ok(EventBatch {
                    events,
                    is_array: true,
                })
            } else {
                Err(DomainError::invalid(errors))
            }
        }
        other => Err(DomainError::bad_request(format!(
            "the body must be an event object or an array of events, not {}",
            type_name(other)
        ))),
    }
}

/// The `id` string of a raw event known to have one.
fn item_id(item: &Value) -> &str {
    item.get("id").and_then(Value::as_str).unwrap_or_default()
}

fn parse_user_ref(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> UserRef {
    let Some(f) = Fields::of(
        value,
        path,
        &[
            "id",
            "organization_user_id",
            "metadata",
            "country",
            "last_seen_country",
        ],
        errors,
    ) else {
        return UserRef::default();
    };
    let country = |key: &str, errors: &mut FieldErrors| {
        f.string(key, errors).and_then(|s| match parse_country(s) {
            Ok(c) => Some(c),
            Err(message) => {
                errors.add(f.child(key), message);
                None
            }
        })
    };
    let user = UserRef {
        id: f.identifier("id", errors).map(str::to_owned),
        organization_user_id: f
            .identifier("organization_user_id", errors)
            .map(str::to_owned),
        metadata: f.metadata("metadata", errors),
        country: country("country", errors),
        last_seen_country: country("last_seen_country", errors),
    };
    f.finish(errors);
    user
}

/// Reads the `proofs` data URIs of an event.
fn parse_proofs(f: &Fields<'_, '_>, errors: &mut FieldErrors) -> Vec<ProofFile> {
    let Some(items) = f.array("proofs", errors) else {
        return Vec::new();
    };
    let path = f.child("proofs");
    let mut proofs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = path.index(i).to_string();
        match item.as_str() {
            None => errors.add(
                &at,
                format!("must be a data URI string, not {}", type_name(item)),
            ),
            Some(uri) => match ProofFile::from_data_uri(uri, &at) {
                Ok(proof) => proofs.push(proof),
                Err(DomainError::Invalid { errors: found, .. }) => errors.extend(found),
                Err(other) => errors.add(&at, other.to_string()),
            },
        }
    }
    proofs
}

/// Reads a `delegate` object.
pub(crate) fn parse_delegate(
    value: &Value,
    path: Path<'_>,
    errors: &mut FieldErrors,
) -> Option<Delegate> {
    let f = Fields::of(value, path, &["id", "name", "metadata"], errors)?;
    let id = f.identifier("id", errors);
    if f.get("id").is_none_or(Value::is_null) {
        errors.add(f.child("id"), "is required");
    }
    let delegate = Delegate {
        id: id.unwrap_or_default().to_owned(),
        name: f.string("name", errors).map(str::to_owned),
        metadata: f.metadata("metadata", errors),
    };
    f.finish(errors);
    id.map(|_| delegate)
}

/// A change to a stored event (`PATCH /consents/events/{id}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPatch {
    /// A new status (mostly `pending_approval` → `confirmed`).
    pub status: Option<EventStatus>,
    /// New choices, replacing the event's choices.
    pub consents: Option<Consents>,
    /// New proof ids, replacing the event's.
    pub proofs_id: Option<Vec<String>>,
    /// A new delegate.
    pub delegate: Option<Delegate>,
    /// Proof files sent with the patch; their ids are added to the event's `proofs_id`.
    pub proofs: Vec<ProofFile>,
    /// The versions of the registered purposes the new `consents` name (see
    /// [`crate::registry::Registry::apply_to_patch`]); they replace the event's when the
    /// consents are replaced.
    pub purpose_versions: PurposeVersions,
}

impl EventPatch {
    /// Parses a patch body.
    pub fn parse(value: &Value) -> Result<EventPatch, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(value, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(
            value,
            Path::Root,
            &["status", "consents", "proofs", "proofs_id", "delegate"],
            &mut errors,
        ) else {
            return Err(DomainError::invalid(errors));
        };
        let status = f
            .string("status", &mut errors)
            .and_then(|s| match EventStatus::parse(s) {
                Ok(s) => Some(s),
                Err(message) => {
                    errors.add("status", message);
                    None
                }
            });
        let consents = f
            .get("consents")
            .filter(|v| !v.is_null())
            .map(|v| parse_consents(v, Path::Root.key("consents"), &mut errors));
        let proofs_id = f
            .get("proofs_id")
            .filter(|v| !v.is_null())
            .map(|_| f.identifier_list("proofs_id", &mut errors));
        let proofs = parse_proofs(&f, &mut errors);
        let delegate = f
            .get("delegate")
            .filter(|v| !v.is_null())
            .and_then(|v| parse_delegate(v, Path::Root.key("delegate"), &mut errors));
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(EventPatch {
            status,
            consents,
            proofs_id,
            delegate,
            proofs,
            purpose_versions: PurposeVersions::new(),
        })
    }

    /// Applies the patch to `event`, changed at `now`.
    pub fn apply_to(&self, event: &mut ConsentEvent, now: Timestamp) {
        if let Some(status) = self.status {
            event.status = status;
        }
        let body = Arc::make_mut(&mut event.body);
        if let Some(consents) = &self.consents {
            body.consents = consents.clone();
            body.purpose_versions.clone_from(&self.purpose_versions);
            // A notice event's actions must keep saying what the event chooses.
            if let Some(notice) = body.notice.as_mut() {
                notice.events = crate::notice::render::actions_of(consents);
            }
        }
        if let Some(proofs_id) = &self.proofs_id {
            body.proofs_id = proofs_id.clone();
        }
        for proof in &self.proofs {
            if !body.proofs_id.contains(&proof.id) {
                body.proofs_id.push(proof.id.clone());
            }
        }
        if let Some(delegate) = &self.delegate {
            body.delegate = Some(delegate.clone());
        }
        event.updated_at = now;
    }
}

/// A stored consent event.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentEvent {
    /// The event id.
    pub id: EventId,
    /// The organization that owns it.
    pub organization_id: OrganizationId,
    /// The id of the user it belongs to.
    pub user_id: String,
    /// When the choice was made.
    pub created_at: Timestamp,
    /// When the event was stored or last changed.
    pub updated_at: Timestamp,
    /// Confirmed or pending approval.
    pub status: EventStatus,
    /// The regulation of the event.
    pub regulation: Regulation,
    /// Arrival order in the store.
    pub seq: i64,
    /// The content, shared with the store's memory of recent events.
    pub body: Arc<EventBody>,
}

impl ConsentEvent {
    /// The event's place in the fold order.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            at: self.created_at.millis(),
            seq: self.seq,
        }
    }

    /// The event as the API shows it.
    pub fn view(&self) -> EventView {
        let b = &self.body;
        let v = &b.consents.vendors;
        EventView {
            id: self.id.to_string(),
            organization_id: self.organization_id.to_string(),
            created_at: self.created_at.to_rfc3339(),
            updated_at: self.updated_at.to_rfc3339(),
            status: self.status,
            regulation: self.regulation.to_string(),
            metadata: b.metadata.clone(),
            user: EventUserView {
                id: self.user_id.clone(),
                organization_user_id: b.user.organization_user_id.clone(),
                metadata: b.user.metadata.clone(),
                country: b.user.country.clone(),
                last_seen_country: b.user.last_seen_country.clone(),
                region: b.notice.as_ref().and_then(|n| n.region.clone()),
            },
            consents: EventConsentsView {
                purposes: b.consents.purposes.clone(),
                channels: b.consents.channels.clone(),
                vendors: VendorsView {
                    enabled: v.enabled.clone(),
                    disabled: v.disabled.clone(),
                    enabled_li: v.enabled_li.clone(),
                    disabled_li: v.disabled_li.clone(),
                },
                tcfcs: b.consents.tcfcs.clone(),
            },
            proofs_id: b.proofs_id.clone(),
            delegate: b.delegate.clone(),
            purpose_versions: (!b.purpose_versions.is_empty()).then(|| b.purpose_versions.clone()),
            notice_id: b.notice.as_ref().and_then(|n| n.notice_id.clone()),
            source: b.notice.as_ref().and_then(|n| n.source.clone()),
        }
    }
}

/// Writes a stored event as the API shows it (the shape of [`EventView`]) straight from the
/// stored event, without copying it first: answers to batches carry a hundred of them.
pub struct EventJson<'a>(pub &'a ConsentEvent);

impl Serialize for EventJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.0;
        let b = &*e.body;
        let mut out = s.serialize_struct("EventView", 14)?;
        out.serialize_field("id", e.id.as_str())?;
        out.serialize_field("organization_id", e.organization_id.as_str())?;
        out.serialize_field("created_at", &e.created_at.to_rfc3339())?;
        out.serialize_field("updated_at", &e.updated_at.to_rfc3339())?;
        out.serialize_field("status", &e.status)?;
        out.serialize_field("regulation", e.regulation.as_str())?;
        match &b.metadata {
            Some(m) => out.serialize_field("metadata", m)?,
            None => out.skip_field("metadata")?,
        }
        out.serialize_field(
            "user",
            &EventUserJson {
                id: &e.user_id,
                user: &b.user,
                region: b.notice.as_ref().and_then(|n| n.region.as_deref()),
            },
        )?;
        out.serialize_field("consents", &EventConsentsJson(&b.consents))?;
        out.serialize_field("proofs_id", &b.proofs_id)?;
        match &b.delegate {
            Some(d) => out.serialize_field("delegate", d)?,
            None => out.skip_field("delegate")?,
        }
        if b.purpose_versions.is_empty() {
            out.skip_field("purpose_versions")?;
        } else {
            out.serialize_field("purpose_versions", &b.purpose_versions)?;
        }
        let notice = b.notice.as_ref();
        match notice.and_then(|n| n.notice_id.as_ref()) {
            Some(id) => out.serialize_field("notice_id", id)?,
            None => out.skip_field("notice_id")?,
        }
        match notice.and_then(|n| n.source.as_ref()) {
            Some(source) => out.serialize_field("source", source)?,
            None => out.skip_field("source")?,
        }
        out.end()
    }
}

struct EventUserJson<'a> {
    id: &'a str,
    user: &'a UserRef,
    region: Option<&'a str>,
}

impl Serialize for EventUserJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let u = self.user;
        let mut out = s.serialize_struct("EventUserView", 6)?;
        out.serialize_field("id", self.id)?;
        match &u.organization_user_id {
            Some(v) => out.serialize_field("organization_user_id", v)?,
            None => out.skip_field("organization_user_id")?,
        }
        match &u.metadata {
            Some(m) => out.serialize_field("metadata", m)?,
            None => out.skip_field("metadata")?,
        }
        for (key, value) in [
            ("country", &u.country),
            ("last_seen_country", &u.last_seen_country),
        ] {
            match value {
                Some(v) => out.serialize_field(key, v)?,
                None => out.skip_field(key)?,
            }
        }
        match self.region {
            Some(region) => out.serialize_field("region", region)?,
            None => out.skip_field("region")?,
        }
        out.end()
    }
}

struct EventConsentsJson<'a>(&'a Consents);

impl Serialize for EventConsentsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = self.0;
        let mut out = s.serialize_struct("EventConsentsView", 4)?;
        out.serialize_field("purposes", &c.purposes)?;
        out.serialize_field("channels", &c.channels)?;
        out.serialize_field("vendors", &VendorsJson(&c.vendors))?;
        match &c.tcfcs {
            Some(t) => out.serialize_field("tcfcs", t)?,
            None => out.skip_field("tcfcs")?,
        }
        out.end()
    }
}

struct VendorsJson<'a>(&'a crate::consents::Vendors);

impl Serialize for VendorsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let v = self.0;
        let mut out = s.serialize_struct("VendorsView", 4)?;
        out.serialize_field("enabled", &v.enabled)?;
        out.serialize_field("disabled", &v.disabled)?;
        out.serialize_field("enabled_li", &v.enabled_li)?;
        out.serialize_field("disabled_li", &v.disabled_li)?;
        out.end()
    }
}

/// A consent event as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventView {
    /// Event id.
    pub id: String,
    /// Owning organization.
    pub organization_id: String,
    /// When the choice was made (RFC 3339, UTC, milliseconds).
    pub created_at: String,
    /// When the event was stored or last changed.
    pub updated_at: String,
    /// Confirmed or pending approval.
    pub status: EventStatus,
    /// Regulation of the event.
    pub regulation: String,
    /// Free-form metadata of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// The user, with its resolved id.
    pub user: EventUserView,
    /// The choices of the event.
    pub consents: EventConsentsView,
    /// Ids of attached proofs.
    pub proofs_id: Vec<String>,
    /// Who made the event on the user's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// (Assent) The version in force, when the event was written, of each purpose it names
    /// that is in the purpose registry; absent when it names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub purpose_versions: Option<PurposeVersions>,
    /// The notice shown, for an event written in the notice shape that named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_id: Option<String>,
    /// The SDK that sent the event, for an event written in the notice shape that said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<NoticeSource>,
}

/// The user part of a shown event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventUserView {
    /// The resolved user id.
    pub id: String,
    /// The organization user id the event named, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_user_id: Option<String>,
    /// Metadata the event merged into the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Country the event set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Country where the event happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_country: Option<String>,
    /// The user's region, for an event written in the notice shape that named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// The choices of a shown event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventConsentsView {
    /// Purpose choices.
    pub purposes: Vec<PurposeChoice>,
    /// Channel choices.
    pub channels: Vec<ChannelChoice>,
    /// Vendor choices.
    pub vendors: VendorsView,
    /// TCF string, if the event carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcfcs: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> ParseContext {
        ParseContext {
            organization_id: OrganizationId::parse("acme").unwrap(),
            now: Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            generate_tcfcs: None,
            purpose_map: Arc::new(PurposeMap::default()),
        }
    }

    #[test]
    fn unknown_top_level_field_is_rejected() {
        let err = parse_batch(&json!({"consent": {}}), &ctx()).unwrap_err();
        let DomainError::Invalid { errors, .. } = err else {
            panic!()
        };
        assert!(errors.as_map().contains_key("consent"));
    }

    #[test]
    fn batch_errors_are_keyed_by_index() {
        let body = json!([{"user": {"id": "u"}}, {"user": {"country": "XX"}}]);
        let DomainError::Invalid { errors, .. } = parse_batch(&body, &ctx()).unwrap_err() else {
            panic!()
        };
        assert!(
            errors.as_map().contains_key("[1].user.country"),
            "{errors:?}"
        );
    }

    #[test]
    fn batch_over_the_limit_is_rejected() {
        let body = Value::Array(vec![json!({}); 101]);
        let err = parse_batch(&body, &ctx()).unwrap_err();
        assert!(err.to_string().contains("101"));
    }

    #[test]
    fn duplicate_ids_in_a_batch_are_rejected() {
        let body = json!([{"id": "a"}, {"id": "a"}]);
        let DomainError::Invalid { errors, .. } = parse_batch(&body, &ctx()).unwrap_err() else {
            panic!()
        };
        assert!(errors.as_map().contains_key("[1].id"));
    }

    #[test]
    fn future_events_are_rejected() {
        let body = json!({"created_at": "2030-01-01T00:00:00Z"});
        assert!(parse_batch(&body, &ctx()).is_err());
    }

    fn generating_ctx() -> ParseContext {
        ParseContext {
            generate_tcfcs: Some(Arc::new(PurposeMap::default())),
            ..ctx()
        }
    }

    #[test]
    fn iab_is_read_only_when_a_string_is_generated() {
        let body = json!({"iab": {"tcf": {"cmp": 1}, "other": true}});
        let event = parse_batch(&body, &ctx()).unwrap().events.remove(0);
        assert_eq!(event.tcf, None);
        let DomainError::Invalid { errors, .. } =
            parse_batch(&body, &generating_ctx()).unwrap_err()
        else {
            panic!()
        };
        for path in ["iab.tcf.cmp_id", "iab.tcf.cmp", "iab.other"] {
            assert!(errors.as_map().contains_key(path), "{path}: {errors:?}");
        }
        let event = parse_batch(&json!({"iab": {"tcf": {"cmp_id": 300}}}), &generating_ctx())
            .unwrap()
            .events
            .remove(0);
        assert_eq!(event.tcf.unwrap().params.cmp_id, 300);
    }

    #[test]
    fn a_batch_names_the_event_without_cmp_id() {
        let body = json!([{"iab": {"tcf": {"cmp_id": 300}}}, {"user": {"id": "u"}}]);
        let DomainError::Invalid { errors, .. } =
            parse_batch(&body, &generating_ctx()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(
            errors.as_map().keys().collect::<Vec<_>>(),
            vec!["[1].iab.tcf.cmp_id"]
        );
    }

    #[test]
    fn a_client_string_cannot_come_with_a_generated_one() {
        let tc = "CQSbk4AQSbk4AEsAAAENAAFgAMAAAAAAAAAAF5wAQF5gAAAA.IF5wAQF5gAAA.YAAAAAAAAAAA";
        let body = json!({"consents": {"tcfcs": tc}, "iab": {"tcf": {"cmp_id": 300}}});
        let DomainError::Invalid { errors, .. } =
            parse_batch(&body, &generating_ctx()).unwrap_err()
        else {
            panic!()
        };
        assert!(errors.as_map().contains_key("consents.tcfcs"), "{errors:?}");
    }

    #[test]
    fn a_replay_asking_for_a_string_matches_the_generated_one() {
        let body = json!({"id": "e", "created_at": "2020-01-01T00:00:00Z",
                          "consents": {"purposes": [{"id": "cookies", "enabled": true}]},
                          "iab": {"tcf": {"cmp_id": 300}}});
        let input = parse_batch(&body, &generating_ctx())
            .unwrap()
            .events
            .remove(0);
        let mut generated = input.clone();
        generated.set_tcfcs("CQSbk4AQSbk4AEsAAAENAAFgAMAAAAAAAAAAF5wAQF5gAAAA".into());
        let stored = ConsentEvent {
            id: EventId::parse("e").unwrap(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u".into(),
            created_at: input.created_at.unwrap(),
            updated_at: Timestamp::from_millis(0),
            status: EventStatus::Confirmed,
            regulation: Regulation::default(),
            seq: 1,
            body: generated.body.clone(),
        };
        assert!(input.same_content(&stored));
        let plain = parse_batch(
            &body
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.remove("iab");
                    Value::Object(o)
                })
                .unwrap(),
            &ctx(),
        )
        .unwrap()
        .events
        .remove(0);
        assert!(
            !plain.same_content(&stored),
            "without the flag the string is content"
        );
        let mut other = input.clone();
        Arc::make_mut(&mut other.body).consents.purposes[0].enabled = Some(false);
        assert!(!other.same_content(&stored));
    }

    #[test]
    fn null_and_absent_choices_are_the_same_content() {
        let a = parse_batch(
            &json!({"consents": {"purposes": [{"id": "p", "enabled": null}]}}),
            &ctx(),
        )
        .unwrap();
        let b = parse_batch(&json!({"consents": {"purposes": [{"id": "p"}]}}), &ctx()).unwrap();
        assert_eq!(a.events[0].body, b.events[0].body);
    }

    #[test]
    fn json_without_copies_equals_the_view() {
        let body = json!({
            "id": "e1", "created_at": "2020-06-03T21:28:55Z", "status": "pending_approval",
            "regulation": "ccpa", "metadata": {"k": [1, {"x": null}]},
            "user": {"id": "u", "organization_user_id": "o", "metadata": {"m": 1},
                     "country": "FR", "last_seen_country": "DE"},
            "consents": {"purposes": [{"id": "p", "enabled": true, "enabled_li": false,
                            "metadata": {"a": "b"}, "values": {"t": {"value": "x,y"}},
                            "preferences": [{"id": "w", "enabled": true,
                                             "channels": [{"id": "email", "enabled": false}]}],
                            "channels": [{"id": "sms"}]}],
                         "channels": [{"id": "push", "enabled": true, "metadata": {"z": 1}}],
                         "vendors": {"enabled": ["g"], "disabled_li": ["h"]},
                         "tcfcs": "CQSbk4AQSbk4AEsAAAENAAFgAMAAAAAAAAAAF5wAQF5gAAAA.IF5wAQF5gAAA.YAAAAAAAAAAA"},
            "proofs_id": ["abc.pdf"],
            "delegate": {"id": "agent", "name": "Support", "metadata": {"d": true}}
        });
        let input = parse_batch(&body, &ctx()).unwrap().events.remove(0);
        let rich = ConsentEvent {
            id: input.id.unwrap(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u".into(),
            created_at: input.created_at.unwrap(),
            updated_at: Timestamp::from_millis(5),
            status: input.status,
            regulation: input.regulation,
            seq: 1,
            body: input.body,
        };
        let bare = ConsentEvent {
            body: Arc::new(EventBody::default()),
            ..rich.clone()
        };
        for event in [rich, bare] {
            assert_eq!(
                serde_json::to_value(EventJson(&event)).unwrap(),
                serde_json::to_value(event.view()).unwrap()
            );
        }
    }

    #[test]
    fn a_notice_event_shows_its_notice_fields_in_both_writers() {
        let body = json!({"id": "n", "organization_id": "acme", "notice_id": "nt",
            "user": {"id": "u", "region": "BY"},
            "events": [{"action": "consent.given", "purpose": "p"}],
            "source": {"type": "android", "url": "https://e.com/"}});
        let input = parse_batch(&body, &ctx()).unwrap().events.remove(0);
        let event = ConsentEvent {
            id: input.id.unwrap(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u".into(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            status: input.status,
            regulation: input.regulation,
            seq: 1,
            body: input.body,
        };
        let view = serde_json::to_value(event.view()).unwrap();
        assert_eq!(serde_json::to_value(EventJson(&event)).unwrap(), view);
        assert_eq!(view["notice_id"], "nt");
        assert_eq!(
            view["source"],
            json!({"type": "android", "url": "https://e.com/"})
        );
        assert_eq!(view["user"]["region"], "BY");
        assert_eq!(
            view["metadata"],
            json!({"notice_actions": ["consent.given"]})
        );
    }

    #[test]
    fn patching_a_notice_events_consents_rewrites_its_actions() {
        let body = json!({"organization_id": "acme", "user": {"id": "u"},
            "events": [{"action": "preference.shown"},
                       {"action": "consent.given", "purpose": "p"}]});
        let input = parse_batch(&body, &ctx()).unwrap().events.remove(0);
        let mut event = ConsentEvent {
            id: EventId::parse("e").unwrap(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u".into(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            status: EventStatus::Confirmed,
            regulation: Regulation::default(),
            seq: 1,
            body: input.body,
        };
        let patch = EventPatch::parse(&json!({"consents": {"purposes": [
            {"id": "p", "enabled": false}]}}))
        .unwrap();
        patch.apply_to(&mut event, Timestamp::from_millis(9));
        assert_eq!(
            serde_json::to_value(event.notice_view().events).unwrap(),
            json!([{"action": "consent.refused", "purpose": "p"}])
        );
    }

    #[test]
    fn view_always_has_vendors_and_user_id() {
        let event = ConsentEvent {
            id: EventId::parse("e").unwrap(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u1".into(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            status: EventStatus::Confirmed,
            regulation: Regulation::default(),
            seq: 1,
            body: Arc::new(EventBody::default()),
        };
        let v = serde_json::to_value(event.view()).unwrap();
        assert_eq!(v["user"]["id"], "u1");
        assert_eq!(v["consents"]["vendors"]["enabled"], json!([]));
        assert_eq!(v["created_at"], "1970-01-01T00:00:00.000Z");
    }
}
