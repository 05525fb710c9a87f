//! The purpose registry (Assent): the purposes an organization asks consent for, with their
//! labels and descriptions per language, their preferences and values, and their channels.
//!
//! Every change to a purpose makes a new version and keeps the earlier ones, so that an event
//! can say which text the user saw ([`crate::registry`] stamps the version in force).

use crate::error::{DomainError, FieldErrors};
use crate::ids::check_identifier;
use crate::json::{Fields, Path, check_bounds, type_name};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most purposes an organization may register.
pub const MAX_PURPOSES_PER_ORGANIZATION: usize = 500;
/// Most characters of one label.
pub const MAX_LABEL_CHARS: usize = 200;
/// Most characters of one description.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most preferences of one purpose.
pub const MAX_PREFERENCES: usize = 50;
/// Most values of one preference.
pub const MAX_VALUES: usize = 100;
/// Most channels of one purpose.
pub const MAX_CHANNELS: usize = 20;

/// Texts per language: a BCP 47 tag (`en`, `fr`, `pt-BR`) to the text in that language.
pub type Texts = BTreeMap<String, String>;

/// Checks a language tag: a primary language of 2 or 3 lower-case letters, then any number of
/// subtags of 2 to 8 letters or digits (`en`, `pt-BR`, `zh-Hant-TW`).
pub fn check_language(tag: &str) -> Result<(), String> {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or_default();
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_lowercase());
    let rest_ok =
        parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if primary_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a language tag such as en, fr or pt-BR",
            crate::ids::truncate(tag, 40)
        ))
    }
}

/// One value a preference offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreferenceValueDefinition {
    /// The value's id, as events send it in `values.<preference>.value`.
    pub id: String,
    /// Its label per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub labels: Texts,
}

/// A preference of a purpose: a question with a set of values (topics, frequency, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreferenceDefinition {
    /// The preference's id, as events send it in `values` or v1 `preferences`.
    pub id: String,
    /// Its label per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub labels: Texts,
    /// Its description per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub descriptions: Texts,
    /// Whether a user may pick several values (true) or one only (false).
    pub multiple: bool,
    /// The values offered.
    pub values: Vec<PreferenceValueDefinition>,
}

/// A channel a purpose may use (email, sms, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelDefinition {
    /// The channel's id, as events send it in a purpose's `channels`.
    pub id: String,
    /// Its label per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub labels: Texts,
}

/// What one version of a purpose says: everything but its id and its dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeContent {
    /// The purpose's label per language (at least one).
    pub labels: Texts,
    /// Its description per language.
    #[serde(default)]
    pub descriptions: Texts,
    /// Its preferences.
    #[serde(default)]
    pub preferences: Vec<PreferenceDefinition>,
    /// Its channels.
    #[serde(default)]
    pub channels: Vec<ChannelDefinition>,
}

/// One version of a registered purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// The purpose's id, as events name it in `consents.purposes[].id`.
    pub id: String,
    /// The version, from 1; each change adds one.
    pub version: u32,
    /// What this version says.
    pub content: PurposeContent,
    /// When the purpose was registered (version 1).
    pub created_at: Timestamp,
    /// When this version was made.
    pub updated_at: Timestamp,
}

/// A purpose as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurposeView {
    /// The purpose's id.
    pub id: String,
    /// The organization that registered it.
    pub organization_id: String,
    /// The version shown, from 1.
    pub version: u32,
    /// Label per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub labels: Texts,
    /// Description per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub descriptions: Texts,
    /// Preferences, with their values.
    pub preferences: Vec<PreferenceDefinition>,
    /// Channels.
    pub channels: Vec<ChannelDefinition>,
    /// When the purpose was registered.
    pub created_at: String,
    /// When this version was made.
    pub updated_at: String,
}

impl Purpose {
    /// The purpose as the API shows it.
    pub fn view(&self, organization_id: &str) -> PurposeView {
        PurposeView {
            id: self.id.clone(),
            organization_id: organization_id.to_owned(),
            version: self.version,
            labels: self.content.labels.clone(),
            descriptions: self.content.descriptions.clone(),
            preferences: self.content.preferences.clone(),
            channels: self.content.channels.clone(),
            created_at: self.created_at.to_rfc3339(),
            updated_at: self.updated_at.to_rfc3339(),
        }
    }
}

/// A `POST /v1/purposes` body, read: the new purpose's id and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPurpose {
    /// The id.
    pub id: String,
    /// Version 1's content.
    pub content: PurposeContent,
}

/// A `PATCH /v1/purposes/{id}` body, read: the fields it replaces, and the version it was
/// made against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurposePatch {
    /// New labels.
    pub labels: Option<Texts>,
    /// New descriptions.
    pub descriptions: Option<Texts>,
    /// New preferences.
    pub preferences: Option<Vec<PreferenceDefinition>>,
    /// New channels.
    pub channels: Option<Vec<ChannelDefinition>>,
    /// The version the client changed: it must still be the current one.
    pub version: Option<u32>,
}

impl PurposePatch {
    /// The content of the next version: `current` with the fields of the patch replaced.
    pub fn apply(&self, current: &PurposeContent) -> PurposeContent {
        PurposeContent {
            labels: self
                .labels
                .clone()
                .unwrap_or_else(|| current.labels.clone()),
            descriptions: self
                .descriptions
                .clone()
                .unwrap_or_else(|| current.descriptions.clone()),
            preferences: self
                .preferences
                .clone()
                .unwrap_or_else(|| current.preferences.clone()),
            channels: self
                .channels
                .clone()
                .unwrap_or_else(|| current.channels.clone()),
        }
    }
}

const CREATE_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "labels",
    "descriptions",
    "preferences",
    "channels",
];
const PATCH_FIELDS: &[&str] = &[
    "labels",
    "descriptions",
    "preferences",
    "channels",
    "version",
];
const PREFERENCE_FIELDS: &[&str] = &["id", "labels", "descriptions", "multiple", "values"];
const LABELLED_FIELDS: &[&str] = &["id", "labels"];

impl NewPurpose {
    /// Reads a `POST /v1/purposes` body of organization `organization_id`.
    pub fn parse(body: &Value, organization_id: &str) -> Result<NewPurpose, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(body, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(body, Path::Root, CREATE_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        if let Some(o) = f.string("organization_id", &mut errors)
            && o != organization_id
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        let id = required_id(&f, &mut errors);
        let labels = required_texts(&f, "labels", MAX_LABEL_CHARS, &mut errors);
        let content = PurposeContent {
            labels: labels.unwrap_or_default(),
            descriptions: optional_texts(&f, "descriptions", MAX_DESCRIPTION_CHARS, &mut errors)
                .unwrap_or_default(),
            preferences: preferences(&f, &mut errors).unwrap_or_default(),
            channels: labelled_list(&f, "channels", MAX_CHANNELS, "channel", &mut errors)
                .unwrap_or_default(),
        };
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(NewPurpose {
            id: id.unwrap_or_default().to_owned(),
            content,
        })
    }
}

impl PurposePatch {
    /// Reads a `PATCH /v1/purposes/{id}` body.
    pub fn parse(body: &Value) -> Result<PurposePatch, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(body, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(body, Path::Root, PATCH_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let patch = PurposePatch {
            labels: match f.get("labels") {
                None => None,
                Some(_) => required_texts(&f, "labels", MAX_LABEL_CHARS, &mut errors),
            },
            descriptions: f.get("descriptions").map(|_| {
                optional_texts(&f, "descriptions", MAX_DESCRIPTION_CHARS, &mut errors)
                    .unwrap_or_default()
            }),
            preferences: f
                .get("preferences")
                .map(|_| preferences(&f, &mut errors).unwrap_or_default()),
            channels: f.get("channels").map(|_| {
                labelled_list(&f, "channels", MAX_CHANNELS, "channel", &mut errors)
                    .unwrap_or_default()
            }),
            version: match f.get("version") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if n >= 1 => Some(n),
                    _ => {
                        errors.add("version", "must be a whole number from 1");
                        None
                    }
                },
            },
        };
        if ["labels", "descriptions", "preferences", "channels"]
            .iter()
            .all(|k| f.get(k).is_none())
            && errors.is_empty()
        {
            errors.add(
                "body",
                "changes nothing; send at least one of labels, descriptions, preferences, channels",
            );
        }
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(patch)
    }
}

/// Checks a purpose id given in a path (`/v1/purposes/{id}`).
pub fn check_purpose_id(id: &str) -> Result<(), DomainError> {
    check_identifier(id).map_err(|m| DomainError::invalid_field("id", m))
}

fn required_id<'a>(f: &Fields<'a, '_>, errors: &mut FieldErrors) -> Option<&'a str> {
    match f.get("id") {
        None | Some(Value::Null) => {
            errors.add(f.child("id"), "is required");
            None
        }
        Some(_) => f.identifier("id", errors),
    }
}

/// A texts map that must hold at least one language.
fn required_texts(
    f: &Fields<'_, '_>,
    key: &str,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<Texts> {
    match f.get(key) {
        None | Some(Value::Null) => {
            errors.add(
                f.child(key),
                "is required: an object of language tag to text, with at least one language",
            );
            None
        }
        Some(v) => {
            let texts = texts(v, f.child(key), max_chars, errors)?;
            if texts.is_empty() {
                errors.add(f.child(key), "must hold at least one language");
                return None;
            }
            Some(texts)
        }
    }
}

/// A texts map that may be absent, `null` or empty.
fn optional_texts(
    f: &Fields<'_, '_>,
    key: &str,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<Texts> {
    match f.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => texts(v, f.child(key), max_chars, errors),
    }
}

fn texts(
    value: &Value,
    path: Path<'_>,
    max_chars: usize,
    errors: &mut FieldErrors,
) -> Option<Texts> {
    let Value::Object(map) = value else {
        errors.add(
            path,
            format!(
                "must be an object of language tag to text, not {}",
                type_name(value)
            ),
        );
        return None;
    };
    let before = errors.len();
    let mut out = Texts::new();
    for (language, text) in map {
        let at = path.key(language);
        if let Err(message) = check_language(language) {
            errors.add(at, message);
            continue;
        }
        match text {
            Value::String(s) if s.trim().is_empty() => errors.add(at, "must not be empty"),
            Value::String(s) if s.chars().count() > max_chars => errors.add(
                at,
                format!(
                    "is {} characters long; the limit is {max_chars}",
                    s.chars().count()
                ),
            ),
            Value::String(s) => {
                out.insert(language.clone(), s.clone());
            }
            other => errors.add(at, format!("must be a string, not {}", type_name(other))),
        }
    }
    (errors.len() == before).then_some(out)
}

/// The items of list `key`, at most `max`, each an object; reports the list when too long.
fn items<'a>(
    f: &Fields<'a, '_>,
    key: &str,
    max: usize,
    what: &str,
    errors: &mut FieldErrors,
) -> Option<&'a Vec<Value>> {
    let list = f.array(key, errors)?;
    if list.len() > max {
        errors.add(
            f.child(key),
            format!("has {} {what}s; the limit is {max}", list.len()),
        );
        return None;
    }
    Some(list)
}

/// Records a duplicate id at `path.id`; returns whether `id` is new.
fn unique(
    seen: &mut Vec<String>,
    id: &str,
    path: Path<'_>,
    what: &str,
    errors: &mut FieldErrors,
) -> bool {
    if seen.iter().any(|s| s == id) {
        errors.add(path.key("id"), format!("{what} '{id}' is listed twice"));
        false
    } else {
        seen.push(id.to_owned());
        true
    }
}

/// A list of `{id, labels}` objects (channels, values) without duplicate ids.
fn labelled_list(
    f: &Fields<'_, '_>,
    key: &str,
    max: usize,
    what: &str,
    errors: &mut FieldErrors,
) -> Option<Vec<LabelledItem>> {
    let list = items(f, key, max, what, errors)?;
    let path = f.child(key);
    Some(labelled_items(list, path, what, errors))
}

/// An `{id, labels}` item, read.
type LabelledItem = ChannelDefinition;

fn labelled_items(
    list: &[Value],
    path: Path<'_>,
    what: &str,
    errors: &mut FieldErrors,
) -> Vec<LabelledItem> {
    let mut out = Vec::with_capacity(list.len());
    let mut seen = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = path.index(i);
        let Some(g) = Fields::of(item, at, LABELLED_FIELDS, errors) else {
            continue;
        };
        let id = required_id(&g, errors);
        let labels = required_texts(&g, "labels", MAX_LABEL_CHARS, errors);
        g.finish(errors);
        if let (Some(id), Some(labels)) = (id, labels)
            && unique(&mut seen, id, at, what, errors)
        {
            out.push(ChannelDefinition {
                id: id.to_owned(),
                labels,
            });
        }
    }
    out
}

fn preferences(f: &Fields<'_, '_>, errors: &mut FieldErrors) -> Option<Vec<PreferenceDefinition>> {
    let list = items(f, "preferences", MAX_PREFERENCES, "preference", errors)?;
    let path = f.child("preferences");
    let mut out = Vec::with_capacity(list.len());
    let mut seen = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = path.index(i);
        let Some(g) = Fields::of(item, at, PREFERENCE_FIELDS, errors) else {
            continue;
        };
        let id = required_id(&g, errors);
        let labels = required_texts(&g, "labels", MAX_LABEL_CHARS, errors);
        let descriptions =
            optional_texts(&g, "descriptions", MAX_DESCRIPTION_CHARS, errors).unwrap_or_default();
        let multiple = match g.get("multiple") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                errors.add(
                    g.child("multiple"),
                    format!("must be true or false, not {}", type_name(other)),
                );
                true
            }
        };
        let values = items(&g, "values", MAX_VALUES, "value", errors)
            .map(|list| {
                labelled_items(list, g.child("values"), "value", errors)
                    .into_iter()
                    .map(|v| PreferenceValueDefinition {
                        id: v.id,
                        labels: v.labels,
                    })
                    .collect()
            })
            .unwrap_or_default();
        g.finish(errors);
        if let (Some(id), Some(labels)) = (id, labels)
            && unique(&mut seen, id, at, "preference", errors)
        {
            out.push(PreferenceDefinition {
                id: id.to_owned(),
                labels,
                descriptions,
                multiple,
                values,
            });
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(r: Result<impl std::fmt::Debug, DomainError>) -> Vec<String> {
        match r.unwrap_err() {
            DomainError::Invalid { errors, .. } => errors.as_map().keys().cloned().collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    fn newsletter() -> Value {
        json!({
            "id": "newsletter",
            "labels": {"en": "Newsletter", "fr": "Lettre", "pt-BR": "Boletim"},
            "descriptions": {"en": "News from us"},
            "preferences": [{"id": "topics", "labels": {"en": "Topics"}, "values": [
                {"id": "tech", "labels": {"en": "Technology"}},
                {"id": "sport", "labels": {"en": "Sport"}}]},
                {"id": "frequency", "labels": {"en": "How often"}, "multiple": false,
                 "values": [{"id": "daily", "labels": {"en": "Daily"}}]}],
            "channels": [{"id": "email", "labels": {"en": "Email"}}]
        })
    }

    #[test]
    fn a_full_purpose_is_read_with_defaults() {
        let p = NewPurpose::parse(&newsletter(), "acme").unwrap();
        assert_eq!(p.id, "newsletter");
        assert_eq!(p.content.labels["pt-BR"], "Boletim");
        assert!(
            p.content.preferences[0].multiple,
            "multiple defaults to true"
        );
        assert!(!p.content.preferences[1].multiple);
        assert_eq!(p.content.preferences[0].values[1].id, "sport");
        assert_eq!(p.content.channels[0].id, "email");
        let minimal =
            NewPurpose::parse(&json!({"id": "x", "labels": {"en": "X"}}), "acme").unwrap();
        assert!(minimal.content.descriptions.is_empty() && minimal.content.preferences.is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_its_path() {
        let body = json!({
            "id": "",
            "labels": {"EN": "x", "fr": ""},
            "descriptions": {"en": "d".repeat(2001)},
            "preferences": [
                {"id": "p", "labels": {"en": "P"}, "multiple": "no",
                 "values": [{"id": "v", "labels": {"en": "V"}}, {"id": "v", "labels": {"en": "W"}}]},
                {"id": "p", "labels": {"en": "Q"}},
                {"id": "q", "labels": {}, "colour": 1}],
            "channels": [{"id": "email"}],
            "extra": true
        });
        assert_eq!(
            errors_of(NewPurpose::parse(&body, "acme")),
            [
                "channels[0].labels",
                "descriptions.en",
                "extra",
                "id",
                "labels.EN",
                "labels.fr",
                "preferences[0].multiple",
                "preferences[0].values[1].id",
                "preferences[1].id",
                "preferences[2].colour",
                "preferences[2].labels",
            ]
        );
    }

    #[test]
    fn lists_are_bounded() {
        let many = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"id": format!("c{i}"), "labels": {"en": "C"}}))
                .collect()
        };
        let body = json!({"id": "x", "labels": {"en": "X"}, "channels": many(21),
            "preferences": [{"id": "p", "labels": {"en": "P"}, "values": many(101)}]});
        assert_eq!(
            errors_of(NewPurpose::parse(&body, "acme")),
            ["channels", "preferences[0].values"]
        );
        let prefs: Vec<Value> = (0..51)
            .map(|i| json!({"id": format!("p{i}"), "labels": {"en": "P"}}))
            .collect();
        let body = json!({"id": "x", "labels": {"en": "X"}, "preferences": prefs});
        assert_eq!(errors_of(NewPurpose::parse(&body, "acme")), ["preferences"]);
        let long = json!({"id": "x", "labels": {"en": "L".repeat(201)}});
        assert_eq!(errors_of(NewPurpose::parse(&long, "acme")), ["labels.en"]);
    }

    #[test]
    fn language_tags_follow_bcp47_shape() {
        for ok in ["en", "fr", "pt-BR", "zh-Hant-TW", "gsw", "es-419"] {
            assert!(check_language(ok).is_ok(), "{ok}");
        }
        for bad in [
            "E",
            "EN",
            "english",
            "en_US",
            "en-",
            "en-x",
            "",
            "fr-toolongsubtag",
        ] {
            assert!(check_language(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_patch_replaces_whole_fields_and_keeps_the_rest() {
        let current = NewPurpose::parse(&newsletter(), "acme").unwrap().content;
        let patch = PurposePatch::parse(&json!({"channels": [], "version": 3})).unwrap();
        assert_eq!(patch.version, Some(3));
        let next = patch.apply(&current);
        assert!(next.channels.is_empty());
        assert_eq!(next.preferences, current.preferences);
        assert_eq!(next.labels, current.labels);
        assert_eq!(
            errors_of(PurposePatch::parse(&json!({"version": 1}))),
            ["body"]
        );
        assert_eq!(
            errors_of(PurposePatch::parse(
                &json!({"labels": null, "version": 0, "id": "y"})
            )),
            ["id", "labels", "version"]
        );
        assert_eq!(
            errors_of(PurposePatch::parse(&json!({"labels": {}}))),
            ["labels"]
        );
    }

    #[test]
    fn the_organization_named_in_the_body_must_be_the_querys() {
        let body = json!({"id": "x", "labels": {"en": "X"}, "organization_id": "other"});
        assert_eq!(
            errors_of(NewPurpose::parse(&body, "acme")),
            ["organization_id"]
        );
    }
}
