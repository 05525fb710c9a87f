//! The consent choices an event carries: purposes (with their preferences, values and
//! channels), top-level channels, vendors and a TCF string.

use crate::error::FieldErrors;
use crate::ids::check_identifier;
use crate::json::{Fields, Path, type_name};
use crate::tcf::check_tc_string;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Free-form metadata: a JSON object, at most 16 KiB.
pub type Metadata = Map<String, Value>;

/// The choices of one event. Every part is optional; an event sets only what it mentions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Consents {
    /// Choices per purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<PurposeChoice>,
    /// Choices per channel, outside any purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelChoice>,
    /// Choices per vendor.
    #[serde(default, skip_serializing_if = "Vendors::is_empty")]
    pub vendors: Vendors,
    /// An IAB TCF v2 consent string, checked by decoding it; the latest one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcfcs: Option<String>,
}

impl Consents {
    /// True when the event carries no choice at all.
    pub fn is_empty(&self) -> bool {
        self.purposes.is_empty()
            && self.channels.is_empty()
            && self.vendors.is_empty()
            && self.tcfcs.is_none()
    }
}

/// The choice for one purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurposeChoice {
    /// The purpose id, e.g. `newsletter`.
    pub id: String,
    /// Consent to the purpose; absent or `null` leaves the earlier choice in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Legitimate interest: `false` means the user objected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_li: Option<bool>,
    /// Free-form metadata on the purpose, merged by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Selected values per preference id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, PreferenceValue>,
    /// Preferences of the purpose (the v1 form, still accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PreferenceChoice>,
    /// Channels of the purpose (deprecated by Didomi, still accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelChoice>,
}

/// The values selected for one preference, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreferenceValue {
    /// The selected values, e.g. `tech,sport`.
    pub value: String,
}

/// A v1 preference of a purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreferenceChoice {
    /// The preference id.
    pub id: String,
    /// The choice; `null` leaves the earlier choice in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Free-form metadata, merged by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
    /// Channels of the preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelChoice>,
}

/// The choice for one channel (email, sms, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelChoice {
    /// The channel id.
    pub id: String,
    /// The choice; `null` leaves the earlier choice in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Free-form metadata, merged by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Metadata>,
}

/// Vendor choices: an id in `enabled` leaves `disabled` and vice versa (same for `_li`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vendors {
    /// Vendors given consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled: Vec<String>,
    /// Vendors refused consent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<String>,
    /// Vendors not objected to on legitimate interest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enabled_li: Vec<String>,
    /// Vendors objected to on legitimate interest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_li: Vec<String>,
}

impl Vendors {
    /// True when no vendor is mentioned.
    pub fn is_empty(&self) -> bool {
        self.enabled.is_empty()
            && self.disabled.is_empty()
            && self.enabled_li.is_empty()
            && self.disabled_li.is_empty()
    }
}

/// Parses the `consents` object of an event.
pub fn parse_consents(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Consents {
    let mut out = Consents::default();
    let Some(f) = Fields::of(
        value,
        path,
        &["purposes", "channels", "vendors", "tcfcs"],
        errors,
    ) else {
        return out;
    };
    if let Some(items) = f.array("purposes", errors) {
        let list_path = f.child("purposes");
        for (i, item) in items.iter().enumerate() {
            if let Some(p) = parse_purpose(item, list_path.index(i), errors) {
                if out.purposes.iter().any(|q| q.id == p.id) {
                    errors.add(
                        list_path.index(i).key("id"),
                        format!("purpose '{}' appears twice in this event", p.id),
                    );
                } else {
                    out.purposes.push(p);
                }
            }
        }
    }
    if let Some(items) = f.array("channels", errors) {
        out.channels = parse_channels(items, f.child("channels"), errors);
    }
    if let Some(v) = f.get("vendors").filter(|v| !v.is_null()) {
        out.vendors = parse_vendors(v, f.child("vendors"), errors);
    }
    if let Some(s) = f.string("tcfcs", errors) {
        if s.is_empty() {
            errors.add(f.child("tcfcs"), "must not be empty");
        } else if let Err(message) = check_tc_string(s) {
            errors.add(f.child("tcfcs"), message);
        } else {
            out.tcfcs = Some(s.to_owned());
        }
    }
    f.finish(errors);
    out
}

fn parse_purpose(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Option<PurposeChoice> {
    let f = Fields::of(
        value,
        path,
        &[
            "id",
            "enabled",
            "enabled_li",
            "metadata",
            "values",
            "preferences",
            "channels",
        ],
        errors,
    )?;
    let id = required_id(&f, errors);
    let mut p = PurposeChoice {
        id: id.unwrap_or_default().to_owned(),
        enabled: f.choice("enabled", errors),
        enabled_li: f.choice("enabled_li", errors),
        metadata: f.metadata("metadata", errors),
        ..PurposeChoice::default()
    };
    if let Some(v) = f.get("values").filter(|v| !v.is_null()) {
        p.values = parse_values(v, f.child("values"), errors);
    }
    if let Some(items) = f.array("preferences", errors) {
        let list_path = f.child("preferences");
        for (i, item) in items.iter().enumerate() {
            let item_path = list_path.index(i);
            let Some(pf) = Fields::of(
                item,
                item_path,
                &["id", "enabled", "metadata", "channels"],
                errors,
            ) else {
                continue;
            };
            let pref_id = required_id(&pf, errors);
            let pref = PreferenceChoice {
                id: pref_id.unwrap_or_default().to_owned(),
                enabled: pf.choice("enabled", errors),
                metadata: pf.metadata("metadata", errors),
                channels: pf
                    .array("channels", errors)
                    .map(|items| parse_channels(items, pf.child("channels"), errors))
                    .unwrap_or_default(),
            };
            pf.finish(errors);
            if pref_id.is_none() {
                continue;
            }
            if p.preferences.iter().any(|q| q.id == pref.id) {
                errors.add(
                    item_path.key("id"),
                    format!("preference '{}' appears twice in this purpose", pref.id),
                );
            } else {
                p.preferences.push(pref);
            }
        }
    }
    if let Some(items) = f.array("channels", errors) {
        p.channels = parse_channels(items, f.child("channels"), errors);
    }
    f.finish(errors);
    id.map(|_| p)
}

fn parse_values(
    value: &Value,
    path: Path<'_>,
    errors: &mut FieldErrors,
) -> BTreeMap<String, PreferenceValue> {
    let mut out = BTreeMap::new();
    let Value::Object(map) = value else {
        errors.add(path, format!("must be an object, not {}", type_name(value)));
        return out;
    };
    for (pref_id, entry) in map {
        let entry_path = path.key(pref_id);
        if let Err(message) = check_identifier(pref_id) {
            errors.add(entry_path, format!("preference id {message}"));
            continue;
        }
        let Some(f) = Fields::of(entry, entry_path, &["value"], errors) else {
            continue;
        };
        match f.get("value") {
            Some(Value::String(s)) => {
                out.insert(pref_id.clone(), PreferenceValue { value: s.clone() });
            }
            Some(other) => errors.add(
                f.child("value"),
                format!("must be a string, not {}", type_name(other)),
            ),
            None => errors.add(f.child("value"), "is required"),
        }
        f.finish(errors);
    }
    out
}

fn parse_channels(items: &[Value], path: Path<'_>, errors: &mut FieldErrors) -> Vec<ChannelChoice> {
    let mut out: Vec<ChannelChoice> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let Some(f) = Fields::of(item, item_path, &["id", "enabled", "metadata"], errors) else {
            continue;
        };
        let id = required_id(&f, errors);
        let channel = ChannelChoice {
            id: id.unwrap_or_default().to_owned(),
            enabled: f.choice("enabled", errors),
            metadata: f.metadata("metadata", errors),
        };
        f.finish(errors);
        if id.is_none() {
            continue;
        }
        if out.iter().any(|c| c.id == channel.id) {
            errors.add(
                item_path.key("id"),
                format!("channel '{}' appears twice in this list", channel.id),
            );
        } else {
            out.push(channel);
        }
    }
    out
}

fn parse_vendors(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Vendors {
    let Some(f) = Fields::of(
        value,
        path,
        &["enabled", "disabled", "enabled_li", "disabled_li"],
        errors,
    ) else {
        return Vendors::default();
    };
    let vendors = Vendors {
        enabled: f.identifier_list("enabled", errors),
        disabled: f.identifier_list("disabled", errors),
        enabled_li: f.identifier_list("enabled_li", errors),
        disabled_li: f.identifier_list("disabled_li", errors),
    };
    for (on, off, off_key) in [
        (&vendors.enabled, &vendors.disabled, "disabled"),
        (&vendors.enabled_li, &vendors.disabled_li, "disabled_li"),
    ] {
        for (i, id) in off.iter().enumerate() {
            if on.contains(id) {
                errors.add(
                    f.child(off_key).index(i),
                    format!("vendor '{id}' cannot be both enabled and disabled in one event"),
                );
            }
        }
    }
    f.finish(errors);
    vendors
}

/// Reads the required `id` field of a list element.
fn required_id<'a>(f: &Fields<'a, '_>, errors: &mut FieldErrors) -> Option<&'a str> {
    match f.get("id") {
        None | Some(Value::Null) => {
            errors.add(f.child("id"), "is required");
            None
        }
        Some(_) => f.identifier("id", errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> (Consents, FieldErrors) {
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        let c = parse_consents(&v, root.key("consents"), &mut errors);
        (c, errors)
    }

    #[test]
    fn parses_the_full_shape() {
        let (c, errors) = parse(json!({
            "purposes": [{"id": "newsletter", "enabled": true, "enabled_li": null,
                "values": {"topics": {"value": "tech,sport"}},
                "preferences": [{"id": "weekly", "enabled": true,
                    "channels": [{"id": "email", "enabled": true}]}]}],
            "channels": [{"id": "sms", "enabled": false}],
            "vendors": {"enabled": ["google"], "disabled_li": ["iab:1"]},
            "tcfcs": "CQSbk4AQSbk4AEsAAAENAAFgAMAAAAAAAAAAF5wAQF5gAAAA.IF5wAQF5gAAA.YAAAAAAAAAAA"
        }));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.purposes[0].values["topics"].value, "tech,sport");
        assert_eq!(c.purposes[0].preferences[0].channels[0].id, "email");
        assert_eq!(c.vendors.disabled_li, vec!["iab:1"]);
    }

    #[test]
    fn an_invalid_tcf_string_is_reported_with_the_reason() {
        let (c, errors) = parse(json!({"tcfcs": "CQ"}));
        assert_eq!(c.tcfcs, None);
        let message = &errors.as_map()["consents.tcfcs"];
        assert!(
            message.starts_with("is not a valid TCF v2 consent string: core segment: truncated"),
            "{message}"
        );
    }

    #[test]
    fn wrong_types_are_reported_at_their_path() {
        let (_, errors) = parse(json!({"purposes": [{"id": "a", "enabled": "yes"}]}));
        assert_eq!(
            errors
                .as_map()
                .get("consents.purposes[0].enabled")
                .map(String::as_str),
            Some("must be a boolean or null, not a string")
        );
    }

    #[test]
    fn a_vendor_cannot_be_both_enabled_and_disabled() {
        let (_, errors) = parse(json!({"vendors": {"enabled": ["v"], "disabled": ["v"]}}));
        assert!(errors.as_map().contains_key("consents.vendors.disabled[0]"));
    }

    #[test]
    fn duplicate_purposes_are_rejected() {
        let (_, errors) = parse(json!({"purposes": [{"id": "a"}, {"id": "a"}]}));
        assert!(errors.as_map().contains_key("consents.purposes[1].id"));
    }

    #[test]
    fn purpose_without_id_is_rejected() {
        let (_, errors) = parse(json!({"purposes": [{"enabled": true}]}));
        assert!(errors.as_map().contains_key("consents.purposes[0].id"));
    }
}
