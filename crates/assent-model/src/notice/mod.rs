//! Consent events in the shape CMP notices and SDKs send (web, iOS, Android, React Native,
//! Flutter, Unity, AMP, CTV): `{organization_id, notice_id, user, regulation, consent_string,
//! events: [{action, purpose, vendor, value, legal_basis}], source, created_at, updated_at}`.
//!
//! `POST /consents/events` recognises this "notice shape" by its top-level `events` array
//! ([`is_notice`]). Each notice object becomes one consent event of the Consents API shape
//! ([`parse`](parse::parse)), so it lands in the same history, status fold and deliveries; what
//! the Consents API shape has no place for (the notice, the source, the user's region and type,
//! the actions as sent) is kept on the stored event as a [`NoticeRecord`], from which
//! `GET /consents/events?$format=notice` renders the event back ([`render`]). The rules are
//! written down in `docs/API-DECISIONS.md`, "Notice events".

mod choices;
pub mod parse;
pub mod render;

pub use render::{NoticeEventView, NoticeUserView};

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Defines a closed set of values written as fixed strings, with the list of them (for
/// validation messages) and conversions both ways. The strings are taken as token trees, not
/// literals: derive macros (utoipa's) do not see a `literal` fragment's value.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:tt ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as written in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value written `s`, if it is one.
            pub fn parse(s: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl Vocabulary for $name {
            fn all() -> &'static [$name] {
                Self::ALL
            }

            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    };
}

/// A closed set of values written as fixed strings; lets one reader validate them all.
pub(crate) trait Vocabulary: Copy + 'static {
    /// Every value.
    fn all() -> &'static [Self];
    /// The value as written in JSON.
    fn name(self) -> &'static str;
}

vocabulary! {
    /// What the user did in the notice.
    NoticeAction {
        /// Gave consent to the purpose or vendor named.
        ConsentGiven = "consent.given",
        /// Refused the purpose or vendor named.
        ConsentRefused = "consent.refused",
        /// The notice or preferences screen was shown; changes nothing.
        PreferenceShown = "preference.shown",
        /// Clicked "agree to all".
        ClickAgreeToAll = "preferences.click.agreetoall",
        /// Clicked "disagree to all".
        ClickDisagreeToAll = "preferences.click.disagreetoall",
        /// Clicked "save choices".
        ClickSaveChoices = "preferences.click.savechoices",
    }
}

impl NoticeAction {
    /// The choice the action makes for the purpose or vendor it names when no `value` says
    /// otherwise: `true` for `consent.given` and `agreetoall`, `false` for `consent.refused`
    /// and `disagreetoall`, none for `savechoices` (its `value` says) and `preference.shown`.
    pub fn implied_choice(self) -> Option<bool> {
        match self {
            NoticeAction::ConsentGiven | NoticeAction::ClickAgreeToAll => Some(true),
            NoticeAction::ConsentRefused | NoticeAction::ClickDisagreeToAll => Some(false),
            NoticeAction::PreferenceShown | NoticeAction::ClickSaveChoices => None,
        }
    }
}

vocabulary! {
    /// The legal basis an action's choice is made under.
    LegalBasis {
        /// Consent (the default): the choice is the purpose's or vendor's `enabled`.
        Consent = "consent",
        /// Legitimate interest: the choice is `enabled_li` (`false` is an objection).
        LegitimateInterest = "legitimate_interest",
        /// Performance of a contract.
        Contract = "contract",
        /// A legal obligation.
        LegalObligation = "legal_obligation",
        /// Vital interests.
        VitalInterest = "vital_interest",
        /// A task in the public interest.
        PublicInterest = "public_interest",
    }
}

vocabulary! {
    /// Whose id `user.id` is.
    UserType {
        /// The Didomi user id (the default): the event's `user.id`.
        Didomi = "didomi",
        /// The organization's own id for the user: the event's `user.organization_user_id`.
        External = "external",
    }
}

vocabulary! {
    /// The regulations a notice reports under. Each one is its own consent status, except
    /// `none`, which is stored but changes no status.
    NoticeRegulation {
        /// EU General Data Protection Regulation (the default).
        Gdpr = "gdpr",
        /// California Consumer Privacy Act.
        Ccpa = "ccpa",
        /// Virginia Consumer Data Protection Act.
        Vcdpa = "vcdpa",
        /// Connecticut Data Privacy Act.
        Ctdpa = "ctdpa",
        /// Colorado Privacy Act.
        Cpa = "cpa",
        /// Utah Consumer Privacy Act.
        Utah = "utah",
        /// Consumer Data Protection Act.
        Cdpa = "cdpa",
        /// IAB TCF: the consent string's purposes and vendors are applied too.
        Tcf = "tcf",
        /// IAB Global Privacy Platform.
        Gpp = "gpp",
        /// Chile's law 21.719 (formerly bill 25).
        ChileanLaw25 = "chilean-law-25",
        /// Australia's Privacy Act.
        AustralianPrivacy = "australian-privacy",
        /// No regulation: stored and listed, never part of a status.
        None = "none",
    }
}

vocabulary! {
    /// The kind of CMP that sent the notice event.
    SourceType {
        /// Web SDK.
        Web = "web",
        /// iOS SDK.
        Ios = "ios",
        /// Android SDK.
        Android = "android",
        /// React Native SDK.
        ReactNative = "react-native",
        /// Flutter SDK.
        Flutter = "flutter",
        /// Unity SDK.
        Unity = "unity",
        /// Vega OS (connected TV) SDK.
        VegaOs = "vega-os",
        /// AMP pages.
        Amp = "amp",
        /// A server calling the API.
        Api = "api",
    }
}

/// One entry of a notice's `events`, as sent and as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeItem {
    /// What the user did.
    pub action: NoticeAction,
    /// The purpose the action is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The vendor the action is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// The choice, overriding the one the action implies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<bool>,
    /// The legal basis of the choice; `consent` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<LegalBasis>,
}

impl NoticeItem {
    /// The choice this entry makes for its purpose and vendor: `value` when present,
    /// otherwise the action's; `preference.shown` makes none.
    pub fn choice(&self) -> Option<bool> {
        match self.action {
            NoticeAction::PreferenceShown => None,
            action => self.value.or(action.implied_choice()),
        }
    }

    /// True when the choice is a legitimate-interest one (`enabled_li`, `*_li` vendor lists).
    pub fn is_legitimate_interest(&self) -> bool {
        self.legal_basis == Some(LegalBasis::LegitimateInterest)
    }
}

/// Where a notice event comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeSource {
    /// The kind of SDK.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SourceType>,
    /// The SDK's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    /// The page or app URL the notice was shown on (an absolute URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a notice-shape event keeps beyond its consents, on the stored event: enough to render
/// it back as it was written. The user's id and country, the regulation, the consent string
/// and the dates live in the event itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoticeRecord {
    /// The notice that was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_id: Option<String>,
    /// `user.type` as sent (absent means `didomi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<UserType>,
    /// `user.region` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `source` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<NoticeSource>,
    /// `events` as sent.
    #[serde(default)]
    pub events: Vec<NoticeItem>,
    /// `updated_at` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// The key of the event metadata that lists a notice event's actions, so that they can be
/// filtered on and counted (`metadata.notice_actions=preference.shown`).
pub const ACTIONS_METADATA_KEY: &str = "notice_actions";

/// True when `value` is a notice-shape event: an object with a top-level `events` field.
pub fn is_notice(value: &Value) -> bool {
    value.get("events").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_read_and_write_their_json_names() {
        assert_eq!(
            NoticeAction::parse("preferences.click.agreetoall"),
            Some(NoticeAction::ClickAgreeToAll)
        );
        assert_eq!(NoticeAction::parse("consent.maybe"), None);
        assert_eq!(SourceType::ReactNative.as_str(), "react-native");
        assert_eq!(NoticeRegulation::ALL.len(), 12);
        assert_eq!(
            serde_json::to_value(NoticeRegulation::ChileanLaw25).unwrap(),
            "chilean-law-25"
        );
        for r in NoticeRegulation::ALL {
            assert!(crate::Regulation::parse(r.as_str()).is_ok(), "{r:?}");
        }
    }

    #[test]
    fn value_overrides_the_action_and_shown_chooses_nothing() {
        let item = |action, value| NoticeItem {
            action,
            purpose: Some("p".into()),
            vendor: None,
            value,
            legal_basis: None,
        };
        assert_eq!(item(NoticeAction::ConsentGiven, None).choice(), Some(true));
        assert_eq!(
            item(NoticeAction::ConsentGiven, Some(false)).choice(),
            Some(false)
        );
        assert_eq!(
            item(NoticeAction::ClickDisagreeToAll, None).choice(),
            Some(false)
        );
        assert_eq!(item(NoticeAction::ClickSaveChoices, None).choice(), None);
        assert_eq!(
            item(NoticeAction::ClickSaveChoices, Some(true)).choice(),
            Some(true)
        );
        assert_eq!(
            item(NoticeAction::PreferenceShown, Some(true)).choice(),
            None
        );
    }
}
