//! TC strings (IAB TCF v2.2 / 2.3): the model, [`decode`] and [`encode`].

use serde::{Deserialize, Serialize};

use crate::bits::{BitReader, BitWriter, with_reader};
use crate::error::{Error, Segment};
use crate::types::{Alpha2, Deciseconds, IdSet, PublisherRestriction, PurposeSet, RestrictionType};

/// Purposes whose legitimate-interest bit must be 0 since TCF 2.2 (policy version 4): 1, 3–6.
pub const LI_FORBIDDEN_PURPOSES: PurposeSet = PurposeSet::from_bits(0b11_1101);

/// Every field of a TC string, as decoded or to encode.
///
/// Field names are the snake_case forms of the names of iabtcf-es' `TCModel` (`policy_version`,
/// `publisher_country_code`, `special_feature_optins`, `vendors_disclosed`…), with
/// `use_non_standard_texts` as TCF 2.2 names the bit (iabgpp-es: `UseNonStandardStacks`).
/// Dates are [`Deciseconds`] (RFC 3339 strings in JSON). Sets are arrays of ids in JSON.
///
/// The core segment, DisclosedVendors and PublisherTC are flattened into one struct, as in
/// iabtcf-es: a string without a PublisherTC segment decodes to empty publisher fields, and
/// [`encode`] always writes all three segments, as both IAB libraries do. `vendors_allowed`
/// (the deprecated AllowedVendors segment) is decoded but never encoded.
///
/// In JSON, `created`, `last_updated` and `cmp_id` are required; every other field has the
/// default of iabgpp-es (`consent_language` `EN`, `policy_version` 5,
/// `is_service_specific` true, `publisher_country_code` `AA`, zero or empty otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcModel {
    /// Created (36 bits). Since TCF 2.2, UTC midnight of the day of the last update.
    pub created: Deciseconds,
    /// LastUpdated (36 bits); the same value as `created` since TCF 2.2.
    pub last_updated: Deciseconds,
    /// CmpId (12 bits): the CMP's IAB-registered id.
    pub cmp_id: u16,
    /// CmpVersion (12 bits).
    #[serde(default)]
    pub cmp_version: u16,
    /// ConsentScreen (6 bits): the CMP's screen number where consent was given.
    #[serde(default)]
    pub consent_screen: u8,
    /// ConsentLanguage: ISO 639-1 two-letter language.
    #[serde(default = "en")]
    pub consent_language: Alpha2,
    /// VendorListVersion (12 bits): the GVL's `vendorListVersion`.
    #[serde(default)]
    pub vendor_list_version: u16,
    /// TcfPolicyVersion (6 bits): 4 or more for TCF 2.2; iabgpp-es defaults to 5.
    #[serde(default = "five")]
    pub policy_version: u8,
    /// IsServiceSpecific: must be true to encode.
    #[serde(default = "yes")]
    pub is_service_specific: bool,
    /// UseNonStandardTexts (UseNonStandardStacks in the libraries).
    #[serde(default)]
    pub use_non_standard_texts: bool,
    /// SpecialFeatureOptIns (12 bits): special features 1–12 opted in.
    #[serde(default)]
    pub special_feature_optins: PurposeSet,
    /// PurposesConsent (24 bits): purposes 1–24 consented to.
    #[serde(default)]
    pub purpose_consents: PurposeSet,
    /// PurposesLITransparency (24 bits). With policy version 4 or more, purposes 1 and 3–6
    /// must not be in it ([`LI_FORBIDDEN_PURPOSES`]).
    #[serde(default)]
    pub purpose_legitimate_interests: PurposeSet,
    /// PurposeOneTreatment: purpose 1 was not disclosed (its jurisdiction does not require it).
    #[serde(default)]
    pub purpose_one_treatment: bool,
    /// PublisherCC: ISO 3166-1 alpha-2 country of the publisher (`AA` when unknown).
    #[serde(default = "aa")]
    pub publisher_country_code: Alpha2,
    /// Vendor consents.
    #[serde(default)]
    pub vendor_consents: IdSet,
    /// Vendor legitimate-interest transparency.
    #[serde(default)]
    pub vendor_legitimate_interests: IdSet,
    /// Publisher restrictions, in the order of the string.
    #[serde(default)]
    pub publisher_restrictions: Vec<PublisherRestriction>,
    /// DisclosedVendors segment: vendors disclosed to the user (mandatory since TCF 2.3).
    #[serde(default)]
    pub vendors_disclosed: IdSet,
    /// AllowedVendors segment (deprecated): decoded, never encoded.
    #[serde(default)]
    pub vendors_allowed: IdSet,
    /// PublisherTC PubPurposesConsent (24 bits).
    #[serde(default)]
    pub publisher_consents: PurposeSet,
    /// PublisherTC PubPurposesLITransparency (24 bits).
    #[serde(default)]
    pub publisher_legitimate_interests: PurposeSet,
    /// PublisherTC NumCustomPurposes (6 bits).
    #[serde(default)]
    pub num_custom_purposes: u8,
    /// PublisherTC CustomPurposesConsent: ids 1..=`num_custom_purposes`.
    #[serde(default)]
    pub publisher_custom_consents: PurposeSet,
    /// PublisherTC CustomPurposesLITransparency: ids 1..=`num_custom_purposes`.
    #[serde(default)]
    pub publisher_custom_legitimate_interests: PurposeSet,
}

fn en() -> Alpha2 {
    Alpha2::EN
}
fn aa() -> Alpha2 {
    Alpha2::AA
}
fn five() -> u8 {
    5
}
fn yes() -> bool {
    true
}

impl TcModel {
    /// A model with the given CMP id and dates and iabgpp-es' defaults everywhere else.
    pub fn new(cmp_id: u16, created: Deciseconds, last_updated: Deciseconds) -> TcModel {
        TcModel {
            created,
            last_updated,
            cmp_id,
            cmp_version: 0,
            consent_screen: 0,
            consent_language: Alpha2::EN,
            vendor_list_version: 0,
            policy_version: 5,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_optins: PurposeSet::new(),
            purpose_consents: PurposeSet::new(),
            purpose_legitimate_interests: PurposeSet::new(),
            purpose_one_treatment: false,
            publisher_country_code: Alpha2::AA,
            vendor_consents: IdSet::new(),
            vendor_legitimate_interests: IdSet::new(),
            publisher_restrictions: Vec::new(),
            vendors_disclosed: IdSet::new(),
            vendors_allowed: IdSet::new(),
            publisher_consents: PurposeSet::new(),
            publisher_legitimate_interests: PurposeSet::new(),
            num_custom_purposes: 0,
            publisher_custom_consents: PurposeSet::new(),
            publisher_custom_legitimate_interests: PurposeSet::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a TC string (core segment, then DisclosedVendors, AllowedVendors and PublisherTC in
/// any order).
///
/// Accepts segments of any length (trailing bits are ignored) and strips trailing `=`. Rejects
/// bad base64url, truncated fields, a bitfield shorter than its MaxVendorId, ranges whose start
/// is after their end or that name vendor 0, versions other than 2, unknown or repeated
/// segment types, and letters outside A–Z in the language and country code.
/// IsServiceSpecific 0 is decoded (old strings carry it) even though [`encode`] refuses it.
pub fn decode(s: &str) -> Result<TcModel, Error> {
    let mut parts = s.split('.');
    let core = parts.next().unwrap_or("");
    if core.is_empty() {
        return Err(Error::Empty {
            what: if s.is_empty() {
                "string"
            } else {
                "core segment"
            }
            .into(),
        });
    }
    let mut m = with_reader(Segment::Core, core, read_core)?;
    let mut seen = 0u8;
    for (i, part) in parts.enumerate() {
        if part.is_empty() {
            return Err(Error::Empty {
                what: format!("segment {}", i + 2),
            });
        }
        with_reader(Segment::Unknown, part, |r| {
            let at = r.pos();
            let kind = r.read(3, "SegmentType")?;
            let segment = match kind {
                1 => Segment::DisclosedVendors,
                2 => Segment::AllowedVendors,
                3 => Segment::PublisherTc,
                _ => {
                    return Err(r.invalid(
                        "SegmentType",
                        at,
                        format!("{kind} is not 1 (DisclosedVendors), 2 (AllowedVendors) or 3 (PublisherTC)"),
                    ));
                }
            };
            if seen & (1 << kind) != 0 {
                return Err(Error::Unsupported(format!("a second {segment}")));
            }
            seen |= 1 << kind;
            r.set_segment(segment);
            match segment {
                Segment::DisclosedVendors => {
                    m.vendors_disclosed = read_vendor_vector(r, "VendorsDisclosed")?;
                }
                Segment::AllowedVendors => {
                    m.vendors_allowed = read_vendor_vector(r, "VendorsAllowed")?;
                }
                _ => read_publisher_tc(r, &mut m)?,
            }
            Ok(())
        })?;
    }
    Ok(m)
}

fn read_core(r: &mut BitReader<'_>) -> Result<TcModel, Error> {
    let version = r.read(6, "Version")?;
    if version != 2 {
        return Err(match version {
            1 => Error::Unsupported("TCF v1 consent strings".into()),
            3 => Error::Unsupported("a GPP string; decode it with gpp::decode".into()),
            v => r.invalid("Version", 0, format!("{v} is not 2")),
        });
    }
    let created = Deciseconds(r.read(36, "Created")?);
    let last_updated = Deciseconds(r.read(36, "LastUpdated")?);
    let cmp_id = r.read(12, "CmpId")? as u16;
    let cmp_version = r.read(12, "CmpVersion")? as u16;
    let consent_screen = r.read(6, "ConsentScreen")? as u8;
    let consent_language = read_alpha2(r, "ConsentLanguage")?;
    let vendor_list_version = r.read(12, "VendorListVersion")? as u16;
    let policy_version = r.read(6, "TcfPolicyVersion")? as u8;
    let is_service_specific = r.bool("IsServiceSpecific")?;
    let use_non_standard_texts = r.bool("UseNonStandardTexts")?;
    let special_feature_optins = read_purposes(r, 12, "SpecialFeatureOptIns")?;
    let purpose_consents = read_purposes(r, 24, "PurposesConsent")?;
    let purpose_legitimate_interests = read_purposes(r, 24, "PurposesLITransparency")?;
    let purpose_one_treatment = r.bool("PurposeOneTreatment")?;
    let publisher_country_code = read_alpha2(r, "PublisherCC")?;
    let vendor_consents = read_vendor_vector(r, "VendorConsents")?;
    let vendor_legitimate_interests = read_vendor_vector(r, "VendorLegitimateInterests")?;
    let publisher_restrictions = read_restrictions(r)?;
    Ok(TcModel {
        created,
        last_updated,
        cmp_id,
        cmp_version,
        consent_screen,
        consent_language,
        vendor_list_version,
        policy_version,
        is_service_specific,
        use_non_standard_texts,
        special_feature_optins,
        purpose_consents,
        purpose_legitimate_interests,
        purpose_one_treatment,
        publisher_country_code,
        vendor_consents,
        vendor_legitimate_interests,
        publisher_restrictions,
        vendors_disclosed: IdSet::new(),
        vendors_allowed: IdSet::new(),
        publisher_consents: PurposeSet::new(),
        publisher_legitimate_interests: PurposeSet::new(),
        num_custom_purposes: 0,
        publisher_custom_consents: PurposeSet::new(),
        publisher_custom_legitimate_interests: PurposeSet::new(),
    })
}

fn read_alpha2(r: &mut BitReader<'_>, field: &'static str) -> Result<Alpha2, Error> {
    let at = r.pos();
    let v = r.read(12, field)?;
    let (a, b) = ((v >> 6) as u8, (v & 63) as u8);
    Alpha2::from_indices(a, b).ok_or_else(|| {
        r.invalid(
            field,
            at,
            format!("letter values {a} and {b} are not both A-Z (0-25)"),
        )
    })
}

/// A fixed bitfield of `n` (1–64) bits where bit 0 is id 1.
fn read_purposes(r: &mut BitReader<'_>, n: u32, field: &'static str) -> Result<PurposeSet, Error> {
    debug_assert!((1..=64).contains(&n));
    let v = if n > 32 {
        if r.remaining() < n as usize {
            return Err(r.truncated(field, n as usize));
        }
        let hi = r.read(n - 32, field)?;
        (hi << 32) | r.read(32, field)?
    } else {
        r.read(n, field)?
    };
    Ok(PurposeSet::from_bits(v.reverse_bits() >> (64 - n)))
}

/// A vendor vector: MaxVendorId(16), IsRangeEncoding(1), then a bitfield of MaxVendorId bits
/// or NumEntries(12) range entries.
fn read_vendor_vector(r: &mut BitReader<'_>, field: &'static str) -> Result<IdSet, Error> {
    let max = r.read(16, field)? as usize;
    let is_range = r.bool(field)?;
    if !is_range {
        if r.remaining() < max {
            return Err(r.truncated(field, max));
        }
        // Bit i is vendor i + 1.
        let mut set = IdSet::with_max(max);
        r.for_each_chunk(max, |at, bits, n| set.or_bits(at + 1, bits, n));
        set.trim();
        Ok(set)
    } else {
        let mut set = IdSet::new();
        read_range_entries(r, field, &mut set)?;
        Ok(set)
    }
}

/// NumEntries(12), then IsARange(1) StartOrOnlyVendorId(16) [EndVendorId(16)] per entry.
fn read_range_entries(
    r: &mut BitReader<'_>,
    field: &'static str,
    set: &mut IdSet,
) -> Result<(), Error> {
    let n = r.read(12, field)?;
    for _ in 0..n {
        let at = r.pos();
        let is_range = r.bool(field)?;
        let start = r.read(16, field)? as u16;
        let end = if is_range {
            r.read(16, field)? as u16
        } else {
            start
        };
        if start == 0 {
            return Err(r.invalid(field, at, "vendor id 0 in a range entry".into()));
        }
        if start > end {
            return Err(r.invalid(
                field,
                at,
                format!("range start {start} is after its end {end}"),
            ));
        }
        set.insert_range(start, end);
    }
    Ok(())
}

fn read_restrictions(r: &mut BitReader<'_>) -> Result<Vec<PublisherRestriction>, Error> {
    let n = r.read(12, "NumPubRestrictions")?;
    let mut out = Vec::new();
    for _ in 0..n {
        let purpose_id = r.read(6, "PubRestrictions.PurposeId")? as u8;
        let restriction_type =
            RestrictionType::from_bits(r.read(2, "PubRestrictions.RestrictionType")?);
        let mut vendors = IdSet::new();
        read_range_entries(r, "PubRestrictions.Vendors", &mut vendors)?;
        out.push(PublisherRestriction {
            purpose_id,
            restriction_type,
            vendors,
        });
    }
    Ok(out)
}

fn read_publisher_tc(r: &mut BitReader<'_>, m: &mut TcModel) -> Result<(), Error> {
    m.publisher_consents = read_purposes(r, 24, "PubPurposesConsent")?;
    m.publisher_legitimate_interests = read_purposes(r, 24, "PubPurposesLITransparency")?;
    let n = r.read(6, "NumCustomPurposes")? as u8;
    m.num_custom_purposes = n;
    if n > 0 {
        m.publisher_custom_consents = read_purposes(r, u32::from(n), "CustomPurposesConsent")?;
        m.publisher_custom_legitimate_interests =
            read_purposes(r, u32::from(n), "CustomPurposesLITransparency")?;
    } else {
        m.publisher_custom_consents = PurposeSet::new();
        m.publisher_custom_legitimate_interests = PurposeSet::new();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes `core.disclosedVendors.publisherTC`, byte for byte as iabgpp-es' `TcfEuV2` does.
///
/// Each segment is padded with zeros to a multiple of 24 bits; no `=`. Vendor vectors use the
/// range encoding when its NumEntries and entries take no more bits than MaxVendorId (ties go
/// to ranges), the bitfield otherwise; ranges are the maximal runs of consecutive ids.
/// Restrictions keep their order; their vendors are written as maximal runs.
/// `vendors_allowed` is not written (the segment is deprecated).
///
/// Fails, naming the model field, when `is_service_specific` is false, a number does not fit
/// its field, an id is out of range (0, purposes above 24, special features above 12, custom
/// purposes above `num_custom_purposes`), a legitimate interest is set for purposes 1 or 3–6
/// with policy version 4 or more, or a list has more than 4095 entries.
pub fn encode(m: &TcModel) -> Result<String, Error> {
    validate(m)?;
    let mut w = BitWriter::new();
    w.write(2, 6);
    w.write_wide(m.created.0, 36);
    w.write_wide(m.last_updated.0, 36);
    w.write(u64::from(m.cmp_id), 12);
    w.write(u64::from(m.cmp_version), 12);
    w.write(u64::from(m.consent_screen), 6);
    write_alpha2(&mut w, m.consent_language);
    w.write(u64::from(m.vendor_list_version), 12);
    w.write(u64::from(m.policy_version), 6);
    w.bit(m.is_service_specific);
    w.bit(m.use_non_standard_texts);
    write_purposes(&mut w, m.special_feature_optins, 12);
    write_purposes(&mut w, m.purpose_consents, 24);
    write_purposes(&mut w, m.purpose_legitimate_interests, 24);
    w.bit(m.purpose_one_treatment);
    write_alpha2(&mut w, m.publisher_country_code);
    write_vendor_vector(&mut w, &m.vendor_consents);
    write_vendor_vector(&mut w, &m.vendor_legitimate_interests);
    w.write(m.publisher_restrictions.len() as u64, 12);
    for p in &m.publisher_restrictions {
        w.write(u64::from(p.purpose_id), 6);
        w.write(p.restriction_type.bits(), 2);
        write_range_entries(&mut w, &p.vendors);
    }
    let mut out = w.finish_traditional();

    let mut w = BitWriter::new();
    w.write(1, 3);
    write_vendor_vector(&mut w, &m.vendors_disclosed);
    out.push('.');
    out.push_str(&w.finish_traditional());

    let mut w = BitWriter::new();
    w.write(3, 3);
    write_purposes(&mut w, m.publisher_consents, 24);
    write_purposes(&mut w, m.publisher_legitimate_interests, 24);
    let n = u32::from(m.num_custom_purposes);
    w.write(u64::from(n), 6);
    write_purposes(&mut w, m.publisher_custom_consents, n);
    write_purposes(&mut w, m.publisher_custom_legitimate_interests, n);
    out.push('.');
    out.push_str(&w.finish_traditional());
    Ok(out)
}

pub(crate) fn validate(m: &TcModel) -> Result<(), Error> {
    fn fits(field: &'static str, v: u64, bits: u32) -> Result<(), Error> {
        if v >> bits != 0 {
            return Err(Error::encode(
                field,
                format!("{v} does not fit {bits} bits (max {})", (1u64 << bits) - 1),
            ));
        }
        Ok(())
    }
    fn within(field: &'static str, s: PurposeSet, max: u8) -> Result<(), Error> {
        if let Some(top) = s.max()
            && top > max
        {
            return Err(Error::encode(field, format!("id {top} is above {max}")));
        }
        Ok(())
    }
    fn vendors(field: &'static str, s: &IdSet) -> Result<(), Error> {
        if s.min() == Some(0) {
            return Err(Error::encode(field, "vendor id 0 is not valid"));
        }
        Ok(())
    }
    if !m.is_service_specific {
        return Err(Error::encode(
            "is_service_specific",
            "must be true: global (non service-specific) TC strings are no longer valid",
        ));
    }
    fits("created", m.created.0, 36)?;
    fits("last_updated", m.last_updated.0, 36)?;
    fits("cmp_id", m.cmp_id.into(), 12)?;
    fits("cmp_version", m.cmp_version.into(), 12)?;
    fits("consent_screen", m.consent_screen.into(), 6)?;
    fits("vendor_list_version", m.vendor_list_version.into(), 12)?;
    fits("policy_version", m.policy_version.into(), 6)?;
    fits("num_custom_purposes", m.num_custom_purposes.into(), 6)?;
    within("special_feature_optins", m.special_feature_optins, 12)?;
    within("purpose_consents", m.purpose_consents, 24)?;
    within(
        "purpose_legitimate_interests",
        m.purpose_legitimate_interests,
        24,
    )?;
    within("publisher_consents", m.publisher_consents, 24)?;
    within(
        "publisher_legitimate_interests",
        m.publisher_legitimate_interests,
        24,
    )?;
    within(
        "publisher_custom_consents",
        m.publisher_custom_consents,
        m.num_custom_purposes,
    )?;
    within(
        "publisher_custom_legitimate_interests",
        m.publisher_custom_legitimate_interests,
        m.num_custom_purposes,
    )?;
    let forbidden = m.purpose_legitimate_interests.bits() & LI_FORBIDDEN_PURPOSES.bits();
    if m.policy_version >= 4 && forbidden != 0 {
        return Err(Error::encode(
            "purpose_legitimate_interests",
            format!(
                "purposes {:?} cannot rest on legitimate interest since TCF 2.2 (policy version 4)",
                PurposeSet::from_bits(forbidden)
            ),
        ));
    }
    vendors("vendor_consents", &m.vendor_consents)?;
    vendors(
        "vendor_legitimate_interests",
        &m.vendor_legitimate_interests,
    )?;
    vendors("vendors_disclosed", &m.vendors_disclosed)?;
    if m.publisher_restrictions.len() > 4095 {
        return Err(Error::encode(
            "publisher_restrictions",
            format!("{} entries; at most 4095", m.publisher_restrictions.len()),
        ));
    }
    for p in &m.publisher_restrictions {
        if !(1..=24).contains(&p.purpose_id) {
            return Err(Error::encode(
                "publisher_restrictions.purpose_id",
                format!("{} is not a purpose (1-24)", p.purpose_id),
            ));
        }
        vendors("publisher_restrictions.vendors", &p.vendors)?;
        if p.vendors.run_count() > 4095 {
            return Err(Error::encode(
                "publisher_restrictions.vendors",
                format!(
                    "purpose {}: {} runs of consecutive ids; at most 4095",
                    p.purpose_id,
                    p.vendors.run_count()
                ),
            ));
        }
    }
    Ok(())
}

fn write_alpha2(w: &mut BitWriter, a: Alpha2) {
    let (x, y) = a.indices();
    w.write(u64::from(x), 6);
    w.write(u64::from(y), 6);
}

fn write_purposes(w: &mut BitWriter, s: PurposeSet, n: u32) {
    if n == 0 {
        return;
    }
    let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let v = (s.bits() & mask).reverse_bits() >> (64 - n);
    if n > 32 {
        w.write(v >> 32, n - 32);
        w.write(v & 0xFFFF_FFFF, 32);
    } else {
        w.write(v, n);
    }
}

/// Bits of NumEntries plus the entries of a range encoding of `s`.
fn range_len(s: &IdSet) -> usize {
    12 + s
        .ranges()
        .map(|r| if r.start() == r.end() { 17 } else { 33 })
        .sum::<usize>()
}

fn write_vendor_vector(w: &mut BitWriter, s: &IdSet) {
    let max = s.max().unwrap_or(0);
    w.write(u64::from(max), 16);
    // iabgpp-es OptimizedFixedRangeEncoder: ranges when they take no more bits than MaxVendorId.
    if range_len(s) <= usize::from(max) {
        w.bit(true);
        write_range_entries(w, s);
    } else {
        w.bit(false);
        write_bitfield(w, s, max);
    }
}

/// Bit `i - 1` set for every id `i` in `s`, for ids 1..=`max`, 32 bits at a time.
fn write_bitfield(w: &mut BitWriter, s: &IdSet, max: u16) {
    let max = usize::from(max);
    let mut id = 1;
    while id <= max {
        let n = (max + 1 - id).min(32) as u32;
        // Least significant bit first in the set, most significant first in the string.
        let bits = s.bits_at(id, n).reverse_bits() >> (64 - n);
        w.write(bits, n);
        id += n as usize;
    }
}

fn write_range_entries(w: &mut BitWriter, s: &IdSet) {
    w.write(s.run_count() as u64, 12);
    for r in s.ranges() {
        if r.start() == r.end() {
            w.bit(false);
            w.write(u64::from(*r.start()), 16);
        } else {
            w.bit(true);
            w.write(u64::from(*r.start()), 16);
            w.write(u64::from(*r.end()), 16);
        }
    }
}
