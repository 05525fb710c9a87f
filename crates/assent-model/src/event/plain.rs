//! Plain events read straight from the request bytes into types.
//!
//! Building a JSON tree of every event, walking it and dropping it cost about a third of a
//! node's CPU under batch ingest. Most requests carry plain events: the Consents API shape,
//! without proof files, the notice shape of CMP SDKs, TCF parameters (`iab`) or a TCF string
//! to generate. Those are read here by serde into typed structs and checked with the rules of
//! [`super::parse_batch`]. This path only ever accepts: whatever it does not know, and
//! whatever those rules refuse, makes it return `None`, and the caller parses the JSON tree
//! with `parse_batch`, which names every problem with its path. A property test holds the two
//! paths to the same events.

use super::{Delegate, EventBatch, EventBody, EventInput, EventStatus, ParseContext, UserRef};
use crate::consents::{ChannelChoice, Consents, Metadata, PreferenceChoice, PreferenceValue};
use crate::consents::{PurposeChoice, Vendors};
use crate::ids::{EventId, Regulation, check_identifier, parse_country};
use crate::json::metadata_size;
use crate::limits::{MAX_BATCH_EVENTS, MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_STRING_BYTES};
use crate::registry::PurposeVersions;
use crate::tcf::check_tc_string;
use crate::time::Timestamp;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;

/// Parses a `POST /consents/events` body of plain events; `None` when the body is anything
/// else or anything in it is refused (the caller then parses it as a JSON tree).
pub fn parse(bytes: &[u8], ctx: &ParseContext) -> Option<EventBatch> {
    if ctx.generate_tcfcs.is_some() || !within_bounds(bytes) {
        return None;
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace())? {
        b'{' => {
            let event = serde_json::from_slice::<Obj<PlainEvent>>(bytes).ok()?;
            Some(EventBatch {
                events: vec![event.0.into_input(ctx)?],
                is_array: false,
            })
        }
        b'[' => {
            let items = serde_json::from_slice::<Vec<Obj<PlainEvent>>>(bytes).ok()?;
            if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
                return None;
            }
            let mut ids = HashSet::with_capacity(items.len());
            let mut events = Vec::with_capacity(items.len());
            for item in items {
                let event = item.0.into_input(ctx)?;
                if let Some(id) = &event.id
                    && !ids.insert(id.as_str().to_owned())
                {
                    return None;
                }
                events.push(event);
            }
            Some(EventBatch {
                events,
                is_array: true,
            })
        }
        _ => None,
    }
}

/// True when no value of the body is nested deeper than [`MAX_JSON_DEPTH`] and no string (or
/// key) is longer than [`MAX_STRING_BYTES`], counting strings as written, escapes included
/// (never shorter than what they decode to). The bounds of [`crate::json::check_bounds`], made
/// on the bytes and erring on the safe side.
fn within_bounds(bytes: &[u8]) -> bool {
    let mut open = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                open += 1;
                // A container at depth `open` holding anything has it at `open + 1`.
                if open >= MAX_JSON_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => open = open.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                if j - start > MAX_STRING_BYTES {
                    return false;
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// A struct read from a JSON object only. Derived structs also read arrays (their fields in
/// order), which the API refuses.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        deserializer.deserialize_map(Fields(PhantomData))
    }
}

/// An event in the Consents API shape, with the fields plain events use.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainEvent {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    organization_id: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    regulation: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    user: Option<Obj<PlainUser>>,
    #[serde(default)]
    consents: Option<Obj<PlainConsents>>,
    #[serde(default)]
    proofs_id: Option<Vec<String>>,
    #[serde(default)]
    delegate: Option<Obj<PlainDelegate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    organization_user_id: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    last_seen_country: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainConsents {
    #[serde(default)]
    purposes: Option<Vec<Obj<PlainPurpose>>>,
    #[serde(default)]
    channels: Option<Vec<Obj<PlainChannel>>>,
    #[serde(default)]
    vendors: Option<Obj<PlainVendors>>,
    #[serde(default)]
    tcfcs: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainPurpose {
    id: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    enabled_li: Option<bool>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    values: Option<BTreeMap<String, Obj<PlainValue>>>,
    #[serde(default)]
    preferences: Option<Vec<Obj<PlainPreference>>>,
    #[serde(default)]
    channels: Option<Vec<Obj<PlainChannel>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainValue {
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainPreference {
    id: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    channels: Option<Vec<Obj<PlainChannel>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainChannel {
    id: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainVendors {
    #[serde(default)]
    enabled: Option<Vec<String>>,
    #[serde(default)]
    disabled: Option<Vec<String>>,
    #[serde(default)]
    enabled_li: Option<Vec<String>>,
    #[serde(default)]
    disabled_li: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainDelegate {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

impl PlainEvent {
    fn into_input(self, ctx: &ParseContext) -> Option<EventInput> {
        let id = self.id.map(|s| EventId::parse(&s)).transpose().ok()?;
        if self
            .organization_id
            .is_some_and(|o| o != ctx.organization_id.as_str())
        {
            return None;
        }
        let created_at = match self.created_at {
            None => None,
            Some(s) => {
                let t = Timestamp::parse(&s).ok()?;
                if ctx.is_future(t) {
                    return None;
                }
                Some(t)
            }
        };
        let status = self
            .status
            .map(|s| EventStatus::parse(&s))
            .transpose()
            .ok()?
            .unwrap_or_default();
        let regulation = self
            .regulation
            .map(|s| Regulation::parse(&s))
            .transpose()
            .ok()?
            .unwrap_or_default();
        let body = EventBody {
            metadata: metadata(self.metadata)?,
            user: match self.user {
                None => UserRef::default(),
                Some(Obj(u)) => u.into_ref()?,
            },
            consents: match self.consents {
                None => Consents::default(),
                Some(Obj(c)) => c.into_consents()?,
            },
            proofs_id: identifiers(self.proofs_id)?,
            delegate: match self.delegate {
                None => None,
                Some(Obj(d)) => Some(Delegate {
                    id: identifier(d.id)?,
                    name: d.name,
                    metadata: metadata(d.metadata)?,
                }),
            },
            purpose_versions: PurposeVersions::new(),
            notice: None,
        };
        Some(EventInput::new(id, created_at, status, regulation, body))
    }
}

impl PlainUser {
    fn into_ref(self) -> Option<UserRef> {
        let country = |c: Option<String>| c.map(|s| parse_country(&s)).transpose().ok();
        Some(UserRef {
            id: optional_identifier(self.id)?,
            organization_user_id: optional_identifier(self.organization_user_id)?,
            metadata: metadata(self.metadata)?,
            country: country(self.country)?,
            last_seen_country: country(self.last_seen_country)?,
        })
    }
}

impl PlainConsents {
    fn into_consents(self) -> Option<Consents> {
        let mut purposes: Vec<PurposeChoice> = Vec::new();
        for Obj(p) in self.purposes.unwrap_or_default() {
            let p = p.into_choice()?;
            if purposes.iter().any(|q| q.id == p.id) {
                return None;
            }
            purposes.push(p);
        }
        let vendors = match self.vendors {
            None => Vendors::default(),
            Some(Obj(v)) => Vendors {
                enabled: identifiers(v.enabled)?,
                disabled: identifiers(v.disabled)?,
                enabled_li: identifiers(v.enabled_li)?,
                disabled_li: identifiers(v.disabled_li)?,
            },
        };
        let both = |on: &[String], off: &[String]| off.iter().any(|id| on.contains(id));
        if both(&vendors.enabled, &vendors.disabled)
            || both(&vendors.enabled_li, &vendors.disabled_li)
        {
            return None;
        }
        let tcfcs = match self.tcfcs {
            None => None,
            Some(s) if s.is_empty() || check_tc_string(&s).is_err() => return None,
            Some(s) => Some(s),
        };
        Some(Consents {
            purposes,
            channels: channels(self.channels)?,
            vendors,
            tcfcs,
        })
    }
}

impl PlainPurpose {
    fn into_choice(self) -> Option<PurposeChoice> {
        let mut values = BTreeMap::new();
        let read = self.values.unwrap_or_default();
        if !plain_keys(read.keys()) {
            return None;
        }
        for (pref_id, Obj(v)) in read {
            check_identifier(&pref_id).ok()?;
            values.insert(pref_id, PreferenceValue { value: v.value });
        }
        let mut preferences: Vec<PreferenceChoice> = Vec::new();
        for Obj(pref) in self.preferences.unwrap_or_default() {
            let pref = PreferenceChoice {
                id: identifier(pref.id)?,
                enabled: pref.enabled,
                metadata: metadata(pref.metadata)?,
                channels: channels(pref.channels)?,
            };
            if preferences.iter().any(|q| q.id == pref.id) {
                return None;
            }
            preferences.push(pref);
        }
        Some(PurposeChoice {
            id: identifier(self.id)?,
            enabled: self.enabled,
            enabled_li: self.enabled_li,
            metadata: metadata(self.metadata)?,
            values,
            preferences,
            channels: channels(self.channels)?,
        })
    }
}

/// A list of channels without duplicates.
fn channels(list: Option<Vec<Obj<PlainChannel>>>) -> Option<Vec<ChannelChoice>> {
    let mut out: Vec<ChannelChoice> = Vec::new();
    for Obj(c) in list.unwrap_or_default() {
        let channel = ChannelChoice {
            id: identifier(c.id)?,
            enabled: c.enabled,
            metadata: metadata(c.metadata)?,
        };
        if out.iter().any(|d| d.id == channel.id) {
            return None;
        }
        out.push(channel);
    }
    Some(out)
}

/// An identifier, if it is one.
fn identifier(s: String) -> Option<String> {
    check_identifier(&s).ok().map(|()| s)
}

/// An absent identifier, or one that is one (the outer `None` refuses it).
fn optional_identifier(s: Option<String>) -> Option<Option<String>> {
    match s {
        None => Some(None),
        Some(s) => identifier(s).map(Some),
    }
}

/// A list of identifiers without duplicates (absent: empty).
fn identifiers(list: Option<Vec<String>>) -> Option<Vec<String>> {
    let list = list.unwrap_or_default();
    for (i, s) in list.iter().enumerate() {
        check_identifier(s).ok()?;
        if list[..i].contains(s) {
            return None;
        }
    }
    Some(list)
}

/// Metadata within its size limit (the outer `None` refuses it).
fn metadata(m: Option<Metadata>) -> Option<Option<Metadata>> {
    match m {
        Some(map) if metadata_size(&map) > MAX_METADATA_BYTES || !plain_keys(map.keys()) => None,
        m => Some(m),
    }
}

/// False when a key of an object read here is one serde_json gives a meaning to in a JSON
/// tree (`$serde_json::private::…`, for raw values): the tree reads such an object otherwise.
fn plain_keys<'a>(mut keys: impl Iterator<Item = &'a String>) -> bool {
    keys.all(|k| !k.starts_with("$serde_json::private::"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OrganizationId;
    use crate::event::parse_batch;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn ctx() -> ParseContext {
        ParseContext {
            organization_id: OrganizationId::parse("org").unwrap(),
            now: Timestamp::now(),
            generate_tcfcs: None,
            purpose_map: Default::default(),
        }
    }

    /// Asserts that both paths read `body` into the same events, or that this path left it.
    fn check(body: &Value) -> Option<EventBatch> {
        let bytes = serde_json::to_vec(body).unwrap();
        let ctx = ctx();
        let fast = parse(&bytes, &ctx)?;
        let slow = parse_batch(body, &ctx)
            .unwrap_or_else(|e| panic!("accepted here, refused by parse_batch ({e}): {body}"));
        assert_eq!(fast.is_array, slow.is_array, "{body}");
        assert_eq!(fast.events.len(), slow.events.len(), "{body}");
        for (a, b) in fast.events.iter().zip(&slow.events) {
            assert_eq!(a.id, b.id, "{body}");
            assert_eq!(a.created_at, b.created_at, "{body}");
            assert_eq!(a.status, b.status, "{body}");
            assert_eq!(a.regulation, b.regulation, "{body}");
            assert_eq!(a.body, b.body, "{body}");
            assert_eq!(a.body_json, b.body_json, "{body}");
            assert_eq!(a.iab, b.iab, "{body}");
            assert!(b.tcf.is_none() && b.proofs.is_empty(), "{body}");
        }
        Some(fast)
    }

    #[test]
    fn a_plain_batch_is_read_here_as_parse_batch_reads_it() {
        let body = json!([
            {"id": "e-1", "user": {"organization_user_id": "u-1", "country": "fr"},
             "consents": {"purposes": [{"id": "news", "enabled": true, "values": {"topics": {"value": "a,b"}},
                                         "preferences": [{"id": "freq", "enabled": false, "channels": [{"id": "email"}]}]}],
                          "vendors": {"enabled": ["google"], "disabled_li": ["meta"]},
                          "channels": [{"id": "sms", "enabled": null}]},
             "metadata": {"source": "web", "n": 1.5}, "regulation": "ccpa", "status": "pending_approval",
             "created_at": "2024-01-02T03:04:05.678Z", "proofs_id": ["p1"],
             "delegate": {"id": "agent-7", "name": "Ann"}, "organization_id": "org"},
            {"user": {"id": "x"}, "consents": null, "metadata": null}
        ]);
        let batch = check(&body).expect("read here");
        assert_eq!(batch.events.len(), 2);
        assert_eq!(batch.events[0].body.user.country.as_deref(), Some("FR"));
        assert!(check(&json!({"user": {"id": "one"}})).is_some_and(|b| !b.is_array));
    }

    #[test]
    fn anything_else_is_left_to_the_tree() {
        for body in [
            json!({"user": {"id": "u"}, "proofs": ["data:text/plain;base64,aGk="]}),
            json!({"user": {"id": "u"}, "iab": {}}),
            json!({"events": []}),
            json!({"user": {"id": "u"}, "unknown": 1}),
            json!({"user": {"id": "u"}, "metadata": {"$serde_json::private::RawValue": "1"}}),
            json!({"consents": {"purposes": [{"id": "a",
                "values": {"$serde_json::private::RawValue": {"value": "x"}}}]}}),
            json!({"user": ["u"]}),
            json!({"user": {"id": "u"}, "consents": []}),
            json!({"user": {"id": "u"}, "consents": {"purposes": [["a", true]]}}),
            json!([["e-1"]]),
            json!({"user": {"id": ""}}),
            json!({"user": {"id": "u"}, "organization_id": "other"}),
            json!({"user": {"id": "u"}, "created_at": "3000-01-01T00:00:00Z"}),
            json!({"user": {"id": "u"}, "consents": {"purposes": [{"id": "a"}, {"id": "a"}]}}),
            json!({"user": {"id": "u"}, "consents": {"vendors": {"enabled": ["v"], "disabled": ["v"]}}}),
            json!({"user": {"id": "u"}, "consents": {"purposes": [{"enabled": true}]}}),
            json!({"user": {"id": "u"}, "consents": {"tcfcs": "not a string"}}),
            json!({"user": {"id": "u"}, "metadata": {"big": "x".repeat(MAX_METADATA_BYTES)}}),
            json!({"user": {"id": "u"}, "metadata": {"s": "x".repeat(MAX_STRING_BYTES + 1)}}),
            json!([{"id": "a", "user": {"id": "u"}}, {"id": "a", "user": {"id": "u"}}]),
            json!([]),
            json!("event"),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            assert!(parse(&bytes, &ctx()).is_none(), "{body}");
        }
        let mut deep = json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!({"k": deep});
        }
        let body = serde_json::to_vec(&json!({"user": {"id": "u"}, "metadata": deep})).unwrap();
        assert!(parse(&body, &ctx()).is_none());
        // Duplicate keys: the tree keeps the last, so this path leaves them to it.
        let dup = br#"{"user": {"id": "a"}, "user": {"id": "b"}}"#;
        assert!(parse(dup, &ctx()).is_none());
    }

    /// Pieces of events, valid and not, for the property below.
    fn piece(choices: &[Value]) -> impl Strategy<Value = Option<Value>> + use<> {
        proptest::option::of(proptest::sample::select(choices.to_vec()))
    }

    fn event() -> impl Strategy<Value = Value> {
        let ids = [json!("e-1"), json!("e-2"), json!(""), json!(7), Value::Null];
        let users = [
            json!({"organization_user_id": "u-1"}),
            json!({"id": "u-2", "metadata": {"a": [1, {"b": null}]}, "last_seen_country": "de"}),
            json!({"id": "u-3", "country": "zz"}),
            json!({"id": 3}),
            json!({"id": "u", "extra": true}),
            json!("u-1"),
            Value::Null,
        ];
        let consents = [
            json!({"purposes": [{"id": "a", "enabled": true}, {"id": "b", "enabled_li": false}]}),
            json!({"purposes": [{"id": "a", "values": {"p": {"value": "x"}, "": {"value": "y"}}}]}),
            json!({"purposes": [{"id": "a", "values": {"p": {"value": 1}}}]}),
            json!({"purposes": [{"id": "a", "preferences": [{"id": "f"}, {"id": "f"}]}]}),
            json!({"purposes": [{"id": "a", "channels": [{"id": "c", "metadata": {"m": 1}}]}]}),
            json!({"purposes": [{"id": "a", "enabled": "yes"}]}),
            json!({"channels": [{"id": "c"}, {"id": "c"}]}),
            json!({"vendors": {"enabled": ["v1", "v2"], "disabled": ["v3"]}}),
            json!({"vendors": {"enabled_li": ["v1", "v1"]}}),
            json!({"vendors": {"enabled": ["v1"], "disabled": ["v2", "v1"]}}),
            json!({"vendors": {"enabled_li": ["v1"], "disabled_li": ["v1"], "enabled": ["v1"]}}),
            json!({"purposes": [{"id": ""}]}),
            json!({"purposes": [{"id": "a", "preferences": [{"id": "f", "channels": [{"id": "e"}, {"id": "e"}]}]}]}),
            json!({"vendors": null, "purposes": null, "channels": null, "tcfcs": null}),
            json!({"tcfcs": ""}),
            json!([]),
        ];
        let statuses = [json!("confirmed"), json!("pending_approval"), json!("done")];
        let regulations = [json!("gdpr"), json!("cpra"), json!("nope!"), json!(1)];
        let dates = [
            json!("2024-05-06T07:08:09Z"),
            json!("2024-05-06"),
            json!("yesterday"),
        ];
        let metadata = [json!({"k": "v"}), json!({}), json!([1]), Value::Null];
        let delegates = [
            json!({"id": "d", "name": "N", "metadata": {"x": 1}}),
            json!({"name": "no id"}),
            json!({"id": "d", "name": 5}),
        ];
        let proofs_ids = [json!(["p1", "p2"]), json!(["p1", "p1"]), json!("p1")];
        let orgs = [json!("org"), json!("another")];
        (
            (
                piece(&ids),
                piece(&users),
                piece(&consents),
                piece(&statuses),
            ),
            (piece(&regulations), piece(&dates), piece(&metadata)),
            (piece(&delegates), piece(&proofs_ids), piece(&orgs)),
        )
            .prop_map(
                |((id, user, consents, status), (reg, date, meta), (del, proofs, org))| {
                    let mut event = serde_json::Map::new();
                    for (key, value) in [
                        ("id", id),
                        ("user", user),
                        ("consents", consents),
                        ("status", status),
                        ("regulation", reg),
                        ("created_at", date),
                        ("metadata", meta),
                        ("delegate", del),
                        ("proofs_id", proofs),
                        ("organization_id", org),
                    ] {
                        if let Some(value) = value {
                            event.insert(key.to_owned(), value);
                        }
                    }
                    Value::Object(event)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn whatever_is_read_here_is_what_parse_batch_reads(
            events in proptest::collection::vec(event(), 1..4),
            single in any::<bool>(),
        ) {
            let body = if single { events[0].clone() } else { Value::Array(events) };
            let fast = check(&body);
            // And what parse_batch accepts without proofs, notices or TCF parameters is read
            // here too: this path is not merely refusing everything.
            if parse_batch(&body, &ctx()).is_ok() {
                prop_assert!(fast.is_some(), "left to the tree: {}", body);
            }
        }
    }
}
