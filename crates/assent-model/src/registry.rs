//! What the purpose registry means for events: each event records the version in force of the
//! registered purposes it names (`purpose_versions`), and in strict mode an event that names
//! a purpose, preference, value or channel the registry does not hold is refused.
//!
//! Top-level `consents.channels` and vendors are never checked: they belong to no purpose.

use crate::consents::{ChannelChoice, Consents, PurposeChoice};
use crate::error::{DomainError, FieldErrors};
use crate::event::{EventInput, EventPatch};
use crate::json::Path;
use crate::purpose::Purpose;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The versions of the registered purposes an event names: purpose id to version.
pub type PurposeVersions = BTreeMap<String, u32>;

/// One registered purpose, reduced to what events are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    version: u32,
    /// Preference id to (whether several values may be picked, the values offered).
    preferences: HashMap<String, (bool, HashSet<String>)>,
    channels: HashSet<String>,
}

/// An organization's purpose registry as events see it: the current version of each purpose,
/// and whether strict mode is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    strict: bool,
    purposes: HashMap<String, Entry>,
}

impl Registry {
    /// The registry of the current versions `purposes`, strict or not.
    pub fn new<'a>(strict: bool, purposes: impl IntoIterator<Item = &'a Purpose>) -> Registry {
        let purposes = purposes
            .into_iter()
            .map(|p| {
                let entry = Entry {
                    version: p.version,
                    preferences: p
                        .content
                        .preferences
                        .iter()
                        .map(|pref| {
                            let values = pref.values.iter().map(|v| v.id.clone()).collect();
                            (pref.id.clone(), (pref.multiple, values))
                        })
                        .collect(),
                    channels: p.content.channels.iter().map(|c| c.id.clone()).collect(),
                };
                (p.id.clone(), entry)
            })
            .collect();
        Registry { strict, purposes }
    }

    /// Whether strict mode is on.
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// How many purposes are registered.
    pub fn len(&self) -> usize {
        self.purposes.len()
    }

    /// True when no purpose is registered.
    pub fn is_empty(&self) -> bool {
        self.purposes.is_empty()
    }

    /// The version in force of each registered purpose that `consents` names.
    pub fn versions(&self, consents: &Consents) -> PurposeVersions {
        if self.purposes.is_empty() {
            return PurposeVersions::new();
        }
        consents
            .purposes
            .iter()
            .filter_map(|p| self.purposes.get(&p.id).map(|e| (p.id.clone(), e.version)))
            .collect()
    }

    /// In strict mode, records every choice of `consents` (at `path`) that the registry does
    /// not hold; does nothing otherwise.
    pub fn check(&self, consents: &Consents, path: Path<'_>, errors: &mut FieldErrors) {
        if !self.strict {
            return;
        }
        let list = path.key("purposes");
        for (i, choice) in consents.purposes.iter().enumerate() {
            let at = list.index(i);
            match self.purposes.get(&choice.id) {
                None => errors.add(
                    at.key("id"),
                    format!(
                        "purpose '{}' is not in the purpose registry, and strict mode is on",
                        choice.id
                    ),
                ),
                Some(entry) => check_purpose(entry, choice, at, errors),
            }
        }
    }

    /// Checks a parsed `POST /consents/events` body (`is_array`: a batch, whose paths start
    /// with the event's index) in strict mode, then stamps each event with the versions of the
    /// registered purposes it names. Nothing is stamped when any event is refused.
    pub fn apply_to_events(
        &self,
        events: &mut [EventInput],
        is_array: bool,
    ) -> Result<(), DomainError> {
        if self.purposes.is_empty() && !self.strict {
            return Ok(());
        }
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        for (k, event) in events.iter().enumerate() {
            let at = if is_array { root.index(k) } else { root };
            self.check(&event.body.consents, at.key("consents"), &mut errors);
        }
        errors.into_result()?;
        self.stamp_events(events);
        Ok(())
    }

    /// Stamps each event with the versions of the registered purposes it names, without the
    /// strict checks (events that come from an integration, which the organization cannot
    /// correct).
    pub fn stamp_events(&self, events: &mut [EventInput]) {
        for event in events {
            let versions = self.versions(&event.body.consents);
            if versions == event.body.purpose_versions {
                continue;
            }
            let appended = event.body.purpose_versions.is_empty()
                && append_versions(&mut event.body_json, &versions);
            Arc::make_mut(&mut event.body).purpose_versions = versions;
            if !appended {
                event.body_json = serde_json::to_vec(&event.body).unwrap_or_default();
            }
        }
    }

    /// Checks the new consents of an event patch in strict mode, and stamps the patch with the
    /// versions they name (a patch that leaves the consents alone keeps the event's stamps).
    pub fn apply_to_patch(&self, patch: &mut EventPatch) -> Result<(), DomainError> {
        let Some(consents) = &patch.consents else {
            return Ok(());
        };
        let mut errors = FieldErrors::new();
        self.check(consents, Path::Root.key("consents"), &mut errors);
        errors.into_result()?;
        patch.purpose_versions = self.versions(consents);
        Ok(())
    }
}

/// Adds `purpose_versions` to the stored JSON of a body that has none, as serializing the
/// body again would write it (it is the body's last field), without serializing the rest
/// again: ingestion stamps every event.
/// Returns false, leaving it alone, when it is not a JSON object.
fn append_versions(body_json: &mut Vec<u8>, versions: &PurposeVersions) -> bool {
    let Ok(map) = serde_json::to_vec(versions) else {
        return false;
    };
    if body_json.first() != Some(&b'{') || body_json.last() != Some(&b'}') {
        return false;
    }
    body_json.pop();
    if body_json.len() > 1 {
        body_json.push(b',');
    }
    body_json.extend_from_slice(br#""purpose_versions":"#);
    body_json.extend_from_slice(&map);
    body_json.push(b'}');
    true
}

fn check_purpose(entry: &Entry, choice: &PurposeChoice, at: Path<'_>, errors: &mut FieldErrors) {
    let values_path = at.key("values");
    for (pref_id, selected) in &choice.values {
        let pref_path = values_path.key(pref_id);
        let Some((multiple, offered)) = entry.preferences.get(pref_id) else {
            errors.add(
                pref_path,
                format!(
                    "preference '{pref_id}' is not a preference of purpose '{}' in the registry",
                    choice.id
                ),
            );
            continue;
        };
        let picked: Vec<&str> = selected
            .value
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let value_path = pref_path.key("value");
        if let Some(unknown) = picked.iter().find(|v| !offered.contains(**v)) {
            errors.add(
                value_path,
                format!("'{unknown}' is not a value of preference '{pref_id}' in the registry"),
            );
        } else if !multiple && picked.len() > 1 {
            errors.add(
                value_path,
                format!(
                    "preference '{pref_id}' takes one value only in the registry, and {} are \
                     given",
                    picked.len()
                ),
            );
        }
    }
    let prefs_path = at.key("preferences");
    for (j, pref) in choice.preferences.iter().enumerate() {
        let pref_path = prefs_path.index(j);
        if !entry.preferences.contains_key(&pref.id) {
            errors.add(
                pref_path.key("id"),
                format!(
                    "preference '{}' is not a preference of purpose '{}' in the registry",
                    pref.id, choice.id
                ),
            );
        }
        check_channels(
            entry,
            &pref.channels,
            pref_path.key("channels"),
            &choice.id,
            errors,
        );
    }
    check_channels(
        entry,
        &choice.channels,
        at.key("channels"),
        &choice.id,
        errors,
    );
}

fn check_channels(
    entry: &Entry,
    channels: &[ChannelChoice],
    path: Path<'_>,
    purpose: &str,
    errors: &mut FieldErrors,
) {
    for (c, channel) in channels.iter().enumerate() {
        if !entry.channels.contains(&channel.id) {
            errors.add(
                path.index(c).key("id"),
                format!(
                    "channel '{}' is not a channel of purpose '{purpose}' in the registry",
                    channel.id
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ParseContext, parse_batch};
    use crate::purpose::NewPurpose;
    use crate::time::Timestamp;
    use crate::{ConsentEvent, OrganizationId};
    use serde_json::{Value, json};

    fn purpose(body: Value, version: u32) -> Purpose {
        let p = NewPurpose::parse(&body, "acme").unwrap();
        Purpose {
            id: p.id,
            version,
            content: p.content,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
        }
    }

    fn registry(strict: bool) -> Registry {
        let newsletter = purpose(
            json!({"id": "newsletter", "labels": {"en": "N"},
                "preferences": [
                    {"id": "topics", "labels": {"en": "T"}, "values": [
                        {"id": "tech", "labels": {"en": "Tech"}}, {"id": "sport", "labels": {"en": "S"}}]},
                    {"id": "frequency", "labels": {"en": "F"}, "multiple": false, "values": [
                        {"id": "daily", "labels": {"en": "D"}}, {"id": "weekly", "labels": {"en": "W"}}]}],
                "channels": [{"id": "email", "labels": {"en": "Email"}}]}),
            3,
        );
        let analytics = purpose(json!({"id": "analytics", "labels": {"en": "A"}}), 1);
        Registry::new(strict, [&newsletter, &analytics])
    }

    fn ctx() -> ParseContext {
        ParseContext {
            organization_id: OrganizationId::parse("acme").unwrap(),
            now: Timestamp::now(),
            generate_tcfcs: None,
            purpose_map: std::sync::Arc::new(crate::tcf::PurposeMap::default()),
        }
    }

    fn refused(reg: &Registry, body: Value) -> Vec<(String, String)> {
        let mut batch = parse_batch(&body, &ctx()).unwrap();
        match reg.apply_to_events(&mut batch.events, batch.is_array) {
            Err(DomainError::Invalid { errors, .. }) => errors
                .as_map()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn events_are_stamped_with_the_versions_of_registered_purposes_only() {
        let reg = registry(false);
        let mut batch = parse_batch(
            &json!({"consents": {"purposes": [
                {"id": "newsletter", "enabled": true}, {"id": "unknown", "enabled": true}]}}),
            &ctx(),
        )
        .unwrap();
        reg.apply_to_events(&mut batch.events, false).unwrap();
        let event = &batch.events[0];
        assert_eq!(
            event.body.purpose_versions,
            PurposeVersions::from([("newsletter".to_owned(), 3)])
        );
        let stored: Value = serde_json::from_slice(&event.body_json).unwrap();
        assert_eq!(stored["purpose_versions"], json!({"newsletter": 3}));

        let mut none =
            parse_batch(&json!({"consents": {"purposes": [{"id": "x"}]}}), &ctx()).unwrap();
        reg.apply_to_events(&mut none.events, false).unwrap();
        assert!(none.events[0].body.purpose_versions.is_empty());
        let stored: Value = serde_json::from_slice(&none.events[0].body_json).unwrap();
        assert!(stored.get("purpose_versions").is_none(), "{stored}");
    }

    #[test]
    fn stamping_writes_the_json_that_serializing_the_body_writes() {
        let reg = registry(false);
        for body in [
            json!({"consents": {"purposes": [{"id": "analytics"}]}}),
            json!({"consents": {"purposes": [{"id": "newsletter", "enabled": true}, {"id": "analytics"}]},
                   "metadata": {"k": "v"}, "user": {"organization_user_id": "u"},
                   "delegate": {"id": "agent"}, "proofs_id": ["p.pdf"]}),
        ] {
            let mut batch = parse_batch(&body, &ctx()).unwrap();
            reg.stamp_events(&mut batch.events);
            let event = &batch.events[0];
            assert!(!event.body.purpose_versions.is_empty());
            assert_eq!(
                String::from_utf8(event.body_json.clone()).unwrap(),
                serde_json::to_string(&event.body).unwrap()
            );
            // Stamping again with other versions rewrites it.
            let mut again = batch.events.clone();
            Registry::new(false, []).stamp_events(&mut again);
            assert!(again[0].body.purpose_versions.is_empty());
            assert_eq!(
                again[0].body_json,
                serde_json::to_vec(&again[0].body).unwrap()
            );
        }
    }

    #[test]
    fn strict_mode_refuses_what_the_registry_does_not_hold_at_its_path() {
        let reg = registry(true);
        let errors = refused(
            &reg,
            json!({"consents": {"purposes": [
                {"id": "newsletter", "values": {
                    "topics": {"value": "tech,cooking"},
                    "frequency": {"value": "daily,weekly"},
                    "colour": {"value": "red"}},
                 "preferences": [{"id": "topics"}, {"id": "mood", "channels": [{"id": "fax"}]}],
                 "channels": [{"id": "email"}, {"id": "sms"}]},
                {"id": "ghost", "enabled": true}],
                "channels": [{"id": "pigeon", "enabled": true}],
                "vendors": {"enabled": ["anyone"]}}}),
        );
        let paths: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            [
                "consents.purposes[0].channels[1].id",
                "consents.purposes[0].preferences[1].channels[0].id",
                "consents.purposes[0].preferences[1].id",
                "consents.purposes[0].values.colour",
                "consents.purposes[0].values.frequency.value",
                "consents.purposes[0].values.topics.value",
                "consents.purposes[1].id",
            ]
        );
        assert!(errors[4].1.contains("one value only"), "{errors:?}");
        assert!(errors[5].1.contains("'cooking'"), "{errors:?}");
    }

    #[test]
    fn a_batch_is_refused_whole_with_indexed_paths_and_nothing_stamped() {
        let reg = registry(true);
        let body = json!([
            {"consents": {"purposes": [{"id": "newsletter", "enabled": true}]}},
            {"consents": {"purposes": [{"id": "analytics"}, {"id": "ghost"}]}}]);
        let errors = refused(&reg, body.clone());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "[1].consents.purposes[1].id");
        let mut batch = parse_batch(&body, &ctx()).unwrap();
        assert!(reg.apply_to_events(&mut batch.events, true).is_err());
        assert!(batch.events[0].body.purpose_versions.is_empty());
    }

    #[test]
    fn without_strict_mode_anything_passes_and_valid_choices_pass_strict_mode() {
        let lax = registry(false);
        let body =
            json!({"consents": {"purposes": [{"id": "ghost", "values": {"x": {"value": "y"}}}]}});
        let mut batch = parse_batch(&body, &ctx()).unwrap();
        lax.apply_to_events(&mut batch.events, false).unwrap();
        let strict = registry(true);
        let good = json!({"consents": {
            "purposes": [{"id": "newsletter", "enabled": true,
                "values": {"topics": {"value": "tech, sport"}, "frequency": {"value": "weekly"}},
                "preferences": [{"id": "topics", "channels": [{"id": "email"}]}],
                "channels": [{"id": "email", "enabled": true}]}],
            "channels": [{"id": "anything"}]}});
        let mut batch = parse_batch(&good, &ctx()).unwrap();
        strict.apply_to_events(&mut batch.events, false).unwrap();
        // An empty registry in strict mode refuses every purpose.
        let empty = Registry::new(true, []);
        let errors = refused(&empty, json!({"consents": {"purposes": [{"id": "a"}]}}));
        assert_eq!(errors[0].0, "consents.purposes[0].id");
    }

    #[test]
    fn a_patch_of_consents_is_checked_and_restamped() {
        let reg = registry(true);
        let mut patch = EventPatch::parse(&json!({"consents": {"purposes": [
            {"id": "analytics", "enabled": false}]}}))
        .unwrap();
        reg.apply_to_patch(&mut patch).unwrap();
        assert_eq!(
            patch.purpose_versions,
            PurposeVersions::from([("analytics".to_owned(), 1)])
        );
        let mut bad =
            EventPatch::parse(&json!({"consents": {"purposes": [{"id": "ghost"}]}})).unwrap();
        let Err(DomainError::Invalid { errors, .. }) = reg.apply_to_patch(&mut bad) else {
            panic!("not refused")
        };
        assert!(errors.as_map().contains_key("consents.purposes[0].id"));
        let mut status_only = EventPatch::parse(&json!({"status": "confirmed"})).unwrap();
        reg.apply_to_patch(&mut status_only).unwrap();
        let mut event = ConsentEvent {
            id: crate::EventId::generate(),
            organization_id: OrganizationId::parse("acme").unwrap(),
            user_id: "u".into(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            status: crate::EventStatus::Confirmed,
            regulation: Default::default(),
            seq: 1,
            body: Default::default(),
        };
        std::sync::Arc::make_mut(&mut event.body).purpose_versions =
            PurposeVersions::from([("newsletter".to_owned(), 2)]);
        status_only.apply_to(&mut event, Timestamp::from_millis(1));
        assert_eq!(event.body.purpose_versions["newsletter"], 2, "kept");
        patch.apply_to(&mut event, Timestamp::from_millis(2));
        assert_eq!(
            event.body.purpose_versions,
            PurposeVersions::from([("analytics".to_owned(), 1)])
        );
    }
}
