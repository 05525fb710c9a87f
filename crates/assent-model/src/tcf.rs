//! IAB TCF strings in the consent domain (API.md §6).
//!
//! - [`PurposeMap`]: which purpose ids of a status are which IAB purposes and special features
//!   (Didomi's ids by default, or a JSON file).
//! - [`parse_params`]: the `iab.tcf` object of a write that asks for `$generate_tcfcs=true`.
//! - [`choices`]: what a user's status chose, in IAB numbers.
//! - [`TcfRequest::generate`]: the TC string of a status; [`generate_for_events`] does it for
//!   the new events of one request, each from the status its user has once the event is
//!   folded.
//! - [`check_tc_string`]: the check of a `consents.tcfcs` a client sends.

use crate::error::{DomainError, FieldErrors};
use crate::event::{EventInput, EventStatus};
use crate::ids::{Regulation, check_identifier};
use crate::json::{Fields, Path, type_name};
use crate::status::{ConsentStatus, Stamp, StampedChoices, UserState};
use crate::time::Timestamp;
use assent_tcf::builder::{Choices, TcfParams, build};
use assent_tcf::{Alpha2, PublisherRestriction};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// Didomi's purpose ids and the IAB TCF purposes they are: the default of [`PurposeMap`].
pub const DIDOMI_PURPOSES: &[(&str, u8)] = &[
    ("cookies", 1),
    ("select_basic_ads", 2),
    ("create_ads_profile", 3),
    ("select_personalized_ads", 4),
    ("create_content_profile", 5),
    ("select_personalized_content", 6),
    ("measure_ad_performance", 7),
    ("measure_content_performance", 8),
    ("market_research", 9),
    ("improve_products", 10),
    ("use_limited_data_to_select_content", 11),
];

/// Didomi's special-feature ids and the IAB TCF special features they are.
pub const DIDOMI_SPECIAL_FEATURES: &[(&str, u8)] =
    &[("geolocation_data", 1), ("device_characteristics", 2)];

/// The highest purpose number a TC string can hold.
pub const MAX_PURPOSE: u8 = 24;
/// The highest special-feature number a TC string can hold.
pub const MAX_SPECIAL_FEATURE: u8 = 12;

/// Which purpose ids of a status are IAB purposes, and which are IAB special features.
/// Purpose ids not in the map are the publisher's own and are left out of TC strings.
///
/// As a file (`assent serve --tcf-purpose-map FILE`) it is a JSON object; `special_features`
/// may be left out:
///
/// ```json
/// {"purposes": {"cookies": 1, "analytics": 8}, "special_features": {"geolocation_data": 1}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeMap {
    /// Purpose id → IAB purpose (1–24).
    purposes: BTreeMap<String, u8>,
    /// Purpose id → IAB special feature (1–12).
    #[serde(default)]
    special_features: BTreeMap<String, u8>,
}

impl Default for PurposeMap {
    /// Didomi's ids ([`PurposeMap::didomi`]).
    fn default() -> Self {
        PurposeMap::didomi()
    }
}

impl PurposeMap {
    /// Didomi's ids (API.md §6): [`DIDOMI_PURPOSES`] and [`DIDOMI_SPECIAL_FEATURES`].
    pub fn didomi() -> PurposeMap {
        let own = |table: &[(&str, u8)]| table.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        PurposeMap {
            purposes: own(DIDOMI_PURPOSES),
            special_features: own(DIDOMI_SPECIAL_FEATURES),
        }
    }

    /// A map from its two tables, checked: ids are identifiers, purposes are 1–24, special
    /// features 1–12, and no id is in both tables. Several ids may name the same number.
    pub fn new(
        purposes: BTreeMap<String, u8>,
        special_features: BTreeMap<String, u8>,
    ) -> Result<PurposeMap, String> {
        for (table, what, map, max) in [
            ("purposes", "purpose", &purposes, MAX_PURPOSE),
            (
                "special_features",
                "special feature",
                &special_features,
                MAX_SPECIAL_FEATURE,
            ),
        ] {
            for (id, n) in map {
                check_identifier(id).map_err(|e| format!("{table}: the id {id:?} {e}"))?;
                if !(1..=max).contains(n) {
                    return Err(format!(
                        "{table}: '{id}' maps to {n}, but IAB {what}s are numbered 1 to {max}"
                    ));
                }
            }
        }
        if let Some(id) = purposes
            .keys()
            .find(|id| special_features.contains_key(*id))
        {
            return Err(format!(
                "'{id}' is both in purposes and in special_features"
            ));
        }
        Ok(PurposeMap {
            purposes,
            special_features,
        })
    }

    /// Reads a map file's JSON; the error says what is wrong in one sentence.
    pub fn from_json(text: &str) -> Result<PurposeMap, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            purposes: BTreeMap<String, u64>,
            #[serde(default)]
            special_features: BTreeMap<String, u64>,
        }
        let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let narrow = |m: BTreeMap<String, u64>| {
            m.into_iter()
                .map(|(k, v)| (k, u8::try_from(v).unwrap_or(u8::MAX)))
                .collect()
        };
        PurposeMap::new(narrow(file.purposes), narrow(file.special_features))
    }

    /// Every purpose id that is an IAB purpose, with its number.
    pub fn purposes(&self) -> impl Iterator<Item = (&str, u8)> + '_ {
        self.purposes.iter().map(|(id, n)| (id.as_str(), *n))
    }

    /// Every purpose id that is an IAB special feature, with its number.
    pub fn special_features(&self) -> impl Iterator<Item = (&str, u8)> + '_ {
        self.special_features
            .iter()
            .map(|(id, n)| (id.as_str(), *n))
    }

    /// The IAB purpose that purpose `id` is, if any.
    pub fn purpose(&self, id: &str) -> Option<u8> {
        self.purposes.get(id).copied()
    }

    /// The IAB special feature that purpose `id` is, if any.
    pub fn special_feature(&self, id: &str) -> Option<u8> {
        self.special_features.get(id).copied()
    }
}

/// The IAB vendor id that a vendor id of a status names: `iab:<n>` or a bare `<n>`, with `n`
/// from 1 to 65535. Other vendor ids (`google`) are not IAB vendors.
pub fn iab_vendor_id(id: &str) -> Option<u16> {
    let digits = id.strip_prefix("iab:").unwrap_or(id);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u16>().ok().filter(|n| *n > 0)
}

/// What a status chose in IAB numbers, and the stamp of the newest of those choices.
///
/// - a mapped purpose with `enabled: true` is a purpose consent, with `enabled_li: true` a
///   purpose legitimate interest (a missing choice is no legitimate interest);
/// - a mapped special feature with `enabled: true` is opted in;
/// - an IAB vendor with `enabled: true` has consent, with `enabled_li: true` legitimate
///   interest; every IAB vendor with any choice was disclosed to the user;
/// - when several ids name one number (`iab:28` and `28`, or two purposes mapped to one IAB
///   purpose), the newest choice among them wins.
pub fn choices(status: &ConsentStatus, map: &PurposeMap) -> (Choices, Option<Stamp>) {
    #[derive(Default)]
    struct Newest<K>(BTreeMap<K, (bool, Stamp)>);
    impl<K: Ord + Copy> Newest<K> {
        fn keep(&mut self, key: K, choice: Option<(bool, Stamp)>, newest: &mut Option<Stamp>) {
            let Some((value, stamp)) = choice else {
                return;
            };
            *newest = (*newest).max(Some(stamp));
            let slot = self.0.entry(key).or_insert((value, stamp));
            if slot.1 < stamp {
                *slot = (value, stamp);
            }
        }
        fn enabled(&self) -> Vec<K> {
            self.0
                .iter()
                .filter(|(_, (v, _))| *v)
                .map(|(k, _)| *k)
                .collect()
        }
    }
    let mut newest = None;
    let (mut consents, mut interests, mut features) =
        (Newest::default(), Newest::default(), Newest::default());
    for (
        id,
        StampedChoices {
            consent,
            legitimate_interest,
        },
    ) in status.purpose_choices()
    {
        if let Some(n) = map.purpose(id) {
            consents.keep(n, consent, &mut newest);
            interests.keep(n, legitimate_interest, &mut newest);
        } else if let Some(n) = map.special_feature(id) {
            features.keep(n, consent, &mut newest);
        }
    }
    let (mut vendor_consents, mut vendor_interests) = (Newest::default(), Newest::default());
    let mut disclosed = BTreeSet::new();
    for (
        id,
        StampedChoices {
            consent,
            legitimate_interest,
        },
    ) in status.vendor_choices()
    {
        let Some(n) = iab_vendor_id(id) else {
            continue;
        };
        if consent.is_some() || legitimate_interest.is_some() {
            disclosed.insert(n);
        }
        vendor_consents.keep(n, consent, &mut newest);
        vendor_interests.keep(n, legitimate_interest, &mut newest);
    }
    let choices = Choices {
        purpose_consents: consents.enabled(),
        purpose_legitimate_interests: interests.enabled(),
        special_features: features.enabled(),
        vendor_consents: vendor_consents.enabled(),
        vendor_legitimate_interests: vendor_interests.enabled(),
        vendors_disclosed: disclosed.into_iter().collect(),
        ..Choices::default()
    };
    (choices, newest)
}

/// What `$generate_tcfcs=true` asks of one write: the `iab.tcf` parameters and the purpose
/// map of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcfRequest {
    /// The CMP-side fields of the string.
    pub params: TcfParams,
    /// Which purposes are which IAB numbers.
    pub map: Arc<PurposeMap>,
}

impl TcfRequest {
    /// The TC string of `status` (TCF v2.2, service-specific, core and DisclosedVendors
    /// segments). Its Created and LastUpdated are the day of the newest choice it encodes, or
    /// of `now` when it encodes none.
    pub fn generate(&self, status: &ConsentStatus, now: Timestamp) -> Result<String, DomainError> {
        let (choices, newest) = choices(status, &self.map);
        let at = newest.map_or(now.millis(), |s| s.at).max(0);
        let when = DateTime::<Utc>::from_timestamp_millis(at).unwrap_or_default();
        build(&self.params, &choices, when)
            .and_then(|model| assent_tcf::encode(&model))
            .map_err(|e| {
                DomainError::invalid_field("iab.tcf", format!("cannot build the TC string: {e}"))
            })
    }
}

/// `$generate_tcfcs=true` on a user route: the string to build, and the regulation whose
/// status it encodes (the route's `regulation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTcf {
    /// The regulation of the status.
    pub regulation: Regulation,
    /// The parameters and the map.
    pub request: TcfRequest,
}

impl UserTcf {
    /// The string of `state`'s status under the regulation (an empty status when the user
    /// has none there).
    pub fn generate(&self, state: &UserState, now: Timestamp) -> Result<String, DomainError> {
        let empty = ConsentStatus::default();
        let status = state.stamped_status(&self.regulation).unwrap_or(&empty);
        self.request.generate(status, now)
    }
}

/// Generates the TC strings the new events of one request ask for, in input order, and puts
/// each into its event's `consents.tcfcs`.
///
/// `events` are the request's new events with their user's key and stamp; `status_before`
/// gives a user's stamped status under a regulation before the request. Each string encodes
/// the status the user has once its event is folded: the status before, the request's
/// earlier confirmed events of the same user and regulation, then the event itself (a
/// `pending_approval` event too: its string is the status it makes once confirmed, and it
/// changes nothing for the later events). Nothing is done when no event asks.
pub fn generate_for_events<'a, K, E>(
    events: impl IntoIterator<Item = (K, Stamp, &'a mut EventInput)>,
    now: Timestamp,
    mut status_before: impl FnMut(K, &Regulation) -> Result<Option<ConsentStatus>, E>,
) -> Result<(), E>
where
    K: Copy + Eq + Hash,
    E: From<DomainError>,
{
    let events: Vec<_> = events.into_iter().collect();
    if events.iter().all(|(_, _, e)| e.tcf.is_none()) {
        return Ok(());
    }
    let mut statuses: HashMap<(K, Regulation), ConsentStatus> = HashMap::new();
    for (key, stamp, input) in events {
        // An event under regulation `none` changes no status: later events do not see it.
        let confirmed = input.status == EventStatus::Confirmed && input.regulation.changes_status();
        if input.tcf.is_none() && !confirmed {
            continue;
        }
        let status = match statuses.entry((key, input.regulation.clone())) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let before = status_before(key, &input.regulation)?;
                v.insert(before.unwrap_or_default())
            }
        };
        if let Some(request) = &input.tcf {
            let mut after = status.clone();
            after.merge(&input.body.consents, stamp);
            let tcfcs = request.generate(&after, now)?;
            input.set_tcfcs(tcfcs);
        }
        if confirmed {
            status.merge(&input.body.consents, stamp);
        }
    }
    Ok(())
}

/// The fields of `iab.tcf`.
const TCF_FIELDS: &[&str] = &[
    "cmp_id",
    "cmp_version",
    "consent_screen",
    "consent_language",
    "vendor_list_version",
    "tcf_policy_version",
    "use_non_standard_texts",
    "purpose_one_treatment",
    "publisher_cc",
    "publisher_restrictions",
];

/// Reads the `tcf` parameters of a write's `iab` object when it asks for
/// `$generate_tcfcs=true`. `iab` is the body's `iab` value (absent or `null`: no parameters)
/// and `path` its path; every problem is recorded at its field (`iab.tcf.cmp_id` when the
/// required CMP id, or the whole `iab.tcf`, is missing).
pub fn parse_params(
    iab: Option<&Value>,
    path: Path<'_>,
    errors: &mut FieldErrors,
) -> Option<TcfParams> {
    let tcf_path = path.key("tcf");
    let tcf = match iab {
        None | Some(Value::Null) => None,
        Some(v) => {
            let f = Fields::of(v, path, &["tcf"], errors)?;
            let tcf = f.get("tcf").filter(|t| !t.is_null());
            f.finish(errors);
            tcf
        }
    };
    let Some(tcf) = tcf else {
        errors.add(
            tcf_path.key("cmp_id"),
            "is required with $generate_tcfcs=true",
        );
        return None;
    };
    let f = Fields::of(tcf, tcf_path, TCF_FIELDS, errors)?;
    let before = errors.len();
    let cmp_id = match f.get("cmp_id") {
        None | Some(Value::Null) => {
            errors.add(f.child("cmp_id"), "is required with $generate_tcfcs=true");
            None
        }
        Some(_) => integer(&f, "cmp_id", 2, 4095, errors),
    };
    let mut params = TcfParams::new(cmp_id.unwrap_or(2));
    if let Some(v) = integer(&f, "cmp_version", 0, 4095, errors) {
        params.cmp_version = v;
    }
    if let Some(v) = integer(&f, "consent_screen", 0, 63, errors) {
        params.consent_screen = v as u8;
    }
    if let Some(v) = integer(&f, "vendor_list_version", 0, 4095, errors) {
        params.vendor_list_version = v;
    }
    if let Some(v) = integer(&f, "tcf_policy_version", 0, 63, errors) {
        params.tcf_policy_version = v as u8;
    }
    if let Some(v) = alpha2(&f, "consent_language", errors) {
        params.consent_language = v;
    }
    if let Some(v) = alpha2(&f, "publisher_cc", errors) {
        params.publisher_cc = v;
    }
    if let Some(v) = f.choice("use_non_standard_texts", errors) {
        params.use_non_standard_texts = v;
    }
    if let Some(v) = f.choice("purpose_one_treatment", errors) {
        params.purpose_one_treatment = v;
    }
    match f.get("publisher_restrictions") {
        None | Some(Value::Null) => {}
        Some(v) => match Vec::<PublisherRestriction>::deserialize(v) {
            Ok(list) => params.publisher_restrictions = list,
            Err(e) => errors.add(
                f.child("publisher_restrictions"),
                format!("must be a list of {{purpose_id, restriction_type, vendors}}: {e}"),
            ),
        },
    }
    f.finish(errors);
    if errors.len() != before || cmp_id.is_none() {
        return None;
    }
    // The fields are right one by one; the string must also be buildable as a whole (the
    // restrictions' purposes and vendors).
    if let Err(e) = build(&params, &Choices::default(), DateTime::<Utc>::UNIX_EPOCH) {
        errors.add(tcf_path, e.to_string());
        return None;
    }
    Some(params)
}

/// An integer field from `min` to `max`; `null` counts as absent.
fn integer(
    f: &Fields<'_, '_>,
    key: &str,
    min: u16,
    max: u16,
    errors: &mut FieldErrors,
) -> Option<u16> {
    match f.get(key)? {
        Value::Null => None,
        Value::Number(n) => match n.as_u64() {
            Some(v) if (u64::from(min)..=u64::from(max)).contains(&v) => Some(v as u16),
            _ => {
                errors.add(
                    f.child(key),
                    format!("must be an integer from {min} to {max}, not {n}"),
                );
                None
            }
        },
        other => {
            errors.add(
                f.child(key),
                format!(
                    "must be an integer from {min} to {max}, not {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// A two-letter code field; `null` counts as absent.
fn alpha2(f: &Fields<'_, '_>, key: &str, errors: &mut FieldErrors) -> Option<Alpha2> {
    let s = f.string(key, errors)?;
    match s.parse::<Alpha2>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.add(f.child(key), "must be two letters A to Z, such as EN");
            None
        }
    }
}

/// Checks a TC string sent by a client (`consents.tcfcs`); the error says why it is not one.
pub fn check_tc_string(tcfcs: &str) -> Result<(), String> {
    assent_tcf::decode(tcfcs)
        .map(|_| ())
        .map_err(|e| format!("is not a valid TCF v2 consent string: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consents::{Consents, PurposeChoice, Vendors};
    use serde_json::json;

    fn stamp(at: i64, seq: i64) -> Stamp {
        Stamp { at, seq }
    }

    fn purposes(list: &[(&str, Option<bool>, Option<bool>)]) -> Consents {
        Consents {
            purposes: list
                .iter()
                .map(|(id, enabled, enabled_li)| PurposeChoice {
                    id: (*id).into(),
                    enabled: *enabled,
                    enabled_li: *enabled_li,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn parse(iab: Value) -> (Option<TcfParams>, FieldErrors) {
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        let params = parse_params(Some(&iab), root.key("iab"), &mut errors);
        (params, errors)
    }

    #[test]
    fn the_default_map_is_didomis() {
        let map = PurposeMap::default();
        assert_eq!(map.purpose("cookies"), Some(1));
        assert_eq!(map.purpose("use_limited_data_to_select_content"), Some(11));
        assert_eq!(map.special_feature("device_characteristics"), Some(2));
        assert_eq!(map.purpose("newsletter"), None);
    }

    #[test]
    fn a_map_file_is_read_and_checked() {
        let map = PurposeMap::from_json(r#"{"purposes": {"ads": 2}}"#).unwrap();
        assert_eq!(map.purpose("ads"), Some(2));
        assert_eq!(map.purpose("cookies"), None);
        for (text, says) in [
            (r#"{"purposes": {"ads": 25}}"#, "numbered 1 to 24"),
            (r#"{"purposes": {"ads": 0}}"#, "numbered 1 to 24"),
            (
                r#"{"purposes": {}, "special_features": {"geo": 13}}"#,
                "1 to 12",
            ),
            (
                r#"{"purposes": {"a": 1}, "special_features": {"a": 1}}"#,
                "both",
            ),
            (r#"{"purposes": {"a": 1}, "vendors": {}}"#, "unknown field"),
            (r#"{"special_features": {}}"#, "missing field `purposes`"),
            (r#"{"purposes": {"a": "1"}}"#, "invalid type"),
            ("not json", "expected"),
        ] {
            let err = PurposeMap::from_json(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn vendor_ids_are_iab_ids_with_or_without_prefix() {
        assert_eq!(iab_vendor_id("iab:755"), Some(755));
        assert_eq!(iab_vendor_id("28"), Some(28));
        for other in [
            "google",
            "iab:",
            "iab:0",
            "0",
            "iab:70000",
            "iab:-1",
            "iab: 3",
        ] {
            assert_eq!(iab_vendor_id(other), None, "{other}");
        }
    }

    #[test]
    fn choices_map_purposes_features_and_vendors() {
        let mut s = ConsentStatus::default();
        let mut consents = purposes(&[
            ("cookies", Some(true), None),
            ("select_basic_ads", Some(false), Some(true)),
            ("market_research", Some(true), Some(false)),
            ("geolocation_data", Some(true), None),
            ("device_characteristics", Some(false), None),
            ("newsletter", Some(true), Some(true)),
        ]);
        consents.vendors = Vendors {
            enabled: vec!["iab:755".into(), "google".into()],
            disabled: vec!["28".into()],
            enabled_li: vec!["iab:28".into()],
            disabled_li: vec!["iab:91".into()],
        };
        s.merge(&consents, stamp(1_000, 1));
        let (c, newest) = choices(&s, &PurposeMap::default());
        assert_eq!(c.purpose_consents, vec![1, 9]);
        assert_eq!(c.purpose_legitimate_interests, vec![2]);
        assert_eq!(c.special_features, vec![1]);
        assert_eq!(c.vendor_consents, vec![755]);
        assert_eq!(c.vendor_legitimate_interests, vec![28]);
        assert_eq!(c.vendors_disclosed, vec![28, 91, 755]);
        assert_eq!(newest, Some(stamp(1_000, 1)));
    }

    #[test]
    fn the_newest_choice_wins_among_ids_of_one_number() {
        let mut s = ConsentStatus::default();
        let on = Consents {
            vendors: Vendors {
                enabled: vec!["iab:28".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let off = Consents {
            vendors: Vendors {
                disabled: vec!["28".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        s.merge(&off, stamp(200, 2));
        s.merge(&on, stamp(100, 1));
        assert!(
            choices(&s, &PurposeMap::default())
                .0
                .vendor_consents
                .is_empty()
        );
        s.merge(&on, stamp(300, 3));
        assert_eq!(
            choices(&s, &PurposeMap::default()).0.vendor_consents,
            vec![28]
        );
    }

    #[test]
    fn params_take_the_defaults_of_the_contract() {
        let (params, errors) = parse(json!({"tcf": {"cmp_id": 300}}));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(params, Some(TcfParams::new(300)));
        let (params, errors) = parse(json!({"tcf": {"cmp_id": 300, "cmp_version": 7,
            "consent_language": "fr", "publisher_cc": "DE", "tcf_policy_version": 4,
            "publisher_restrictions": [{"purpose_id": 2, "restriction_type": "require_consent",
                                        "vendors": [1, 2]}]}}));
        assert!(errors.is_empty(), "{errors:?}");
        let p = params.unwrap();
        assert_eq!((p.cmp_version, p.tcf_policy_version), (7, 4));
        assert_eq!(p.consent_language.as_str(), "FR");
        assert_eq!(p.publisher_restrictions.len(), 1);
    }

    #[test]
    fn a_missing_cmp_id_is_reported_at_its_path() {
        for iab in [
            json!({}),
            json!({"tcf": {}}),
            json!({"tcf": null}),
            json!({"tcf": {"cmp_id": null}}),
        ] {
            let (params, errors) = parse(iab.clone());
            assert!(params.is_none());
            assert!(
                errors.as_map().contains_key("iab.tcf.cmp_id"),
                "{iab}: {errors:?}"
            );
        }
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        let batch = root.index(3);
        assert!(parse_params(None, batch.key("iab"), &mut errors).is_none());
        assert!(
            errors.as_map().contains_key("[3].iab.tcf.cmp_id"),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_params_are_reported_field_by_field() {
        let (params, errors) = parse(json!({"tcf": {"cmp_id": 1, "consent_screen": 64,
            "consent_language": "english", "use_non_standard_texts": "no",
            "publisher_restrictions": [{"purpose_id": 1}], "cmp": 3}, "gpp": {}}));
        assert!(params.is_none());
        let map = errors.as_map();
        for path in [
            "iab.tcf.cmp_id",
            "iab.tcf.consent_screen",
            "iab.tcf.consent_language",
            "iab.tcf.use_non_standard_texts",
            "iab.tcf.publisher_restrictions",
            "iab.tcf.cmp",
            "iab.gpp",
        ] {
            assert!(map.contains_key(path), "{path} missing from {map:?}");
        }
        assert!(map["iab.tcf.cmp_id"].contains("2 to 4095"));
        let (_, errors) = parse(json!({"tcf": {"cmp_id": 10, "publisher_restrictions":
            [{"purpose_id": 30, "restriction_type": "not_allowed", "vendors": [1]}]}}));
        assert!(errors.as_map().contains_key("iab.tcf"), "{errors:?}");
    }

    #[test]
    fn a_generated_string_decodes_to_the_status() {
        let mut s = ConsentStatus::default();
        s.merge(
            &purposes(&[
                ("cookies", Some(true), None),
                ("measure_ad_performance", None, Some(true)),
            ]),
            stamp(1_717_400_000_000, 1),
        );
        let request = TcfRequest {
            params: TcfParams::new(300),
            map: Arc::new(PurposeMap::default()),
        };
        let tc = request.generate(&s, Timestamp::from_millis(0)).unwrap();
        let m = assent_tcf::decode(&tc).unwrap();
        assert_eq!(m.cmp_id, 300);
        assert_eq!(m.purpose_consents.iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            m.purpose_legitimate_interests.iter().collect::<Vec<_>>(),
            vec![7]
        );
        // The day of the newest choice (2024-06-03), not of `now`.
        assert_eq!(
            m.last_updated.to_datetime().unwrap().to_rfc3339(),
            "2024-06-03T00:00:00+00:00"
        );
        let empty = request
            .generate(
                &ConsentStatus::default(),
                Timestamp::from_millis(86_400_000),
            )
            .unwrap();
        let m = assent_tcf::decode(&empty).unwrap();
        assert!(m.purpose_consents.is_empty() && m.vendor_consents.is_empty());
        assert_eq!(
            m.created.to_datetime().unwrap().to_rfc3339(),
            "1970-01-02T00:00:00+00:00"
        );
    }

    fn inputs(body: Value, generate: bool) -> Vec<EventInput> {
        let ctx = crate::event::ParseContext {
            organization_id: crate::ids::OrganizationId::parse("acme").unwrap(),
            now: Timestamp::from_millis(10_000),
            generate_tcfcs: generate.then(|| Arc::new(PurposeMap::default())),
            purpose_map: Arc::new(PurposeMap::default()),
        };
        crate::event::parse_batch(&body, &ctx).unwrap().events
    }

    fn consented(input: &EventInput) -> Vec<u8> {
        let tc = input
            .body
            .consents
            .tcfcs
            .as_deref()
            .expect("a string was generated");
        assent_tcf::decode(tc)
            .unwrap()
            .purpose_consents
            .iter()
            .collect()
    }

    #[test]
    fn each_string_encodes_the_status_once_its_event_is_folded() {
        let iab = json!({"tcf": {"cmp_id": 300}});
        let mut events = inputs(
            json!([
                {"consents": {"purposes": [{"id": "cookies", "enabled": true}]}, "iab": iab},
                {"status": "pending_approval", "iab": iab,
                 "consents": {"purposes": [{"id": "select_basic_ads", "enabled": true}]}},
                {"consents": {"purposes": [{"id": "market_research", "enabled": true}]}, "iab": iab},
                {"regulation": "ccpa", "iab": iab,
                 "consents": {"purposes": [{"id": "improve_products", "enabled": true}]}},
                {"user": {"id": "other"}, "iab": iab,
                 "consents": {"purposes": [{"id": "measure_ad_performance", "enabled": true}]}},
            ]),
            true,
        );
        // User 1 already refused cookies (newer than the first event) and accepted purpose 8.
        let mut before = ConsentStatus::default();
        before.merge(
            &purposes(&[
                ("cookies", Some(false), None),
                ("measure_content_performance", Some(true), None),
            ]),
            stamp(5_000, 1),
        );
        let mut asked = Vec::new();
        generate_for_events(
            events.iter_mut().enumerate().map(|(i, e)| {
                let key = if i == 4 { 2 } else { 1 };
                (key, stamp(1_000 + i as i64, 10 + i as i64), e)
            }),
            Timestamp::from_millis(10_000),
            |key, regulation| {
                asked.push((key, regulation.to_string()));
                Ok::<_, DomainError>(
                    (key == 1 && regulation.as_str() == "gdpr").then(|| before.clone()),
                )
            },
        )
        .unwrap();
        // The back-dated cookie consent does not override the newer refusal.
        assert_eq!(consented(&events[0]), vec![8]);
        // A pending event's string holds its own choice...
        assert_eq!(consented(&events[1]), vec![2, 8]);
        // ...which the later events do not see; they see the earlier confirmed ones.
        assert_eq!(consented(&events[2]), vec![8, 9]);
        assert_eq!(consented(&events[3]), vec![10]);
        assert_eq!(consented(&events[4]), vec![7]);
        assert_eq!(
            asked,
            vec![(1, "gdpr".into()), (1, "ccpa".into()), (2, "gdpr".into())]
        );
        // The stored form follows.
        let stored: EventBodyJson = serde_json::from_slice(&events[2].body_json).unwrap();
        assert_eq!(stored.consents.tcfcs, events[2].body.consents.tcfcs);
    }

    #[derive(Deserialize)]
    struct EventBodyJson {
        consents: crate::consents::Consents,
    }

    #[test]
    fn nothing_is_read_when_no_event_asks() {
        let mut events = inputs(json!([{"user": {"id": "u"}}]), false);
        generate_for_events(
            events.iter_mut().map(|e| (1, stamp(1, 1), e)),
            Timestamp::from_millis(0),
            |_, _| -> Result<Option<ConsentStatus>, DomainError> { panic!("no status needed") },
        )
        .unwrap();
        assert_eq!(events[0].body.consents.tcfcs, None);
    }

    #[test]
    fn client_strings_are_decoded() {
        let tc = TcfRequest {
            params: TcfParams::new(10),
            map: Arc::new(PurposeMap::default()),
        }
        .generate(&ConsentStatus::default(), Timestamp::from_millis(0))
        .unwrap();
        assert_eq!(check_tc_string(&tc), Ok(()));
        for bad in [
            "CQ",
            "not-a-tc-string",
            "!!!!",
            "DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
        ] {
            let err = check_tc_string(bad).unwrap_err();
            assert!(
                err.starts_with("is not a valid TCF v2 consent string: "),
                "{err}"
            );
        }
    }
}
