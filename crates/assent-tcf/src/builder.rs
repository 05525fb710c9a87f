//! Building a [`TcModel`] from simple inputs: what the API's `$generate_tcfcs` needs
//! (API.md §6).
//!
//! [`TcfParams`] is the `iab.tcf` object of a request body, with the API's defaults;
//! [`Choices`] is what the user chose, already mapped to IAB ids; [`build`] combines them.
//!
//! ```
//! use assent_tcf::builder::{build, Choices, TcfParams};
//! use chrono::{TimeZone, Utc};
//!
//! let params: TcfParams = serde_json::from_str(r#"{"cmp_id": 300}"#).unwrap();
//! let choices = Choices {
//!     purpose_consents: vec![1, 2, 3],
//!     purpose_legitimate_interests: vec![2, 7],
//!     vendor_consents: vec![755, 28],
//!     ..Choices::default()
//! };
//! let at = Utc.with_ymd_and_hms(2025, 6, 3, 14, 30, 0).unwrap();
//! let model = build(&params, &choices, at).unwrap();
//! let tc = assent_tcf::encode(&model).unwrap();
//! assert_eq!(assent_tcf::decode(&tc).unwrap(), model);
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::tc::{LI_FORBIDDEN_PURPOSES, TcModel};
use crate::types::{Alpha2, Deciseconds, IdSet, PublisherRestriction, PurposeSet};

/// The CMP-side parameters of a TC string: the API's `iab.tcf` object (API.md §6), with its
/// defaults. Unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcfParams {
    /// The CMP's IAB id (required; 12 bits).
    pub cmp_id: u16,
    /// Default 1.
    #[serde(default = "one")]
    pub cmp_version: u16,
    /// Default 1.
    #[serde(default = "one_u8")]
    pub consent_screen: u8,
    /// Default `EN`.
    #[serde(default = "en")]
    pub consent_language: Alpha2,
    /// The GVL's `vendorListVersion`; default 0.
    #[serde(default)]
    pub vendor_list_version: u16,
    /// Default 5.
    #[serde(default = "five")]
    pub tcf_policy_version: u8,
    /// Default false.
    #[serde(default)]
    pub use_non_standard_texts: bool,
    /// Default false.
    #[serde(default)]
    pub purpose_one_treatment: bool,
    /// The publisher's country; default `AA` (unknown).
    #[serde(default = "aa")]
    pub publisher_cc: Alpha2,
    /// Default none.
    #[serde(default)]
    pub publisher_restrictions: Vec<PublisherRestriction>,
}

fn one() -> u16 {
    1
}
fn one_u8() -> u8 {
    1
}
fn five() -> u8 {
    5
}
fn en() -> Alpha2 {
    Alpha2::EN
}
fn aa() -> Alpha2 {
    Alpha2::AA
}

impl TcfParams {
    /// The parameters for `cmp_id` with every other field at the API's default.
    pub fn new(cmp_id: u16) -> TcfParams {
        TcfParams {
            cmp_id,
            cmp_version: 1,
            consent_screen: 1,
            consent_language: Alpha2::EN,
            vendor_list_version: 0,
            tcf_policy_version: 5,
            use_non_standard_texts: false,
            purpose_one_treatment: false,
            publisher_cc: Alpha2::AA,
            publisher_restrictions: Vec::new(),
        }
    }
}

/// What the user chose, as IAB ids. Every list may be in any order and hold duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    /// Purposes (1–24) consented to.
    pub purpose_consents: Vec<u8>,
    /// Purposes (1–24) whose legitimate interest the user did not object to. Purposes 1 and
    /// 3–6 are dropped when the policy version is 4 or more: TCF 2.2 forbids LI for them.
    pub purpose_legitimate_interests: Vec<u8>,
    /// Special features (1–12) opted in.
    pub special_features: Vec<u8>,
    /// Vendors consented to.
    pub vendor_consents: Vec<u16>,
    /// Vendors whose legitimate interest the user did not object to.
    pub vendor_legitimate_interests: Vec<u16>,
    /// Vendors shown to the user (every vendor enabled or disabled, for consent or LI). The
    /// vendors of the two lists above are added to it: a vendor with a choice was disclosed.
    pub vendors_disclosed: Vec<u16>,
    /// Publisher purposes (1–24) consented to.
    pub publisher_consents: Vec<u8>,
    /// Publisher purposes (1–24) on legitimate interest.
    pub publisher_legitimate_interests: Vec<u8>,
}

/// Builds the model of a service-specific TC string.
///
/// `updated_at` is when the user's choices last changed: as TCF 2.2 requires (and both IAB
/// libraries do), Created and LastUpdated are both set to UTC midnight of that day.
///
/// Fails with [`Error::Encode`] on an id out of range (purpose 0 or above 24, special feature
/// above 12, vendor 0) or a parameter too large for its field.
pub fn build(
    params: &TcfParams,
    choices: &Choices,
    updated_at: DateTime<Utc>,
) -> Result<TcModel, Error> {
    fn purposes(field: &'static str, ids: &[u8], max: u8) -> Result<PurposeSet, Error> {
        let mut set = PurposeSet::new();
        for &id in ids {
            if !(1..=max).contains(&id) {
                return Err(Error::encode(field, format!("id {id} is not in 1..={max}")));
            }
            set.insert(id);
        }
        Ok(set)
    }
    fn vendors(field: &'static str, ids: &[u16]) -> Result<IdSet, Error> {
        if ids.contains(&0) {
            return Err(Error::encode(field, "vendor id 0 is not valid"));
        }
        Ok(ids.iter().copied().collect())
    }
    let day = Deciseconds::day_of(updated_at);
    let mut m = TcModel::new(params.cmp_id, day, day);
    m.cmp_version = params.cmp_version;
    m.consent_screen = params.consent_screen;
    m.consent_language = params.consent_language;
    m.vendor_list_version = params.vendor_list_version;
    m.policy_version = params.tcf_policy_version;
    m.use_non_standard_texts = params.use_non_standard_texts;
    m.purpose_one_treatment = params.purpose_one_treatment;
    m.publisher_country_code = params.publisher_cc;
    m.publisher_restrictions = params.publisher_restrictions.clone();
    m.purpose_consents = purposes("purpose_consents", &choices.purpose_consents, 24)?;
    let mut li = purposes(
        "purpose_legitimate_interests",
        &choices.purpose_legitimate_interests,
        24,
    )?;
    if m.policy_version >= 4 {
        li = PurposeSet::from_bits(li.bits() & !LI_FORBIDDEN_PURPOSES.bits());
    }
    m.purpose_legitimate_interests = li;
    m.special_feature_optins = purposes("special_feature_optins", &choices.special_features, 12)?;
    m.vendor_consents = vendors("vendor_consents", &choices.vendor_consents)?;
    m.vendor_legitimate_interests = vendors(
        "vendor_legitimate_interests",
        &choices.vendor_legitimate_interests,
    )?;
    let mut disclosed = vendors("vendors_disclosed", &choices.vendors_disclosed)?;
    for r in m
        .vendor_consents
        .ranges()
        .chain(m.vendor_legitimate_interests.ranges())
    {
        disclosed.insert_range(*r.start(), *r.end());
    }
    m.vendors_disclosed = disclosed;
    m.publisher_consents = purposes("publisher_consents", &choices.publisher_consents, 24)?;
    m.publisher_legitimate_interests = purposes(
        "publisher_legitimate_interests",
        &choices.publisher_legitimate_interests,
        24,
    )?;
    // Catch parameters too large for their fields now rather than at encode time.
    crate::tc::validate(&m)?;
    Ok(m)
}
