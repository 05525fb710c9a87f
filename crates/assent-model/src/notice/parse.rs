//! Reading one notice-shape event into a consent event of the Consents API shape.

use super::choices::consents_of;
use super::{
    ACTIONS_METADATA_KEY, LegalBasis, NoticeAction, NoticeItem, NoticeRecord, NoticeRegulation,
    NoticeSource, SourceType, UserType, Vocabulary,
};
use crate::consents::Metadata;
use crate::error::FieldErrors;
use crate::event::{
    EventBody, EventInput, EventStatus, ParseContext, UserRef, check_organization, read_created_at,
    read_id,
};
use crate::ids::{Regulation, parse_country, truncate};
use crate::json::{Fields, Path};
use crate::time::Timestamp;
use assent_tcf::TcModel;
use serde_json::Value;

/// The fields of a notice-shape event.
const NOTICE_FIELDS: &[&str] = &[
    "id",
    "organization_id",
    "notice_id",
    "user",
    "regulation",
    "consent_string",
    "events",
    "source",
    "created_at",
    "updated_at",
];

/// The fields of its `user`.
const USER_FIELDS: &[&str] = &["id", "type", "country", "region"];

/// The fields of its `source`.
const SOURCE_FIELDS: &[&str] = &["type", "sdk_version", "url"];

/// The fields of one entry of its `events`.
const ITEM_FIELDS: &[&str] = &["action", "purpose", "vendor", "value", "legal_basis"];

/// Most characters of `source.url`.
pub const MAX_URL_CHARS: usize = 2048;

/// Parses one notice-shape event at `path` into a consent event, recording every problem in
/// `errors` (paths such as `events[0].action`, or `[3].events[0].action` in a batch).
pub fn parse(
    value: &Value,
    path: Path<'_>,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<EventInput> {
    let before = errors.len();
    let f = Fields::of(value, path, NOTICE_FIELDS, errors)?;
    let id = read_id(&f, errors);
    if f.get("organization_id").is_none_or(Value::is_null) {
        errors.add(f.child("organization_id"), "is required");
    }
    check_organization(&f, ctx, errors);
    let created_at = read_created_at(&f, ctx, errors);
    let updated_at = f
        .string("updated_at", errors)
        .and_then(|s| match Timestamp::parse(s) {
            Ok(t) => Some(t),
            Err(message) => {
                errors.add(f.child("updated_at"), message);
                None
            }
        });
    let regulation =
        vocabulary::<NoticeRegulation>(&f, "regulation", errors).unwrap_or(NoticeRegulation::Gdpr);
    let notice_id = f.identifier("notice_id", errors).map(str::to_owned);
    let user = match f.get("user") {
        None | Some(Value::Null) => {
            errors.add(f.child("user"), "is required");
            None
        }
        Some(v) => parse_user(v, f.child("user"), errors),
    };
    let source = f
        .get("source")
        .filter(|v| !v.is_null())
        .and_then(|v| parse_source(v, f.child("source"), errors));
    let consent_string = read_consent_string(&f, ctx, errors);
    let items = match f.get("events") {
        None | Some(Value::Null) => {
            errors.add(f.child("events"), "is required");
            Vec::new()
        }
        Some(_) => parse_items(&f, errors),
    };
    let apply_string = regulation == NoticeRegulation::Tcf;
    let consents = consents_of(
        &items,
        consent_string
            .as_ref()
            .filter(|_| apply_string)
            .map(|(_, model)| model),
        &ctx.purpose_map,
        f.child("events"),
        errors,
    );
    f.finish(errors);
    let user = user?;
    if errors.len() != before {
        return None;
    }
    let mut consents = consents;
    consents.tcfcs = consent_string.map(|(s, _)| s);
    let body = EventBody {
        metadata: Some(actions_metadata(&items)),
        user: user.reference,
        consents,
        notice: Some(NoticeRecord {
            notice_id,
            user_type: user.kind,
            region: user.region,
            source,
            events: items,
            updated_at,
        }),
        ..EventBody::default()
    };
    Some(EventInput::new(
        id,
        created_at,
        EventStatus::Confirmed,
        Regulation::parse(regulation.as_str()).unwrap_or_default(),
        body,
    ))
}

/// The event metadata of a notice event: its distinct actions, in the order they first
/// appear, under [`ACTIONS_METADATA_KEY`].
fn actions_metadata(items: &[NoticeItem]) -> Metadata {
    let mut actions: Vec<&str> = Vec::new();
    for item in items {
        let name = item.action.as_str();
        if !actions.contains(&name) {
            actions.push(name);
        }
    }
    let mut metadata = Metadata::new();
    metadata.insert(
        ACTIONS_METADATA_KEY.to_owned(),
        Value::Array(actions.into_iter().map(Value::from).collect()),
    );
    metadata
}

/// A field whose value is one of a closed set; an unknown value is reported with the list of
/// allowed ones.
fn vocabulary<T: Vocabulary>(f: &Fields<'_, '_>, key: &str, errors: &mut FieldErrors) -> Option<T> {
    let s = f.string(key, errors)?;
    match T::all().iter().copied().find(|v| v.name() == s) {
        Some(v) => Some(v),
        None => {
            let allowed: Vec<&str> = T::all().iter().map(|v| v.name()).collect();
            errors.add(
                f.child(key),
                format!(
                    "'{}' is not allowed; expected one of: {}",
                    truncate(s, 64),
                    allowed.join(", ")
                ),
            );
            None
        }
    }
}

/// The `user` of a notice event, read.
struct NoticeUser {
    /// The user as the Consents API shape names it.
    reference: UserRef,
    /// `type` as sent.
    kind: Option<UserType>,
    /// `region` as sent.
    region: Option<String>,
}

fn parse_user(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Option<NoticeUser> {
    let f = Fields::of(value, path, USER_FIELDS, errors)?;
    let id = f.identifier("id", errors).map(str::to_owned);
    let kind = vocabulary::<UserType>(&f, "type", errors);
    let country = f
        .string("country", errors)
        .and_then(|s| match parse_country(s) {
            Ok(c) => Some(c),
            Err(message) => {
                errors.add(f.child("country"), message);
                None
            }
        });
    let region = f.identifier("region", errors).map(str::to_owned);
    let mut reference = UserRef {
        country,
        ..UserRef::default()
    };
    if kind == Some(UserType::External) {
        if id.is_none() && f.get("id").is_none_or(Value::is_null) {
            errors.add(
                f.child("id"),
                "is required when type is external (it is the organization user id)",
            );
        }
        reference.organization_user_id = id;
    } else {
        reference.id = id;
    }
    f.finish(errors);
    Some(NoticeUser {
        reference,
        kind,
        region,
    })
}

fn parse_source(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Option<NoticeSource> {
    let f = Fields::of(value, path, SOURCE_FIELDS, errors)?;
    let source = NoticeSource {
        kind: vocabulary::<SourceType>(&f, "type", errors),
        sdk_version: f.identifier("sdk_version", errors).map(str::to_owned),
        url: f.string("url", errors).and_then(|s| match check_url(s) {
            Ok(()) => Some(s.to_owned()),
            Err(message) => {
                errors.add(f.child("url"), message);
                None
            }
        }),
    };
    f.finish(errors);
    Some(source)
}

/// Checks `source.url`: an absolute URL of at most [`MAX_URL_CHARS`] characters, without
/// control characters (which URL parsers silently drop).
fn check_url(s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    match url::Url::parse(s) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "must be an absolute URL such as https://www.example.com/page ({e})"
        )),
    }
}

/// Reads and decodes `consent_string`: a TCF v2 TC string, refused with the decoder's reason.
fn read_consent_string(
    f: &Fields<'_, '_>,
    ctx: &ParseContext,
    errors: &mut FieldErrors,
) -> Option<(String, TcModel)> {
    if ctx.generate_tcfcs.is_some() {
        errors.add(
            f.child("consent_string"),
            "$generate_tcfcs=true builds the string from iab.tcf parameters, which the notice \
             shape cannot carry; send the CMP's string here without the flag",
        );
        return None;
    }
    let s = f.string("consent_string", errors)?;
    if s.is_empty() {
        errors.add(f.child("consent_string"), "must not be empty");
        return None;
    }
    match assent_tcf::decode(s) {
        Ok(model) => Some((s.to_owned(), model)),
        Err(e) => {
            errors.add(
                f.child("consent_string"),
                format!("is not a valid TCF v2 consent string: {e}"),
            );
            None
        }
    }
}

fn parse_items(f: &Fields<'_, '_>, errors: &mut FieldErrors) -> Vec<NoticeItem> {
    let Some(values) = f.array("events", errors) else {
        return Vec::new();
    };
    let path = f.child("events");
    if values.is_empty() {
        errors.add(
            path,
            "must list at least one action (consent.given, preference.shown, ...)",
        );
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| parse_item(v, path.index(i), errors))
        .collect()
}

fn parse_item(value: &Value, path: Path<'_>, errors: &mut FieldErrors) -> Option<NoticeItem> {
    let f = Fields::of(value, path, ITEM_FIELDS, errors)?;
    if f.get("action").is_none_or(Value::is_null) {
        errors.add(f.child("action"), "is required");
    }
    let action = vocabulary::<NoticeAction>(&f, "action", errors);
    let value = f.choice("value", errors);
    if action == Some(NoticeAction::PreferenceShown) && value.is_some() {
        errors.add(
            f.child("value"),
            "must not be sent with preference.shown, which records that the notice was shown \
             and changes no choice",
        );
    }
    let purpose = f.identifier("purpose", errors).map(str::to_owned);
    let vendor = f.identifier("vendor", errors).map(str::to_owned);
    let legal_basis = vocabulary::<LegalBasis>(&f, "legal_basis", errors);
    f.finish(errors);
    Some(NoticeItem {
        action: action?,
        purpose,
        vendor,
        value,
        legal_basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DomainError;
    use crate::event::parse_batch;
    use crate::ids::OrganizationId;
    use crate::tcf::PurposeMap;
    use serde_json::json;
    use std::sync::Arc;

    fn ctx() -> ParseContext {
        ParseContext {
            organization_id: OrganizationId::parse("acme").unwrap(),
            now: Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            generate_tcfcs: None,
            purpose_map: Arc::new(PurposeMap::default()),
        }
    }

    fn errors_of(body: Value) -> std::collections::BTreeMap<String, String> {
        match parse_batch(&body, &ctx()).unwrap_err() {
            DomainError::Invalid { errors, .. } => errors.as_map().clone(),
            other => panic!("{other:?}"),
        }
    }

    fn one(body: Value) -> EventInput {
        parse_batch(&body, &ctx()).unwrap().events.remove(0)
    }

    #[test]
    fn a_notice_becomes_one_consent_event() {
        let input = one(json!({
            "id": "n1", "organization_id": "acme", "notice_id": "notice-1",
            "user": {"id": "u1", "country": "fr", "region": "IDF"},
            "regulation": "ccpa",
            "events": [
                {"action": "preference.shown"},
                {"action": "consent.given", "purpose": "analytics"},
                {"action": "consent.refused", "purpose": "ads", "legal_basis": "legitimate_interest"},
                {"action": "consent.given", "vendor": "google", "value": false},
            ],
            "source": {"type": "ios", "sdk_version": "2.3.1", "url": "https://example.com/a"},
            "created_at": "2023-05-01T10:00:00+02:00", "updated_at": "2023-05-01T08:00:01Z"
        }));
        assert_eq!(input.id.unwrap().as_str(), "n1");
        assert_eq!(input.regulation.as_str(), "ccpa");
        assert_eq!(
            input.created_at.unwrap().to_rfc3339(),
            "2023-05-01T08:00:00.000Z"
        );
        let b = &input.body;
        assert_eq!(b.user.id.as_deref(), Some("u1"));
        assert_eq!(b.user.country.as_deref(), Some("FR"));
        let purposes: Vec<_> = b
            .consents
            .purposes
            .iter()
            .map(|p| (p.id.as_str(), p.enabled, p.enabled_li))
            .collect();
        assert_eq!(
            purposes,
            vec![("analytics", Some(true), None), ("ads", None, Some(false))]
        );
        assert_eq!(b.consents.vendors.disabled, vec!["google"]);
        assert_eq!(
            b.metadata.as_ref().unwrap()["notice_actions"],
            json!(["preference.shown", "consent.given", "consent.refused"])
        );
        let record = b.notice.as_ref().unwrap();
        assert_eq!(record.notice_id.as_deref(), Some("notice-1"));
        assert_eq!(record.region.as_deref(), Some("IDF"));
        assert_eq!(record.events.len(), 4);
        assert_eq!(record.source.as_ref().unwrap().kind, Some(SourceType::Ios));
        let stored: EventBody = serde_json::from_slice(&input.body_json).unwrap();
        assert_eq!(stored, *input.body, "the stored form reads back whole");
    }

    #[test]
    fn an_external_user_is_an_organization_user_id() {
        let input = one(json!({"organization_id": "acme",
            "user": {"id": "crm-42", "type": "external"},
            "events": [{"action": "preference.shown"}]}));
        assert_eq!(
            input.body.user.organization_user_id.as_deref(),
            Some("crm-42")
        );
        assert_eq!(input.body.user.id, None);
        let errors = errors_of(
            json!({"organization_id": "acme", "user": {"type": "external"},
            "events": [{"action": "preference.shown"}]}),
        );
        assert!(errors.contains_key("user.id"), "{errors:?}");
    }

    #[test]
    fn every_enum_names_its_path_and_allowed_values() {
        let errors = errors_of(json!([
            {"organization_id": "acme", "user": {"id": "u"},
             "events": [{"action": "preference.shown"}]},
            {"organization_id": "acme", "user": {"id": "u", "type": "crm"},
             "regulation": "pipeda", "source": {"type": "tizen"},
             "events": [{"action": "consent.maybe"},
                        {"action": "consent.given", "legal_basis": "whim"}]}
        ]));
        let expect = [
            ("[1].user.type", "didomi, external"),
            ("[1].regulation", "gdpr, ccpa, vcdpa"),
            (
                "[1].source.type",
                "react-native, flutter, unity, vega-os, amp, api",
            ),
            (
                "[1].events[0].action",
                "consent.given, consent.refused, preference.shown",
            ),
            (
                "[1].events[1].legal_basis",
                "consent, legitimate_interest, contract",
            ),
        ];
        for (path, listed) in expect {
            let message = errors
                .get(path)
                .unwrap_or_else(|| panic!("{path}: {errors:?}"));
            assert!(
                message.contains("is not allowed; expected one of: "),
                "{message}"
            );
            assert!(message.contains(listed), "{path}: {message}");
        }
        assert_eq!(errors.len(), expect.len(), "{errors:?}");
    }

    #[test]
    fn required_fields_and_formats_are_checked() {
        let errors = errors_of(json!({"events": [], "source": {"url": "/relative"},
            "created_at": "yesterday", "updated_at": "2024-13-01T00:00:00Z", "extra": 1}));
        for path in [
            "organization_id",
            "user",
            "events",
            "source.url",
            "created_at",
            "updated_at",
            "extra",
        ] {
            assert!(errors.contains_key(path), "{path}: {errors:?}");
        }
        let errors = errors_of(json!({"organization_id": "other", "user": {},
            "events": [{"purpose": "p", "value": "yes", "unknown": true}]}));
        for path in [
            "organization_id",
            "events[0].action",
            "events[0].value",
            "events[0].unknown",
        ] {
            assert!(errors.contains_key(path), "{path}: {errors:?}");
        }
    }

    #[test]
    fn shown_takes_no_value() {
        let errors = errors_of(json!({"organization_id": "acme", "user": {},
            "events": [{"action": "preference.shown", "purpose": "p", "value": true}]}));
        assert!(
            errors["events[0].value"].contains("preference.shown"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bad_consent_string_is_refused_with_the_reason() {
        let errors = errors_of(json!({"organization_id": "acme", "user": {},
            "consent_string": "CQ", "events": [{"action": "preference.shown"}]}));
        assert!(
            errors["consent_string"]
                .starts_with("is not a valid TCF v2 consent string: core segment: truncated"),
            "{errors:?}"
        );
    }

    #[test]
    fn urls_must_be_absolute_and_clean() {
        assert!(check_url("https://www.example.com/p?q=1").is_ok());
        assert!(check_url("android-app://com.example").is_ok());
        for bad in ["example.com", "/path", "https://a\nb.com", ""] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_CHARS))).is_err());
    }

    #[test]
    fn a_replay_of_the_same_notice_is_the_same_content() {
        let body = json!({"id": "n", "organization_id": "acme", "user": {"id": "u"},
            "created_at": "2023-01-01T00:00:00Z",
            "events": [{"action": "consent.given", "purpose": "p"}]});
        let a = one(body.clone());
        let b = one(body);
        assert_eq!(a.body, b.body);
        assert_eq!(a.body_json, b.body_json);
    }
}
