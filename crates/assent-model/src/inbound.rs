//! Inbound changes: a destination's own change turned back into consent events (Actito's
//! webhook, `POST /v1/integrations/{id}/inbound`).
//!
//! The reverse of a connector's mappings: each subscription of the payload whose name is a
//! `mappings[].id` sets the status leaf named by that mapping's path key (`mappings[].value`,
//! see [`crate::integration::PathKeys`]). Pure: the handler authenticates, this module reads the
//! payload and makes the events' input, and the events go through the ordinary parser.

use crate::consents::{ChannelChoice, Consents, PurposeChoice};
use crate::error::{DomainError, FieldErrors};
use crate::integration::Integration;
use crate::time::Timestamp;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The status leaf a path key names, as far as an event can set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// `consents_channels_{channel}_enabled`.
    Channel(String),
    /// `consents_purposes_{purpose}_enabled`.
    Purpose(String),
    /// `consents_purposes_{purpose}_enabled_li`.
    PurposeLi(String),
    /// `consents_purposes_{purpose}_channels_{channel}_enabled`.
    PurposeChannel(String, String),
    /// `consents_vendors_{vendor}_enabled`.
    Vendor(String),
    /// `consents_vendors_{vendor}_enabled_li`.
    VendorLi(String),
}

impl Leaf {
    /// Reads a path key. Preference keys (`…_preferences_…`) are not read back (`None`): their
    /// value form (`…_preferences_{pref}_{value}_enabled`) cannot be told apart from the others.
    ///
    /// Ids may hold `_`: the known prefixes and suffixes are matched exactly, and in
    /// `consents_purposes_{purpose}_channels_{channel}_enabled` the first `_channels_` ends the
    /// purpose id.
    pub fn parse(key: &str) -> Option<Leaf> {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        if let Some(rest) = key.strip_prefix("consents_channels_") {
            return nonempty(rest.strip_suffix("_enabled")?).map(Leaf::Channel);
        }
        if let Some(rest) = key.strip_prefix("consents_vendors_") {
            if let Some(v) = rest.strip_suffix("_enabled_li") {
                return nonempty(v).map(Leaf::VendorLi);
            }
            return nonempty(rest.strip_suffix("_enabled")?).map(Leaf::Vendor);
        }
        let rest = key.strip_prefix("consents_purposes_")?;
        if rest.contains("_preferences_") {
            return None;
        }
        if let Some(p) = rest.strip_suffix("_enabled_li") {
            return nonempty(p).map(Leaf::PurposeLi);
        }
        let rest = rest.strip_suffix("_enabled")?;
        if let Some((p, c)) = rest.split_once("_channels_") {
            return Some(Leaf::PurposeChannel(nonempty(p)?, nonempty(c)?));
        }
        nonempty(rest).map(Leaf::Purpose)
    }
}

/// One profile change read from an Actito webhook payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ActitoChange {
    /// The value of the profile's `user_unique_key` attribute, if the payload carries it.
    pub unique_key: Option<String>,
    /// Subscriptions and whether the profile is subscribed, in payload order.
    pub subscriptions: Vec<(String, bool)>,
    /// When the change happened, if the payload says.
    pub timestamp: Option<Timestamp>,
}

/// Reads an Actito webhook body: `{"id", "data": {…} | [{…}, …], "_links"}` (one-by-one or
/// bulk push), or one profile object on its own. In a profile object the unique key is the
/// attribute named `unique_key_attribute`, either as a key of the object or in
/// `attributes: [{"name", "value"}]`; subscriptions are `subscriptions: [{"name",
/// "subscribe"}]`, `subscriptions: {"NAME": bool}` or keys `"subscriptions.NAME": bool`; the
/// time is `timestamp` (RFC 3339 or Unix milliseconds) of the object or of the envelope.
pub fn read_actito(
    body: &Value,
    unique_key_attribute: &str,
) -> Result<Vec<ActitoChange>, DomainError> {
    let Some(envelope) = body.as_object() else {
        return Err(DomainError::invalid_field("", "must be a JSON object"));
    };
    let mut errors = FieldErrors::new();
    let envelope_time = timestamp(envelope.get("timestamp"), "timestamp", &mut errors);
    let items: Vec<(String, &Map<String, Value>)> = match envelope.get("data") {
        None => vec![(String::new(), envelope)],
        Some(Value::Object(item)) => vec![("data".to_owned(), item)],
        Some(Value::Array(list)) => {
            let mut items = Vec::with_capacity(list.len());
            for (i, item) in list.iter().enumerate() {
                match item.as_object() {
                    Some(o) => items.push((format!("data[{i}]"), o)),
                    None => errors.add(format!("data[{i}]"), "must be an object"),
                }
            }
            items
        }
        Some(_) => {
            errors.add("data", "must be an object or an array of objects");
            Vec::new()
        }
    };
    let mut changes = Vec::with_capacity(items.len());
    for (path, item) in items {
        let at = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        let unique_key = attribute(item, unique_key_attribute);
        let mut subscriptions = Vec::new();
        match item.get("subscriptions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, s) in list.iter().enumerate() {
                    let name = s.get("name").and_then(Value::as_str);
                    let subscribe = s.get("subscribe").and_then(boolean);
                    match (name, subscribe) {
                        (Some(n), Some(b)) => subscriptions.push((n.to_owned(), b)),
                        _ => errors.add(
                            at(&format!("subscriptions[{i}]")),
                            "must be {\"name\": string, \"subscribe\": boolean}",
                        ),
                    }
                }
            }
            Some(Value::Object(map)) => {
                for (name, v) in map {
                    match boolean(v) {
                        Some(b) => subscriptions.push((name.clone(), b)),
                        None => {
                            errors.add(at(&format!("subscriptions.{name}")), "must be a boolean")
                        }
                    }
                }
            }
            Some(_) => errors.add(at("subscriptions"), "must be an array or an object"),
        }
        for (k, v) in item {
            if let Some(name) = k.strip_prefix("subscriptions.") {
                match boolean(v) {
                    Some(b) => subscriptions.push((name.to_owned(), b)),
                    None => errors.add(at(k), "must be a boolean"),
                }
            }
        }
        let timestamp =
            timestamp(item.get("timestamp"), &at("timestamp"), &mut errors).or(envelope_time);
        changes.push(ActitoChange {
            unique_key,
            subscriptions,
            timestamp,
        });
    }
    errors.into_result()?;
    Ok(changes)
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The attribute `name` of a profile object: a key of the object, or an entry of its
/// `attributes` list.
fn attribute(item: &Map<String, Value>, name: &str) -> Option<String> {
    if let Some(v) = item.get(name).and_then(scalar_text) {
        return Some(v);
    }
    item.get("attributes")?
        .as_array()?
        .iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|a| a.get("value"))
        .and_then(scalar_text)
}

fn timestamp(v: Option<&Value>, path: &str, errors: &mut FieldErrors) -> Option<Timestamp> {
    match v? {
        Value::Null => None,
        Value::String(s) => Timestamp::parse(s)
            .map_err(|_| errors.add(path, "must be an RFC 3339 date or Unix milliseconds"))
            .ok(),
        Value::Number(n) => match n.as_i64() {
            Some(ms) if ms >= 0 => Some(Timestamp::from_millis(ms)),
            _ => {
                errors.add(path, "must be an RFC 3339 date or Unix milliseconds");
                None
            }
        },
        _ => {
            errors.add(path, "must be an RFC 3339 date or Unix milliseconds");
            None
        }
    }
}

/// The consents that `subscriptions` set through `integration`'s mappings; `None` when no
/// subscription is mapped (to a leaf an event can set).
pub fn consents_of(
    integration: &Integration,
    subscriptions: &[(String, bool)],
) -> Option<Consents> {
    let mut purposes: BTreeMap<String, PurposeChoice> = BTreeMap::new();
    let mut consents = Consents::default();
    let mut any = false;
    for (name, subscribed) in subscriptions {
        let b = *subscribed;
        for mapping in integration.mappings.iter().filter(|m| &m.id == name) {
            let Some(leaf) = Leaf::parse(&mapping.value) else {
                continue;
            };
            any = true;
            match leaf {
                Leaf::Channel(c) => set_channel(&mut consents.channels, c, b),
                Leaf::Purpose(p) => purpose_mut(&mut purposes, &p).enabled = Some(b),
                Leaf::PurposeLi(p) => purpose_mut(&mut purposes, &p).enabled_li = Some(b),
                Leaf::PurposeChannel(p, c) => {
                    set_channel(&mut purpose_mut(&mut purposes, &p).channels, c, b);
                }
                Leaf::Vendor(v) => {
                    let vendors = &mut consents.vendors;
                    vendors.enabled.retain(|x| x != &v);
                    vendors.disabled.retain(|x| x != &v);
                    if b {
                        &mut vendors.enabled
                    } else {
                        &mut vendors.disabled
                    }
                    .push(v);
                }
                Leaf::VendorLi(v) => {
                    let vendors = &mut consents.vendors;
                    vendors.enabled_li.retain(|x| x != &v);
                    vendors.disabled_li.retain(|x| x != &v);
                    if b {
                        &mut vendors.enabled_li
                    } else {
                        &mut vendors.disabled_li
                    }
                    .push(v);
                }
            }
        }
    }
    consents.purposes = purposes.into_values().collect();
    any.then_some(consents)
}

fn purpose_mut<'a>(
    purposes: &'a mut BTreeMap<String, PurposeChoice>,
    id: &str,
) -> &'a mut PurposeChoice {
    purposes
        .entry(id.to_owned())
        .or_insert_with(|| PurposeChoice {
            id: id.to_owned(),
            ..PurposeChoice::default()
        })
}

fn set_channel(channels: &mut Vec<ChannelChoice>, id: String, enabled: bool) {
    match channels.iter_mut().find(|c| c.id == id) {
        Some(c) => c.enabled = Some(enabled),
        None => channels.push(ChannelChoice {
            id,
            enabled: Some(enabled),
            ..ChannelChoice::default()
        }),
    }
}

/// The events (as `POST /consents/events` input) that an Actito webhook body makes for
/// `integration`: one per profile change with at least one mapped subscription, for the user
/// whose `organization_user_id` is the profile's `user_unique_key` attribute, with `metadata
/// {"source": "actito", "integration_id": …}` and `created_at` the change's timestamp (the
/// parser's default, now, without one). Changes without a mapped subscription are left out;
/// one with a mapped subscription but no unique key is refused (400).
pub fn actito_events(integration: &Integration, body: &Value) -> Result<Vec<Value>, DomainError> {
    let key_attribute = integration.property("user_unique_key").unwrap_or_default();
    let changes = read_actito(body, key_attribute)?;
    let mut events = Vec::new();
    let mut errors = FieldErrors::new();
    for (i, change) in changes.iter().enumerate() {
        let Some(consents) = consents_of(integration, &change.subscriptions) else {
            continue;
        };
        let Some(user) = &change.unique_key else {
            let path = if body.get("data").is_some_and(Value::is_array) {
                format!("data[{i}]")
            } else if body.get("data").is_some() {
                "data".to_owned()
            } else {
                String::new()
            };
            errors.add(
                path,
                format!("has no '{key_attribute}' attribute (the integration's user_unique_key)"),
            );
            continue;
        };
        let mut event = json!({
            "user": {"organization_user_id": user},
            "consents": consents,
            "metadata": {"source": "actito", "integration_id": integration.id},
        });
        if let Some(t) = change.timestamp {
            event["created_at"] = Value::String(t.to_rfc3339());
        }
        events.push(event);
    }
    errors.into_result()?;
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrganizationId;

    fn actito(mappings: Value) -> Integration {
        Integration::parse_new(
            &json!({"type_id": "actito", "authentication": {"private_api_key": "k"},
                    "properties": {"entity_id": "e", "table_name": "t",
                                   "user_unique_key": "customerId"},
                    "mappings": mappings}),
            &OrganizationId::parse("acme").unwrap(),
            Timestamp::from_millis(0),
        )
        .unwrap()
    }

    #[test]
    fn path_keys_are_read_back_with_underscored_ids() {
        let cases = [
            (
                "consents_channels_email_enabled",
                Some(Leaf::Channel("email".into())),
            ),
            (
                "consents_channels_in_app_enabled",
                Some(Leaf::Channel("in_app".into())),
            ),
            (
                "consents_purposes_market_research_enabled",
                Some(Leaf::Purpose("market_research".into())),
            ),
            (
                "consents_purposes_ads_enabled_li",
                Some(Leaf::PurposeLi("ads".into())),
            ),
            (
                "consents_purposes_news_letter_channels_in_app_enabled",
                Some(Leaf::PurposeChannel("news_letter".into(), "in_app".into())),
            ),
            (
                "consents_vendors_iab:42_enabled",
                Some(Leaf::Vendor("iab:42".into())),
            ),
            (
                "consents_vendors_google_ads_enabled_li",
                Some(Leaf::VendorLi("google_ads".into())),
            ),
            ("consents_purposes_news_preferences_weekly_enabled", None),
            ("consents_channels__enabled", None),
            ("consents_purposes_enabled", None),
            ("something_else", None),
        ];
        for (key, leaf) in cases {
            assert_eq!(Leaf::parse(key), leaf, "{key}");
        }
    }

    #[test]
    fn a_one_by_one_push_makes_one_event() {
        let i = actito(json!([
            {"id": "NEWSLETTER", "value": "consents_channels_email_enabled"},
            {"id": "PROMO", "value": "consents_purposes_marketing_enabled"},
            {"id": "PROMO_SMS", "value": "consents_purposes_marketing_channels_sms_enabled"},
            {"id": "PARTNER", "value": "consents_vendors_google_enabled"}
        ]));
        let body = json!({
            "id": "95f1cebc-4dd7-4246-83a1-164d8da8c583",
            "data": {
                "customerId": "alice@example.com",
                "timestamp": "2026-01-02T03:04:05Z",
                "subscriptions": [
                    {"name": "NEWSLETTER", "subscribe": true},
                    {"name": "PROMO", "subscribe": false},
                    {"name": "PROMO_SMS", "subscribe": true},
                    {"name": "PARTNER", "subscribe": false},
                    {"name": "UNMAPPED", "subscribe": true}
                ]
            },
            "_links": {"webhook": {"href": "/webhooks/v4/entity/e/webhookSubscription/1"}}
        });
        let events = actito_events(&i, &body).unwrap();
        assert_eq!(
            events,
            vec![json!({
                "user": {"organization_user_id": "alice@example.com"},
                "consents": {
                    "purposes": [{"id": "marketing", "enabled": false,
                                  "channels": [{"id": "sms", "enabled": true}]}],
                    "channels": [{"id": "email", "enabled": true}],
                    "vendors": {"disabled": ["google"]}
                },
                "metadata": {"source": "actito", "integration_id": i.id},
                "created_at": "2026-01-02T03:04:05.000Z"
            })]
        );
    }

    #[test]
    fn bulk_pushes_attribute_lists_and_flat_subscriptions_are_read() {
        let i = actito(json!([{"id": "NEWS", "value": "consents_channels_email_enabled"}]));
        let body = json!({"data": [
            {"attributes": [{"name": "customerId", "value": "a"}],
             "subscriptions": {"NEWS": "false"}},
            {"customerId": 42, "subscriptions.NEWS": true, "timestamp": 1000},
            {"customerId": "c", "subscriptions": [{"name": "OTHER", "subscribe": true}]}
        ]});
        let events = actito_events(&i, &body).unwrap();
        assert_eq!(events.len(), 2, "the third maps nothing");
        assert_eq!(events[0]["user"]["organization_user_id"], "a");
        assert_eq!(events[0]["consents"]["channels"][0]["enabled"], false);
        assert!(events[0].get("created_at").is_none());
        assert_eq!(events[1]["user"]["organization_user_id"], "42");
        assert_eq!(events[1]["created_at"], "1970-01-01T00:00:01.000Z");
    }

    #[test]
    fn nothing_mapped_makes_no_event_and_bad_payloads_name_the_field() {
        let i = actito(json!([{"id": "NEWS", "value": "consents_channels_email_enabled"}]));
        let none = json!({"customerId": "a", "subscriptions": [{"name": "X", "subscribe": true}]});
        assert!(actito_events(&i, &none).unwrap().is_empty());
        let attributes_only = json!({"data": {"customerId": "a", "firstName": "Alice"}});
        assert!(actito_events(&i, &attributes_only).unwrap().is_empty());
        for (body, field) in [
            (json!([1]), ""),
            (json!({"data": 3}), "data"),
            (
                json!({"data": {"customerId": "a", "subscriptions": [{"name": "NEWS"}]}}),
                "data.subscriptions[0]",
            ),
            (
                json!({"data": {"subscriptions": [{"name": "NEWS", "subscribe": true}]}}),
                "data",
            ),
            (
                json!({"customerId": "a", "timestamp": "yesterday",
                    "subscriptions": {"NEWS": true}}),
                "timestamp",
            ),
        ] {
            let err = format!("{:?}", actito_events(&i, &body).unwrap_err());
            assert!(err.contains(&format!("\"{field}\"")), "{body}: {err}");
        }
    }
}
