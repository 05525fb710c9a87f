//! A user's status written as JSON straight from its stamped form, in the exact shape of
//! [`ConsentsView`](super::ConsentsView) and [`UserView`](crate::user::UserView), without
//! building those views first: change bodies show a user at each of its changes, and the views
//! cost a copy of every id, key and value.

use super::{
    ChannelState, ConsentStatus, Leaf, PreferenceState, Profile, PurposeState, SmallMap,
    StampedMap, UserState,
};
use crate::ids::Regulation;
use crate::user::UserRecord;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde_json::Value;

/// `user` as [`UserRecord::view`] shows it under `regulation`, written without the view.
pub struct UserJson<'a> {
    /// The user.
    pub user: &'a UserRecord,
    /// The regulation whose status is shown.
    pub regulation: &'a Regulation,
}

impl Serialize for UserJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let u = self.user;
        let state = &u.state;
        // The profile: event values and direct edits, newest winning. Direct edits are rare;
        // without them the event values are shown as they are.
        let merged;
        let profile = if state.from_edits == Profile::default() {
            &state.from_events
        } else {
            merged = state.from_events.overlaid(&state.from_edits);
            &merged
        };
        let mut out = s.serialize_struct("UserView", 10)?;
        out.serialize_field("id", &u.id)?;
        out.serialize_field("organization_id", u.organization_id.as_str())?;
        match &u.organization_user_id {
            Some(ouid) => out.serialize_field("organization_user_id", ouid)?,
            None => out.skip_field("organization_user_id")?,
        }
        out.serialize_field("version", &u.version)?;
        out.serialize_field("created_at", &u.created_at.to_rfc3339())?;
        out.serialize_field("updated_at", &u.updated_at.to_rfc3339())?;
        out.serialize_field("metadata", &Keys(&profile.metadata))?;
        match &profile.country {
            Some(Leaf(c, _)) => out.serialize_field("country", c)?,
            None => out.skip_field("country")?,
        }
        match &profile.last_seen_country {
            Some(Leaf(c, _)) => out.serialize_field("last_seen_country", c)?,
            None => out.skip_field("last_seen_country")?,
        }
        out.serialize_field("consents", &state.status_json(self.regulation))?;
        out.end()
    }
}

/// A status as [`UserState::status`] shows it, written without the view.
pub struct ConsentsJson<'a> {
    status: Option<&'a ConsentStatus>,
    tcfcs: Option<&'a str>,
}

impl UserState {
    /// The status under `regulation`, to be written as JSON: the same JSON as
    /// [`UserState::status`], without building it.
    pub fn status_json(&self, regulation: &Regulation) -> ConsentsJson<'_> {
        let status = self.statuses.get(regulation);
        let mut tcfcs = status.and_then(|s| s.tcfcs.as_ref()).map(|l| l.0.as_str());
        if let Some(Leaf(edit, stamp)) = self.tcfcs_edits.get(regulation)
            && status
                .and_then(ConsentStatus::tcfcs_stamp)
                .is_none_or(|s| s < *stamp)
        {
            tcfcs = Some(edit);
        }
        ConsentsJson { status, tcfcs }
    }
}

impl Serialize for ConsentsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let empty = ConsentStatus::default();
        let status = self.status.unwrap_or(&empty);
        let mut out = s.serialize_struct("ConsentsView", 4)?;
        out.serialize_field("purposes", &Purposes(&status.purposes))?;
        out.serialize_field("channels", &Channels(&status.channels))?;
        out.serialize_field("vendors", &Vendors(status))?;
        match self.tcfcs {
            Some(t) => out.serialize_field("tcfcs", t)?,
            None => out.skip_field("tcfcs")?,
        }
        out.end()
    }
}

/// Writes field `key` unless it is `empty` (the views skip empty maps and lists).
fn unless_empty<S: SerializeStruct>(
    out: &mut S,
    key: &'static str,
    empty: bool,
    value: &impl Serialize,
) -> Result<(), S::Error> {
    if empty {
        out.skip_field(key)
    } else {
        out.serialize_field(key, value)
    }
}

/// Metadata keys without the removed ones (set to `null`), as `render_keys` shows them.
struct Keys<'a>(&'a StampedMap<Value>);

impl Keys<'_> {
    fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, Leaf(v, _))| v.is_null())
    }
}

impl Serialize for Keys<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_map(None)?;
        for (k, Leaf(v, _)) in self.0.iter() {
            if !v.is_null() {
                out.serialize_entry(k, v)?;
            }
        }
        out.end()
    }
}

struct Purposes<'a>(&'a SmallMap<String, PurposeState>);

impl Serialize for Purposes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_seq(Some(self.0.len()))?;
        for (id, p) in self.0.iter() {
            out.serialize_element(&Purpose(id, p))?;
        }
        out.end()
    }
}

struct Purpose<'a>(&'a str, &'a PurposeState);

impl Serialize for Purpose<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.1;
        let mut out = s.serialize_struct("PurposeView", 7)?;
        out.serialize_field("id", self.0)?;
        out.serialize_field("enabled", &p.enabled.as_ref().map(|l| l.0))?;
        out.serialize_field("enabled_li", &p.enabled_li.as_ref().map(|l| l.0))?;
        let metadata = Keys(&p.metadata);
        unless_empty(&mut out, "metadata", metadata.is_empty(), &metadata)?;
        unless_empty(&mut out, "values", p.values.is_empty(), &Values(&p.values))?;
        let preferences = Preferences(&p.preferences);
        unless_empty(
            &mut out,
            "preferences",
            p.preferences.is_empty(),
            &preferences,
        )?;
        unless_empty(
            &mut out,
            "channels",
            p.channels.is_empty(),
            &Channels(&p.channels),
        )?;
        out.end()
    }
}

struct Values<'a>(&'a StampedMap<String>);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Value<'a>(&'a str);
        impl Serialize for Value<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut out = s.serialize_struct("PreferenceValue", 1)?;
                out.serialize_field("value", self.0)?;
                out.end()
            }
        }
        let mut out = s.serialize_map(Some(self.0.len()))?;
        for (k, Leaf(v, _)) in self.0.iter() {
            out.serialize_entry(k, &Value(v))?;
        }
        out.end()
    }
}

struct Preferences<'a>(&'a SmallMap<String, PreferenceState>);

impl Serialize for Preferences<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Preference<'a>(&'a str, &'a PreferenceState);
        impl Serialize for Preference<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let p = self.1;
                let mut out = s.serialize_struct("PreferenceView", 4)?;
                out.serialize_field("id", self.0)?;
                out.serialize_field("enabled", &p.enabled.as_ref().map(|l| l.0))?;
                let metadata = Keys(&p.metadata);
                unless_empty(&mut out, "metadata", metadata.is_empty(), &metadata)?;
                unless_empty(
                    &mut out,
                    "channels",
                    p.channels.is_empty(),
                    &Channels(&p.channels),
                )?;
                out.end()
            }
        }
        let mut out = s.serialize_seq(Some(self.0.len()))?;
        for (id, p) in self.0.iter() {
            out.serialize_element(&Preference(id, p))?;
        }
        out.end()
    }
}

struct Channels<'a>(&'a SmallMap<String, ChannelState>);

impl Serialize for Channels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Channel<'a>(&'a str, &'a ChannelState);
        impl Serialize for Channel<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let c = self.1;
                let mut out = s.serialize_struct("ChannelView", 3)?;
                out.serialize_field("id", self.0)?;
                out.serialize_field("enabled", &c.enabled.as_ref().map(|l| l.0))?;
                let metadata = Keys(&c.metadata);
                unless_empty(&mut out, "metadata", metadata.is_empty(), &metadata)?;
                out.end()
            }
        }
        let mut out = s.serialize_seq(Some(self.0.len()))?;
        for (id, c) in self.0.iter() {
            out.serialize_element(&Channel(id, c))?;
        }
        out.end()
    }
}

/// The four vendor lists of a status, each in vendor order.
struct Vendors<'a>(&'a ConsentStatus);

impl Serialize for Vendors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The vendors whose choice `pick` is `wanted`.
        struct List<'a> {
            status: &'a ConsentStatus,
            legitimate_interest: bool,
            wanted: bool,
        }
        impl Serialize for List<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut out = s.serialize_seq(None)?;
                for (id, v) in self.status.vendors.iter() {
                    let choice = if self.legitimate_interest {
                        &v.enabled_li
                    } else {
                        &v.enabled
                    };
                    if choice.as_ref().is_some_and(|l| l.0 == self.wanted) {
                        out.serialize_element(id)?;
                    }
                }
                out.end()
            }
        }
        let list = |legitimate_interest, wanted| List {
            status: self.0,
            legitimate_interest,
            wanted,
        };
        let mut out = s.serialize_struct("VendorsView", 4)?;
        out.serialize_field("enabled", &list(false, true))?;
        out.serialize_field("disabled", &list(false, false))?;
        out.serialize_field("enabled_li", &list(true, true))?;
        out.serialize_field("disabled_li", &list(true, false))?;
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;
    use crate::ids::OrganizationId;
    use crate::status::Stamp;
    use crate::time::Timestamp;
    use proptest::prelude::*;
    use serde_json::json;

    fn user(state: UserState, organization_user_id: Option<&str>) -> UserRecord {
        UserRecord {
            id: "u-1".into(),
            organization_id: OrganizationId::parse("org-a").expect("valid"),
            organization_user_id: organization_user_id.map(str::to_owned),
            version: 7,
            created_at: Timestamp::from_millis(1_700_000_000_000),
            updated_at: Timestamp::from_millis(1_700_000_123_456),
            state,
        }
    }

    fn body(value: serde_json::Value) -> EventBody {
        serde_json::from_value(value).expect("an event body")
    }

    /// The JSON written without the view equals the view's, under every regulation the user
    /// has and one it has not.
    fn assert_same_as_view(user: &UserRecord) {
        for regulation in ["gdpr", "ccpa", "none", "lgpd"] {
            let regulation = Regulation::parse(regulation).expect("known");
            let direct = serde_json::to_vec(&UserJson {
                user,
                regulation: &regulation,
            })
            .expect("serializes");
            let view = serde_json::to_vec(&user.view(&regulation)).expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&view),
                "under {regulation:?}"
            );
        }
    }

    #[test]
    fn an_empty_user_is_written_as_its_view() {
        assert_same_as_view(&user(UserState::default(), None));
    }

    #[test]
    fn a_rich_user_is_written_as_its_view() {
        let mut state = UserState::default();
        let gdpr = Regulation::parse("gdpr").expect("known");
        let ccpa = Regulation::parse("ccpa").expect("known");
        state.apply(
            &gdpr,
            &body(json!({
                "user": {"metadata": {"plan": "pro", "gone": "soon", "n": 3}, "country": "FR",
                         "last_seen_country": "DE"},
                "consents": {
                    "purposes": [
                        {"id": "news", "enabled": true, "enabled_li": false,
                         "metadata": {"src": "form", "x\"y": "q\\uote"},
                         "values": {"topics": {"value": "tech,sport"}, "freq": {"value": "daily"}},
                         "preferences": [{"id": "p1", "enabled": true, "metadata": {"a": 1},
                                          "channels": [{"id": "email", "enabled": false}]},
                                         {"id": "p0"}],
                         "channels": [{"id": "sms", "enabled": true, "metadata": {"k": [1, 2]}}]},
                        {"id": "ads"},
                        {"id": "analytics", "enabled": false}
                    ],
                    "channels": [{"id": "push", "enabled": true}, {"id": "mail", "metadata": {"m": null}}],
                    "vendors": {"enabled": ["v2", "v1"], "disabled": ["v3"],
                                "enabled_li": ["v1"], "disabled_li": ["v4", "v2"]},
                    "tcfcs": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
                }
            })),
            Stamp { at: 100, seq: 1 },
        );
        state.apply(
            &gdpr,
            &body(json!({
                "user": {"metadata": {"gone": null}},
                "consents": {"purposes": [{"id": "news", "metadata": {"src": null}}]}
            })),
            Stamp { at: 200, seq: 2 },
        );
        state.apply(
            &ccpa,
            &body(json!({"consents": {"purposes": [{"id": "sale", "enabled": false}]}})),
            Stamp { at: 150, seq: 3 },
        );
        assert_same_as_view(&user(state.clone(), Some("crm-42")));

        // Direct edits: metadata, country and a TCF string newer than the events'.
        state.edit_profile(
            serde_json::from_value(json!({"plan": "team", "extra": true}))
                .ok()
                .as_ref(),
            Some("ES"),
            None,
            Stamp { at: 300, seq: 4 },
        );
        state.edit_tcfcs(&gdpr, "edited".into(), Stamp { at: 400, seq: 5 });
        assert_same_as_view(&user(state, None));
    }

    fn choice() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![Just(json!(null)), Just(json!(true)), Just(json!(false))]
    }

    proptest! {
        #[test]
        fn any_fold_is_written_as_its_view(
            events in proptest::collection::vec(
                (0..4usize, choice(), choice(), 0..3usize, choice(), proptest::option::of("[a-c]{1,2}")),
                0..8,
            )
        ) {
            let mut state = UserState::default();
            let regulations = ["gdpr", "ccpa"];
            for (i, (p, enabled, li, v, channel, meta)) in events.into_iter().enumerate() {
                let regulation = Regulation::parse(regulations[i % 2]).expect("known");
                let metadata = meta.map(|m| json!({ m: if i % 3 == 0 { json!(null) } else { json!(i) } }));
                let vendor = format!("v{v}");
                let vendors = match (i % 4, &enabled) {
                    (0, _) => json!({"enabled": [vendor]}),
                    (1, _) => json!({"disabled": [vendor]}),
                    (2, _) => json!({"enabled_li": [vendor]}),
                    _ => json!({"disabled_li": [vendor]}),
                };
                state.apply(
                    &regulation,
                    &body(json!({
                        "user": {"metadata": metadata},
                        "consents": {
                            "purposes": [{"id": format!("p{p}"), "enabled": enabled, "enabled_li": li,
                                          "metadata": metadata,
                                          "channels": [{"id": "email", "enabled": channel}]}],
                            "channels": [{"id": format!("c{v}"), "enabled": channel}],
                            "vendors": vendors
                        }
                    })),
                    Stamp { at: (i as i64 * 37) % 11, seq: i as i64 },
                );
            }
            assert_same_as_view(&user(state, None));
        }
    }
}
