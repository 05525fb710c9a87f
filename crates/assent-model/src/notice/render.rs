//! Stored events shown in the notice shape (`GET /consents/events?$format=notice`).
//!
//! An event written in the notice shape reads back as it was written: its `events`, `source`,
//! `notice_id` and `user.type`/`region` come from its [`NoticeRecord`](super::NoticeRecord),
//! with dates in UTC millisecond form and the country in upper case. Any other event is shown
//! as well as the shape allows: each purpose choice and each vendor of its lists becomes a
//! `consent.given` or `consent.refused` action (legitimate-interest ones with `legal_basis:
//! legitimate_interest`); channels, preferences and values have no place in the shape and are
//! left out.

use super::{LegalBasis, NoticeAction, NoticeItem, NoticeSource, UserType};
use crate::consents::Consents;
use crate::event::ConsentEvent;
use serde::{Deserialize, Serialize};

/// A consent event in the notice shape of CMP SDKs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeEventView {
    /// Event id.
    pub id: String,
    /// Owning organization.
    pub organization_id: String,
    /// The notice that was shown, if the event came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_id: Option<String>,
    /// The user.
    pub user: NoticeUserView,
    /// Regulation of the event.
    pub regulation: String,
    /// The TCF consent string the event carried (`consents.tcfcs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_string: Option<String>,
    /// The actions.
    pub events: Vec<NoticeItem>,
    /// Where the event came from, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<NoticeSource>,
    /// When the choice was made (RFC 3339, UTC, milliseconds).
    pub created_at: String,
    /// The `updated_at` the notice sent, or else when the event was stored or last changed.
    pub updated_at: String,
}

/// The user of an event in the notice shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeUserView {
    /// The user's id: the resolved user id, or for `type: external` the organization user id.
    pub id: String,
    /// Whose id `id` is; absent when the notice left it out (`didomi`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UserType>,
    /// ISO 3166-1 alpha-2 country of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The user's region, as the notice sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl ConsentEvent {
    /// The event in the notice shape.
    pub fn notice_view(&self) -> NoticeEventView {
        let b = &*self.body;
        let record = b.notice.as_ref();
        let kind = match record {
            Some(r) => r.user_type,
            None => Some(UserType::Didomi),
        };
        let id = match (kind, &b.user.organization_user_id) {
            (Some(UserType::External), Some(ouid)) => ouid.clone(),
            _ => self.user_id.clone(),
        };
        NoticeEventView {
            id: self.id.to_string(),
            organization_id: self.organization_id.to_string(),
            notice_id: record.and_then(|r| r.notice_id.clone()),
            user: NoticeUserView {
                id,
                kind,
                country: b.user.country.clone(),
                region: record.and_then(|r| r.region.clone()),
            },
            regulation: self.regulation.to_string(),
            consent_string: b.consents.tcfcs.clone(),
            events: match record {
                Some(r) => r.events.clone(),
                None => actions_of(&b.consents),
            },
            source: record.and_then(|r| r.source.clone()),
            created_at: self.created_at.to_rfc3339(),
            updated_at: record
                .and_then(|r| r.updated_at)
                .unwrap_or(self.updated_at)
                .to_rfc3339(),
        }
    }
}

/// The actions that say what `consents` chose: purposes in order (consent, then legitimate
/// interest), then the vendor lists.
pub(crate) fn actions_of(consents: &Consents) -> Vec<NoticeItem> {
    let action = |choice: bool| {
        if choice {
            NoticeAction::ConsentGiven
        } else {
            NoticeAction::ConsentRefused
        }
    };
    let basis = |li: bool| li.then_some(LegalBasis::LegitimateInterest);
    let mut out = Vec::new();
    for p in &consents.purposes {
        for (choice, li) in [(p.enabled, false), (p.enabled_li, true)] {
            if let Some(choice) = choice {
                out.push(NoticeItem {
                    action: action(choice),
                    purpose: Some(p.id.clone()),
                    vendor: None,
                    value: None,
                    legal_basis: basis(li),
                });
            }
        }
    }
    let v = &consents.vendors;
    for (ids, choice, li) in [
        (&v.enabled, true, false),
        (&v.disabled, false, false),
        (&v.enabled_li, true, true),
        (&v.disabled_li, false, true),
    ] {
        for id in ids {
            out.push(NoticeItem {
                action: action(choice),
                purpose: None,
                vendor: Some(id.clone()),
                value: None,
                legal_basis: basis(li),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::event::{ConsentEvent, EventStatus, ParseContext, parse_batch};
    use crate::ids::{EventId, OrganizationId};
    use crate::tcf::PurposeMap;
    use crate::time::Timestamp;
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn stored(body: Value) -> ConsentEvent {
        let ctx = ParseContext {
            organization_id: OrganizationId::parse("acme").unwrap(),
            now: Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            generate_tcfcs: None,
            purpose_map: Arc::new(PurposeMap::default()),
        };
        let input = parse_batch(&body, &ctx).unwrap().events.remove(0);
        ConsentEvent {
            id: input.id.unwrap_or_else(|| EventId::parse("e").unwrap()),
            organization_id: ctx.organization_id,
            user_id: "resolved".into(),
            created_at: input.created_at.unwrap_or(Timestamp::from_millis(0)),
            updated_at: Timestamp::from_millis(5),
            status: EventStatus::Confirmed,
            regulation: input.regulation,
            seq: 1,
            body: input.body,
        }
    }

    #[test]
    fn a_notice_reads_back_as_written() {
        let written = json!({
            "id": "n1", "organization_id": "acme", "notice_id": "nt",
            "user": {"id": "crm-1", "type": "external", "country": "DE", "region": "BY"},
            "regulation": "tcf",
            "consent_string": "CQSbk4AQSbk4AEsAAAENAAFgAMAAAAAAAAAAF5wAQF5gAAAA.IF5wAQF5gAAA.YAAAAAAAAAAA",
            "events": [{"action": "preferences.click.savechoices"},
                       {"action": "consent.given", "purpose": "p", "value": false,
                        "legal_basis": "contract"}],
            "source": {"type": "web", "sdk_version": "1.0", "url": "https://e.com/"},
            "created_at": "2023-01-01T00:00:00.000Z", "updated_at": "2023-01-02T00:00:00.000Z"
        });
        let view = serde_json::to_value(stored(written.clone()).notice_view()).unwrap();
        assert_eq!(view, written);
    }

    #[test]
    fn an_api_event_is_shown_as_actions() {
        let event = stored(json!({
            "user": {"id": "u", "organization_user_id": "o"}, "regulation": "lgpd",
            "consents": {"purposes": [{"id": "a", "enabled": true, "enabled_li": false},
                                      {"id": "b", "values": {"t": {"value": "x"}}}],
                         "channels": [{"id": "email", "enabled": true}],
                         "vendors": {"enabled": ["v1"], "disabled_li": ["v2"]}}
        }));
        let view = serde_json::to_value(event.notice_view()).unwrap();
        assert_eq!(
            view,
            json!({
                "id": "e", "organization_id": "acme",
                "user": {"id": "resolved", "type": "didomi"},
                "regulation": "lgpd",
                "events": [
                    {"action": "consent.given", "purpose": "a"},
                    {"action": "consent.refused", "purpose": "a", "legal_basis": "legitimate_interest"},
                    {"action": "consent.given", "vendor": "v1"},
                    {"action": "consent.refused", "vendor": "v2", "legal_basis": "legitimate_interest"}
                ],
                "created_at": "1970-01-01T00:00:00.000Z",
                "updated_at": "1970-01-01T00:00:00.005Z"
            })
        );
    }
}
