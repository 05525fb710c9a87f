//! The merge rules: how consent events fold into a user's consent status.
//!
//! Every leaf of a status (a purpose's `enabled`, a channel, a vendor, a metadata key, ...)
//! remembers the [`Stamp`] of the event that set it, and an event only overwrites leaves with an
//! older stamp. Merging is therefore commutative and idempotent: applying a set of events in any
//! order, any number of times, gives the fold of the events sorted by stamp.

use crate::consents::{ChannelChoice, Consents, Metadata, PreferenceValue};
use crate::event::EventBody;
use crate::ids::Regulation;
use litemap::LiteMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

mod json;
pub use json::{ConsentsJson, UserJson};

/// Where an event sits in the fold order: its `created_at`, then its arrival sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "(i64, i64)", into = "(i64, i64)")]
pub struct Stamp {
    /// The event's `created_at`, in milliseconds since the epoch.
    pub at: i64,
    /// The order in which the store received the event; unique per store.
    pub seq: i64,
}

impl From<(i64, i64)> for Stamp {
    fn from((at, seq): (i64, i64)) -> Self {
        Stamp { at, seq }
    }
}

impl From<Stamp> for (i64, i64) {
    fn from(s: Stamp) -> Self {
        (s.at, s.seq)
    }
}

/// A value together with the stamp of the event that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaf<T>(pub T, pub Stamp);

/// Sets `slot` to `value` unless it already holds a value set by a newer (or the same) event.
fn set<T>(slot: &mut Option<Leaf<T>>, value: T, stamp: Stamp) {
    if slot.as_ref().is_none_or(|Leaf(_, old)| *old < stamp) {
        *slot = Some(Leaf(value, stamp));
    }
}

/// Sets `slot` when the event made a choice (`Some`); `None` leaves the earlier choice.
fn choose(slot: &mut Option<Leaf<bool>>, choice: Option<bool>, stamp: Stamp) {
    if let Some(value) = choice {
        set(slot, value, stamp);
    }
}

/// A small map kept as a sorted vector: a user's status holds many maps of a few entries, and
/// a tree node per map would cost ten times the memory.
pub type SmallMap<K, V> = LiteMap<K, V>;

/// Stamped values by key, as metadata objects and preference values are kept.
pub type StampedMap<T> = SmallMap<String, Leaf<T>>;

/// The entry for `key`, inserted empty if missing.
fn slot<'a, V: Default>(map: &'a mut SmallMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Sets `map[key]` to `value` unless a newer (or the same) event set it.
fn set_key<T>(map: &mut StampedMap<T>, key: &str, value: T, stamp: Stamp) {
    match map.get_mut(key) {
        Some(Leaf(old, old_stamp)) => {
            if *old_stamp < stamp {
                *old = value;
                *old_stamp = stamp;
            }
        }
        None => {
            map.insert(key.to_owned(), Leaf(value, stamp));
        }
    }
}

fn merge_keys(map: &mut StampedMap<Value>, metadata: Option<&Metadata>, stamp: Stamp) {
    for (key, value) in metadata.into_iter().flatten() {
        set_key(map, key, value.clone(), stamp);
    }
}

fn render_keys(map: &StampedMap<Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(_, Leaf(v, _))| !v.is_null())
        .map(|(k, Leaf(v, _))| (k.clone(), v.clone()))
        .collect()
}

/// The status of one channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelState {
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none")]
    enabled: Option<Leaf<bool>>,
    #[serde(default, rename = "m", skip_serializing_if = "SmallMap::is_empty")]
    metadata: StampedMap<Value>,
}

fn merge_channels(
    map: &mut SmallMap<String, ChannelState>,
    channels: &[ChannelChoice],
    stamp: Stamp,
) {
    for c in channels {
        let state = slot(map, &c.id);
        choose(&mut state.enabled, c.enabled, stamp);
        merge_keys(&mut state.metadata, c.metadata.as_ref(), stamp);
    }
}

fn render_channels(map: &SmallMap<String, ChannelState>) -> Vec<ChannelView> {
    map.iter()
        .map(|(id, c)| ChannelView {
            id: id.clone(),
            enabled: c.enabled.as_ref().map(|l| l.0),
            metadata: render_keys(&c.metadata),
        })
        .collect()
}

/// The status of one v1 preference of a purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreferenceState {
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none")]
    enabled: Option<Leaf<bool>>,
    #[serde(default, rename = "m", skip_serializing_if = "SmallMap::is_empty")]
    metadata: StampedMap<Value>,
    #[serde(default, rename = "c", skip_serializing_if = "SmallMap::is_empty")]
    channels: SmallMap<String, ChannelState>,
}

/// The status of one purpose.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PurposeState {
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none")]
    enabled: Option<Leaf<bool>>,
    #[serde(default, rename = "li", skip_serializing_if = "Option::is_none")]
    enabled_li: Option<Leaf<bool>>,
    #[serde(default, rename = "m", skip_serializing_if = "SmallMap::is_empty")]
    metadata: StampedMap<Value>,
    #[serde(default, rename = "v", skip_serializing_if = "SmallMap::is_empty")]
    values: StampedMap<String>,
    #[serde(default, rename = "p", skip_serializing_if = "SmallMap::is_empty")]
    preferences: SmallMap<String, PreferenceState>,
    #[serde(default, rename = "c", skip_serializing_if = "SmallMap::is_empty")]
    channels: SmallMap<String, ChannelState>,
}

/// The status of one vendor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VendorState {
    #[serde(default, rename = "e", skip_serializing_if = "Option::is_none")]
    enabled: Option<Leaf<bool>>,
    #[serde(default, rename = "li", skip_serializing_if = "Option::is_none")]
    enabled_li: Option<Leaf<bool>>,
}

/// A user's consent status under one regulation, with the stamp of every leaf.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsentStatus {
    #[serde(default, rename = "p", skip_serializing_if = "SmallMap::is_empty")]
    purposes: SmallMap<String, PurposeState>,
    #[serde(default, rename = "c", skip_serializing_if = "SmallMap::is_empty")]
    channels: SmallMap<String, ChannelState>,
    #[serde(default, rename = "v", skip_serializing_if = "SmallMap::is_empty")]
    vendors: SmallMap<String, VendorState>,
    #[serde(default, rename = "t", skip_serializing_if = "Option::is_none")]
    tcfcs: Option<Leaf<String>>,
}

impl ConsentStatus {
    /// Merges the choices of one event, stamped `stamp`, into this status.
    pub fn merge(&mut self, consents: &Consents, stamp: Stamp) {
        for p in &consents.purposes {
            let state = slot(&mut self.purposes, &p.id);
            choose(&mut state.enabled, p.enabled, stamp);
            choose(&mut state.enabled_li, p.enabled_li, stamp);
            merge_keys(&mut state.metadata, p.metadata.as_ref(), stamp);
            for (pref, PreferenceValue { value }) in &p.values {
                set_key(&mut state.values, pref, value.clone(), stamp);
            }
            for pref in &p.preferences {
                let pstate = slot(&mut state.preferences, &pref.id);
                choose(&mut pstate.enabled, pref.enabled, stamp);
                merge_keys(&mut pstate.metadata, pref.metadata.as_ref(), stamp);
                merge_channels(&mut pstate.channels, &pref.channels, stamp);
            }
            merge_channels(&mut state.channels, &p.channels, stamp);
        }
        merge_channels(&mut self.channels, &consents.channels, stamp);
        let v = &consents.vendors;
        for (ids, value, li) in [
            (&v.enabled, true, false),
            (&v.disabled, false, false),
            (&v.enabled_li, true, true),
            (&v.disabled_li, false, true),
        ] {
            for id in ids {
                let state = slot(&mut self.vendors, id);
                let slot = if li {
                    &mut state.enabled_li
                } else {
                    &mut state.enabled
                };
                set(slot, value, stamp);
            }
        }
        if let Some(tcfcs) = &consents.tcfcs {
            set(&mut self.tcfcs, tcfcs.clone(), stamp);
        }
    }

    /// Each purpose's consent and legitimate-interest choices, with the stamps of the events
    /// that made them (what a TCF string encodes).
    pub(crate) fn purpose_choices(&self) -> impl Iterator<Item = (&str, StampedChoices)> + '_ {
        self.purposes.iter().map(|(id, p)| {
            (
                id.as_str(),
                StampedChoices {
                    consent: stamped(&p.enabled),
                    legitimate_interest: stamped(&p.enabled_li),
                },
            )
        })
    }

    /// Each vendor's consent and legitimate-interest choices, with their stamps.
    pub(crate) fn vendor_choices(&self) -> impl Iterator<Item = (&str, StampedChoices)> + '_ {
        self.vendors.iter().map(|(id, v)| {
            (
                id.as_str(),
                StampedChoices {
                    consent: stamped(&v.enabled),
                    legitimate_interest: stamped(&v.enabled_li),
                },
            )
        })
    }

    /// The stamp of the event that set the TCF string, if one did.
    fn tcfcs_stamp(&self) -> Option<Stamp> {
        self.tcfcs.as_ref().map(|l| l.1)
    }

    /// The status as the API shows it, without stamps.
    pub fn view(&self) -> ConsentsView {
        let mut vendors = VendorsView::default();
        for (id, v) in &self.vendors {
            match v.enabled.as_ref().map(|l| l.0) {
                Some(true) => vendors.enabled.push(id.clone()),
                Some(false) => vendors.disabled.push(id.clone()),
                None => {}
            }
            match v.enabled_li.as_ref().map(|l| l.0) {
                Some(true) => vendors.enabled_li.push(id.clone()),
                Some(false) => vendors.disabled_li.push(id.clone()),
                None => {}
            }
        }
        ConsentsView {
            purposes: self
                .purposes
                .iter()
                .map(|(id, p)| PurposeView {
                    id: id.clone(),
                    enabled: p.enabled.as_ref().map(|l| l.0),
                    enabled_li: p.enabled_li.as_ref().map(|l| l.0),
                    metadata: render_keys(&p.metadata),
                    values: p
                        .values
                        .iter()
                        .map(|(k, Leaf(v, _))| (k.clone(), PreferenceValue { value: v.clone() }))
                        .collect(),
                    preferences: p
                        .preferences
                        .iter()
                        .map(|(pid, pref)| PreferenceView {
                            id: pid.clone(),
                            enabled: pref.enabled.as_ref().map(|l| l.0),
                            metadata: render_keys(&pref.metadata),
                            channels: render_channels(&pref.channels),
                        })
                        .collect(),
                    channels: render_channels(&p.channels),
                })
                .collect(),
            channels: render_channels(&self.channels),
            vendors,
            tcfcs: self.tcfcs.as_ref().map(|l| l.0.clone()),
        }
    }
}

/// The consent and legitimate-interest choices of one purpose or vendor, each with the stamp of
/// the event that made it; `None` when no event made that choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StampedChoices {
    /// `enabled`.
    pub consent: Option<(bool, Stamp)>,
    /// `enabled_li`.
    pub legitimate_interest: Option<(bool, Stamp)>,
}

fn stamped(leaf: &Option<Leaf<bool>>) -> Option<(bool, Stamp)> {
    leaf.as_ref().map(|Leaf(v, s)| (*v, *s))
}

/// A user's consent status as the API shows it (`consents` of a user).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentsView {
    /// Purposes the user made choices for, sorted by id.
    pub purposes: Vec<PurposeView>,
    /// Channels outside any purpose, sorted by id.
    pub channels: Vec<ChannelView>,
    /// Vendor choices, each list sorted.
    pub vendors: VendorsView,
    /// The latest TCF consent string, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcfcs: Option<String>,
}

/// A purpose in a user's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurposeView {
    /// Purpose id.
    pub id: String,
    /// Consent; `null` when no choice was made.
    pub enabled: Option<bool>,
    /// Legitimate interest; `false` means the user objected, `null` no choice.
    pub enabled_li: Option<bool>,
    /// Merged metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    /// Selected values per preference.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, PreferenceValue>,
    /// v1 preferences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PreferenceView>,
    /// Channels of the purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelView>,
}

/// A v1 preference in a user's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreferenceView {
    /// Preference id.
    pub id: String,
    /// The choice; `null` when none.
    pub enabled: Option<bool>,
    /// Merged metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
    /// Channels of the preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelView>,
}

/// A channel in a user's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelView {
    /// Channel id.
    pub id: String,
    /// The choice; `null` when none.
    pub enabled: Option<bool>,
    /// Merged metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Map<String, Value>,
}

/// Vendor choices in a user's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorsView {
    /// Vendors given consent.
    pub enabled: Vec<String>,
    /// Vendors refused consent.
    pub disabled: Vec<String>,
    /// Vendors not objected to on legitimate interest.
    pub enabled_li: Vec<String>,
    /// Vendors objected to on legitimate interest.
    pub disabled_li: Vec<String>,
}

/// Profile fields of a user (metadata and countries), with stamps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, rename = "m", skip_serializing_if = "SmallMap::is_empty")]
    metadata: StampedMap<Value>,
    #[serde(default, rename = "c", skip_serializing_if = "Option::is_none")]
    country: Option<Leaf<String>>,
    #[serde(default, rename = "l", skip_serializing_if = "Option::is_none")]
    last_seen_country: Option<Leaf<String>>,
}

impl Profile {
    /// Merges metadata (by key) and countries, stamped `stamp`.
    pub fn merge(
        &mut self,
        metadata: Option<&Metadata>,
        country: Option<&str>,
        last_seen_country: Option<&str>,
        stamp: Stamp,
    ) {
        merge_keys(&mut self.metadata, metadata, stamp);
        if let Some(c) = country {
            set(&mut self.country, c.to_owned(), stamp);
        }
        if let Some(c) = last_seen_country {
            set(&mut self.last_seen_country, c.to_owned(), stamp);
        }
    }

    /// This profile with `other` merged in, leaf by leaf, newest stamp winning.
    fn overlaid(&self, other: &Profile) -> Profile {
        let mut out = self.clone();
        for (k, Leaf(v, s)) in other.metadata.iter() {
            set_key(&mut out.metadata, k, v.clone(), *s);
        }
        if let Some(Leaf(v, s)) = &other.country {
            set(&mut out.country, v.clone(), *s);
        }
        if let Some(Leaf(v, s)) = &other.last_seen_country {
            set(&mut out.last_seen_country, v.clone(), *s);
        }
        out
    }
}

/// The profile of a user as the API shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileView {
    /// Merged metadata.
    pub metadata: Map<String, Value>,
    /// ISO 3166-1 alpha-2 country.
    pub country: Option<String>,
    /// Country of the latest event that carried one.
    pub last_seen_country: Option<String>,
}

/// Everything derived about a user: its profile and its consent status per regulation.
///
/// Profile values set by events and by direct edits (`PATCH /consents/users`) are kept apart so
/// that refolding the events (after a deletion, say) keeps the direct edits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    #[serde(default, rename = "pe", skip_serializing_if = "is_default")]
    from_events: Profile,
    #[serde(default, rename = "pp", skip_serializing_if = "is_default")]
    from_edits: Profile,
    #[serde(default, rename = "r", skip_serializing_if = "SmallMap::is_empty")]
    statuses: SmallMap<Regulation, ConsentStatus>,
    /// TCF strings set by user writes (`POST|PATCH /consents/users?$generate_tcfcs=true`) rather
    /// than by events, per regulation; kept apart, like direct profile edits, so that refolds
    /// keep them.
    #[serde(default, rename = "t", skip_serializing_if = "SmallMap::is_empty")]
    tcfcs_edits: SmallMap<Regulation, Leaf<String>>,
}

fn is_default(p: &Profile) -> bool {
    *p == Profile::default()
}

impl UserState {
    /// Applies one confirmed event, stamped `stamp`, under `regulation`. An event under
    /// regulation `none` changes the profile only, never a consent status.
    pub fn apply(&mut self, regulation: &Regulation, body: &EventBody, stamp: Stamp) {
        let user = &body.user;
        self.from_events.merge(
            user.metadata.as_ref(),
            user.country.as_deref(),
            user.last_seen_country.as_deref(),
            stamp,
        );
        if !regulation.changes_status() {
            return;
        }
        if !self.statuses.contains_key(regulation) {
            self.statuses
                .insert(regulation.clone(), ConsentStatus::default());
        }
        self.statuses
            .get_mut(regulation)
            .expect("inserted above")
            .merge(&body.consents, stamp);
    }

    /// Applies a direct edit of the profile, stamped `stamp`.
    pub fn edit_profile(
        &mut self,
        metadata: Option<&Metadata>,
        country: Option<&str>,
        last_seen_country: Option<&str>,
        stamp: Stamp,
    ) {
        self.from_edits
            .merge(metadata, country, last_seen_country, stamp);
    }

    /// The state refolded from `events` (confirmed ones only), keeping direct profile edits.
    pub fn refold<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a Regulation, &'a EventBody, Stamp)>,
    ) -> UserState {
        let mut out = UserState {
            from_edits: self.from_edits.clone(),
            tcfcs_edits: self.tcfcs_edits.clone(),
            ..UserState::default()
        };
        for (regulation, body, stamp) in events {
            out.apply(regulation, body, stamp);
        }
        out
    }

    /// Sets the TCF string of the status under `regulation` by a user write, stamped
    /// `stamp`. Between it and the strings events carry, the newest stamp wins.
    pub fn edit_tcfcs(&mut self, regulation: &Regulation, tcfcs: String, stamp: Stamp) {
        match self.tcfcs_edits.get_mut(regulation) {
            Some(leaf) => {
                if leaf.1 < stamp {
                    *leaf = Leaf(tcfcs, stamp);
                }
            }
            None => {
                self.tcfcs_edits
                    .insert(regulation.clone(), Leaf(tcfcs, stamp));
            }
        }
    }

    /// The status under `regulation` (empty when no event of that regulation was applied).
    pub fn status(&self, regulation: &Regulation) -> ConsentsView {
        let status = self.statuses.get(regulation);
        let mut view = status.map(ConsentStatus::view).unwrap_or_default();
        if let Some(Leaf(tcfcs, stamp)) = self.tcfcs_edits.get(regulation)
            && status
                .and_then(ConsentStatus::tcfcs_stamp)
                .is_none_or(|s| s < *stamp)
        {
            view.tcfcs = Some(tcfcs.clone());
        }
        view
    }

    /// The regulations under which the user has a status, in a stable order.
    pub fn regulations(&self) -> impl Iterator<Item = &Regulation> {
        self.statuses.keys()
    }

    /// The stamped status under `regulation`, if any.
    pub fn stamped_status(&self, regulation: &Regulation) -> Option<&ConsentStatus> {
        self.statuses.get(regulation)
    }

    /// The profile as the API shows it: event values and direct edits, newest winning.
    pub fn profile(&self) -> ProfileView {
        let merged = self.from_events.overlaid(&self.from_edits);
        ProfileView {
            metadata: render_keys(&merged.metadata),
            country: merged.country.map(|l| l.0),
            last_seen_country: merged.last_seen_country.map(|l| l.0),
        }
    }
}

/// The status under `regulation` as it stood at instant `at` (milliseconds): the fold of the
/// given confirmed events of that regulation created at or before `at`.
pub fn status_at<'a>(
    events: impl IntoIterator<Item = (&'a Regulation, &'a EventBody, Stamp)>,
    regulation: &Regulation,
    at: i64,
) -> ConsentsView {
    let mut status = ConsentStatus::default();
    for (r, body, stamp) in events {
        if r == regulation && r.changes_status() && stamp.at <= at {
            status.merge(&body.consents, stamp);
        }
    }
    status.view()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consents::{PurposeChoice, Vendors};

    fn purpose(id: &str, enabled: Option<bool>) -> Consents {
        Consents {
            purposes: vec![PurposeChoice {
                id: id.into(),
                enabled,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn stamp(at: i64, seq: i64) -> Stamp {
        Stamp { at, seq }
    }

    #[test]
    fn late_event_does_not_override_newer_choice() {
        let mut s = ConsentStatus::default();
        s.merge(&purpose("news", Some(false)), stamp(200, 1));
        s.merge(&purpose("news", Some(true)), stamp(100, 2));
        assert_eq!(s.view().purposes[0].enabled, Some(false));
    }

    #[test]
    fn null_choice_keeps_the_earlier_one() {
        let mut s = ConsentStatus::default();
        s.merge(&purpose("news", Some(true)), stamp(100, 1));
        s.merge(&purpose("news", None), stamp(200, 2));
        assert_eq!(s.view().purposes[0].enabled, Some(true));
    }

    #[test]
    fn a_vendor_leaves_disabled_when_enabled() {
        let mut s = ConsentStatus::default();
        let off = Consents {
            vendors: Vendors {
                disabled: vec!["g".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let on = Consents {
            vendors: Vendors {
                enabled: vec!["g".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        s.merge(&off, stamp(100, 1));
        s.merge(&on, stamp(200, 2));
        let v = s.view().vendors;
        assert_eq!(v.enabled, vec!["g"]);
        assert!(v.disabled.is_empty());
    }

    #[test]
    fn same_instant_is_ordered_by_arrival() {
        let mut s = ConsentStatus::default();
        s.merge(&purpose("news", Some(true)), stamp(100, 2));
        s.merge(&purpose("news", Some(false)), stamp(100, 1));
        assert_eq!(s.view().purposes[0].enabled, Some(true));
    }

    #[test]
    fn a_string_set_by_a_user_write_survives_refolds_and_yields_to_newer_events() {
        let gdpr = Regulation::default();
        let with_tcfcs = |t: &str| EventBody {
            consents: Consents {
                tcfcs: Some(t.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let older = with_tcfcs("from-event-1");
        let newer = with_tcfcs("from-event-3");
        let mut s = UserState::default();
        s.apply(&gdpr, &older, stamp(100, 1));
        s.edit_tcfcs(&gdpr, "from-edit-2".into(), stamp(200, 2));
        assert_eq!(s.status(&gdpr).tcfcs.as_deref(), Some("from-edit-2"));
        let refolded = s.refold([(&gdpr, &older, stamp(100, 1))]);
        assert_eq!(refolded.status(&gdpr).tcfcs.as_deref(), Some("from-edit-2"));
        s.apply(&gdpr, &newer, stamp(300, 3));
        assert_eq!(s.status(&gdpr).tcfcs.as_deref(), Some("from-event-3"));
        let ccpa = Regulation::parse("ccpa").unwrap();
        assert_eq!(s.status(&ccpa).tcfcs, None);
        s.edit_tcfcs(&ccpa, "ccpa-edit".into(), stamp(400, 4));
        assert_eq!(s.status(&ccpa).tcfcs.as_deref(), Some("ccpa-edit"));
        let bytes = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<UserState>(&bytes).unwrap(), s);
    }

    #[test]
    fn regulation_none_changes_the_profile_but_no_status() {
        let none = Regulation::parse("none").unwrap();
        let body = EventBody {
            consents: purpose("news", Some(true)),
            user: crate::event::UserRef {
                country: Some("FR".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut s = UserState::default();
        s.apply(&none, &body, stamp(1, 1));
        assert_eq!(s.regulations().count(), 0);
        assert_eq!(s.status(&none), ConsentsView::default());
        assert_eq!(s.profile().country.as_deref(), Some("FR"));
        assert_eq!(
            status_at([(&none, &body, stamp(1, 1))], &none, 10),
            ConsentsView::default()
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = UserState::default();
        let body = EventBody {
            consents: purpose("news", Some(true)),
            ..Default::default()
        };
        s.apply(&Regulation::default(), &body, stamp(1, 1));
        let bytes = serde_json::to_vec(&s).unwrap();
        let back: UserState = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, s);
    }
}
