//! GPP strings (IAB Global Privacy Platform v1): `Header~Section~Section…`.
//!
//! Sections read and written: `tcfeuv2` (id 2, a TC string), `uspv1` (id 6, the four-character
//! US Privacy string) and `usnat` (id 7: version 1 decoded, version 2 decoded and encoded, with
//! its GPC subsegment). Every other section is kept as [`Section::Unsupported`] with its id and
//! text, never guessed at.
//!
//! Output is byte-identical to iabgpp-es (`@iabgpp/cmpapi`): the header and usnat segments are
//! padded to a multiple of 8 bits and then of 6 (`DBABMA`, where the GPP specification's own
//! example pads only to 6: `DBABM`; both decode the same), tcfeuv2 as a TC string.

use serde::{Deserialize, Serialize};

use crate::bits::{BitReader, BitWriter, with_reader};
use crate::error::{Error, Segment};
use crate::tc::{self, TcModel};

/// Section id of `tcfeuv2`, the TCF EU v2 TC string.
pub const TCFEUV2: u16 = 2;
/// Section id of `uspv1`, the US Privacy string.
pub const USPV1: u16 = 6;
/// Section id of `usnat`, the MSPA US National section.
pub const USNAT: u16 = 7;

/// The prefix the GPP Section Information table gives a section id (`tcfeuv2`, `usca`…), for
/// ids 1–27 (`header` and `signal_integrity` for 3 and 4).
pub fn section_name(id: u16) -> Option<&'static str> {
    const NAMES: [&str; 27] = [
        "tcfeuv1",
        "tcfeuv2",
        "header",
        "signal_integrity",
        "tcfcav1",
        "uspv1",
        "usnat",
        "usca",
        "usva",
        "usco",
        "usut",
        "usct",
        "usfl",
        "usmt",
        "usor",
        "ustx",
        "usde",
        "usia",
        "usne",
        "usnh",
        "usnj",
        "ustn",
        "usmn",
        "usmd",
        "usin",
        "usky",
        "usri",
    ];
    NAMES.get(usize::from(id).checked_sub(1)?).copied()
}

/// A decoded GPP string: its sections in the header's order (ascending ids).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GppString {
    /// The sections, ids ascending.
    pub sections: Vec<Section>,
}

impl GppString {
    /// The section ids, in order (what the header lists).
    pub fn section_ids(&self) -> Vec<u16> {
        self.sections.iter().map(Section::id).collect()
    }

    /// The section with this id, if present.
    pub fn section(&self, id: u16) -> Option<&Section> {
        self.sections.iter().find(|s| s.id() == id)
    }

    /// The TCF EU v2 section, if present.
    pub fn tcfeuv2(&self) -> Option<&TcModel> {
        self.sections.iter().find_map(|s| match s {
            Section::TcfEuV2(m) => Some(m),
            _ => None,
        })
    }
}

/// One section of a GPP string. In JSON, an object whose `section` field names the variant
/// (`tcfeuv2`, `uspv1`, `usnat`, `unsupported`) beside the section's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "section")]
pub enum Section {
    /// Id 2: a TC string.
    #[serde(rename = "tcfeuv2")]
    TcfEuV2(TcModel),
    /// Id 6: the US Privacy string.
    #[serde(rename = "uspv1")]
    UspV1(UspV1),
    /// Id 7: MSPA US National.
    #[serde(rename = "usnat")]
    UsNat(UsNat),
    /// Any other section id: its text, unread.
    #[serde(rename = "unsupported")]
    Unsupported {
        /// The section id.
        id: u16,
        /// The section's text, exactly as in the string.
        raw: String,
    },
}

impl Section {
    /// The section id.
    pub fn id(&self) -> u16 {
        match self {
            Section::TcfEuV2(_) => TCFEUV2,
            Section::UspV1(_) => USPV1,
            Section::UsNat(_) => USNAT,
            Section::Unsupported { id, .. } => *id,
        }
    }
}

/// A `uspv1` value: `Y`, `N` or `-` (not applicable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UspFlag {
    /// `Y`.
    #[serde(rename = "Y")]
    Yes,
    /// `N`.
    #[serde(rename = "N")]
    No,
    /// `-`: not applicable.
    #[serde(rename = "-")]
    NotApplicable,
}

impl UspFlag {
    fn from_char(c: u8) -> Option<UspFlag> {
        match c {
            b'Y' => Some(UspFlag::Yes),
            b'N' => Some(UspFlag::No),
            b'-' => Some(UspFlag::NotApplicable),
            _ => None,
        }
    }

    fn as_char(self) -> char {
        match self {
            UspFlag::Yes => 'Y',
            UspFlag::No => 'N',
            UspFlag::NotApplicable => '-',
        }
    }
}

/// The `uspv1` section (id 6): the CCPA US Privacy string, such as `1YNN`. Field names as
/// iabgpp-es names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UspV1 {
    /// The specification version: 1.
    pub version: u8,
    /// Explicit notice given.
    pub notice: UspFlag,
    /// The user opted out of the sale of personal data.
    pub opt_out_sale: UspFlag,
    /// The publisher is a signatory of the IAB LSPA.
    pub lspa_covered: UspFlag,
}

/// The `usnat` section (id 7), MSPA US National. Field names as iabgpp-es names them.
///
/// Values: notices 0 = not applicable, 1 = yes, 2 = no; opt-outs 0 = not applicable, 1 = opted
/// out, 2 = did not opt out; consents 0 = not applicable, 1 = no consent, 2 = consent;
/// `mspa_covered_transaction` 1 = yes, 2 = no; the two MSPA modes 0 = not applicable, 1 = yes,
/// 2 = no.
///
/// Version 2 has 16 sensitive-data entries and 3 known-child entries; version 1 (decoded, not
/// encoded) has 12 and 2. In JSON every field is optional, with the defaults of iabgpp-es
/// (version 2, zeros, `mspa_covered_transaction` 1, `gpc` false).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsNat {
    /// Version (6 bits): 2, or 1 for older strings.
    pub version: u8,
    /// SharingNotice.
    pub sharing_notice: u8,
    /// SaleOptOutNotice.
    pub sale_opt_out_notice: u8,
    /// SharingOptOutNotice.
    pub sharing_opt_out_notice: u8,
    /// TargetedAdvertisingOptOutNotice.
    pub targeted_advertising_opt_out_notice: u8,
    /// SensitiveDataProcessingOptOutNotice.
    pub sensitive_data_processing_opt_out_notice: u8,
    /// SensitiveDataLimitUseNotice.
    pub sensitive_data_limit_use_notice: u8,
    /// SaleOptOut.
    pub sale_opt_out: u8,
    /// SharingOptOut.
    pub sharing_opt_out: u8,
    /// TargetedAdvertisingOptOut.
    pub targeted_advertising_opt_out: u8,
    /// SensitiveDataProcessing: 16 consents (12 in version 1).
    pub sensitive_data_processing: Vec<u8>,
    /// KnownChildSensitiveDataConsents: 3 consents (2 in version 1).
    pub known_child_sensitive_data_consents: Vec<u8>,
    /// PersonalDataConsents.
    pub personal_data_consents: u8,
    /// MspaCoveredTransaction: 1 = yes, 2 = no (0 is invalid).
    pub mspa_covered_transaction: u8,
    /// MspaOptOutOptionMode.
    pub mspa_opt_out_option_mode: u8,
    /// MspaServiceProviderMode.
    pub mspa_service_provider_mode: u8,
    /// The GPC subsegment's Gpc bit; `None` when the subsegment is absent.
    pub gpc: Option<bool>,
}

impl Default for UsNat {
    fn default() -> Self {
        UsNat {
            version: 2,
            sharing_notice: 0,
            sale_opt_out_notice: 0,
            sharing_opt_out_notice: 0,
            targeted_advertising_opt_out_notice: 0,
            sensitive_data_processing_opt_out_notice: 0,
            sensitive_data_limit_use_notice: 0,
            sale_opt_out: 0,
            sharing_opt_out: 0,
            targeted_advertising_opt_out: 0,
            sensitive_data_processing: vec![0; 16],
            known_child_sensitive_data_consents: vec![0; 3],
            personal_data_consents: 0,
            mspa_covered_transaction: 1,
            mspa_opt_out_option_mode: 0,
            mspa_service_provider_mode: 0,
            gpc: Some(false),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a GPP string.
///
/// The header must be Type 3, Version 1, and list exactly as many section ids as there are
/// `~`-separated sections. Sections 2, 6 and 7 are decoded (errors inside them come back as
/// [`Error::GppSection`]); other ids are kept as [`Section::Unsupported`].
pub fn decode(s: &str) -> Result<GppString, Error> {
    let mut parts = s.split('~');
    let header = parts.next().unwrap_or("");
    if header.is_empty() {
        return Err(Error::Empty {
            what: if s.is_empty() { "string" } else { "GPP header" }.into(),
        });
    }
    let bodies: Vec<&str> = parts.collect();
    let ids = with_reader(Segment::GppHeader, header, |r| read_header(r, bodies.len()))?;
    if ids.len() != bodies.len() {
        return Err(Error::GppStructure(format!(
            "the header lists {} section ids but {} sections follow",
            ids.len(),
            bodies.len()
        )));
    }
    let mut sections = Vec::with_capacity(ids.len());
    for (&id, &body) in ids.iter().zip(&bodies) {
        let wrap = |e: Error| Error::GppSection {
            id,
            name: section_name(id).unwrap_or("unknown"),
            source: Box::new(e),
        };
        if body.is_empty() {
            return Err(wrap(Error::Empty {
                what: "section".into(),
            }));
        }
        sections.push(match id {
            TCFEUV2 => Section::TcfEuV2(tc::decode(body).map_err(wrap)?),
            USPV1 => Section::UspV1(decode_uspv1(body).map_err(wrap)?),
            USNAT => Section::UsNat(decode_usnat(body).map_err(wrap)?),
            _ => Section::Unsupported {
                id,
                raw: body.to_owned(),
            },
        });
    }
    Ok(GppString { sections })
}

/// Type(6)=3, Version(6)=1, SectionIds as a Fibonacci range. Stops with an error as soon as
/// more ids than `available` sections are listed.
fn read_header(r: &mut BitReader<'_>, available: usize) -> Result<Vec<u16>, Error> {
    let kind = r.read(6, "Type")?;
    if kind != 3 {
        return Err(match kind {
            2 => Error::Unsupported("a TC string; decode it with tcf::decode".into()),
            k => r.invalid("Type", 0, format!("{k} is not 3 (GPP header)")),
        });
    }
    let version = r.read(6, "Version")?;
    if version != 1 {
        return Err(r.invalid("Version", 6, format!("{version} is not 1")));
    }
    let n = r.read(12, "SectionIds")?;
    let mut ids = Vec::new();
    let mut last: u16 = 0;
    let too_many = |n: usize| {
        Error::GppStructure(format!(
            "the header lists more section ids ({n} so far) than the {available} sections that follow"
        ))
    };
    for _ in 0..n {
        let at = r.pos();
        let group = r.bool("SectionIds")?;
        let start = last
            .checked_add(r.fibonacci("SectionIds")?)
            .ok_or_else(|| r.invalid("SectionIds", at, "section id above 65535".into()))?;
        let end = if group {
            start
                .checked_add(r.fibonacci("SectionIds")?)
                .ok_or_else(|| r.invalid("SectionIds", at, "section id above 65535".into()))?
        } else {
            start
        };
        if ids.len() + usize::from(end - start) + 1 > available {
            return Err(too_many(ids.len() + usize::from(end - start) + 1));
        }
        ids.extend(start..=end);
        last = end;
    }
    Ok(ids)
}

fn decode_uspv1(body: &str) -> Result<UspV1, Error> {
    let b = body.as_bytes();
    let invalid = |field: &'static str, i: usize, reason: String| Error::InvalidField {
        segment: Segment::UspV1,
        field,
        bit: i * 8,
        reason,
    };
    if b.len() != 4 {
        return Err(invalid(
            "length",
            0,
            format!("{} characters; uspv1 has exactly 4", body.chars().count()),
        ));
    }
    if b[0] != b'1' {
        return Err(invalid(
            "Version",
            0,
            format!("{:?} is not 1", char::from(b[0])),
        ));
    }
    let flag = |i: usize, field: &'static str| {
        UspFlag::from_char(b[i])
            .ok_or_else(|| invalid(field, i, format!("{:?} is not Y, N or -", char::from(b[i]))))
    };
    Ok(UspV1 {
        version: 1,
        notice: flag(1, "Notice")?,
        opt_out_sale: flag(2, "OptOutSale")?,
        lspa_covered: flag(3, "LspaCovered")?,
    })
}

fn decode_usnat(body: &str) -> Result<UsNat, Error> {
    let mut parts = body.split('.');
    let core = parts.next().unwrap_or("");
    let mut m = with_reader(Segment::UsNatCore, core, read_usnat_core)?;
    m.gpc = match parts.next() {
        None => None,
        Some("") => {
            return Err(Error::Empty {
                what: "usnat GPC subsegment".into(),
            });
        }
        Some(gpc) => Some(with_reader(Segment::UsNatGpc, gpc, |r| {
            let kind = r.read(2, "SubsectionType")?;
            if kind != 1 {
                return Err(r.invalid("SubsectionType", 0, format!("{kind} is not 1 (GPC)")));
            }
            r.bool("Gpc")
        })?),
    };
    if parts.next().is_some() {
        return Err(Error::Unsupported(
            "a usnat subsegment after the GPC subsegment".into(),
        ));
    }
    Ok(m)
}

fn read_usnat_core(r: &mut BitReader<'_>) -> Result<UsNat, Error> {
    let version = r.read(6, "Version")? as u8;
    // Version 1 has 12 sensitive-data and 2 known-child entries (60 bits); version 2 has 16
    // and 3 (70 bits). A version 2 string too short for its layout (some encoders wrote the
    // version 1 layout under version 2) is read as iabgpp-es reads it: the version 1 layout,
    // widened with zeros.
    let (sensitive, child, widen) = match version {
        1 => (12, 2, false),
        2 if r.remaining() + 6 < 70 => (12, 2, true),
        2 => (16, 3, false),
        v => return Err(r.invalid("Version", 0, format!("{v} is not 1 or 2"))),
    };
    let mut two = |field| r.read(2, field).map(|v| v as u8);
    let sharing_notice = two("SharingNotice")?;
    let sale_opt_out_notice = two("SaleOptOutNotice")?;
    let sharing_opt_out_notice = two("SharingOptOutNotice")?;
    let targeted_advertising_opt_out_notice = two("TargetedAdvertisingOptOutNotice")?;
    let sensitive_data_processing_opt_out_notice = two("SensitiveDataProcessingOptOutNotice")?;
    let sensitive_data_limit_use_notice = two("SensitiveDataLimitUseNotice")?;
    let sale_opt_out = two("SaleOptOut")?;
    let sharing_opt_out = two("SharingOptOut")?;
    let targeted_advertising_opt_out = two("TargetedAdvertisingOptOut")?;
    let mut sensitive_data_processing = (0..sensitive)
        .map(|_| two("SensitiveDataProcessing"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut known_child_sensitive_data_consents = (0..child)
        .map(|_| two("KnownChildSensitiveDataConsents"))
        .collect::<Result<Vec<_>, _>>()?;
    if widen {
        sensitive_data_processing.resize(16, 0);
        known_child_sensitive_data_consents.resize(3, 0);
    }
    Ok(UsNat {
        version,
        sharing_notice,
        sale_opt_out_notice,
        sharing_opt_out_notice,
        targeted_advertising_opt_out_notice,
        sensitive_data_processing_opt_out_notice,
        sensitive_data_limit_use_notice,
        sale_opt_out,
        sharing_opt_out,
        targeted_advertising_opt_out,
        sensitive_data_processing,
        known_child_sensitive_data_consents,
        personal_data_consents: two("PersonalDataConsents")?,
        mspa_covered_transaction: two("MspaCoveredTransaction")?,
        mspa_opt_out_option_mode: two("MspaOptOutOptionMode")?,
        mspa_service_provider_mode: two("MspaServiceProviderMode")?,
        gpc: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes a GPP string, byte for byte as iabgpp-es' `GppModel.encode` does.
///
/// Section ids must be strictly ascending. `usnat` must be version 2 with 16 and 3 entries and
/// values iabgpp-es accepts (0–2, `mspa_covered_transaction` 1–2); `uspv1` must be version 1;
/// tcfeuv2 follows [`crate::encode`]. An unsupported section's `raw` text is written as it is,
/// after checking that it is not empty, has no `~` and does not use a supported id.
pub fn encode(g: &GppString) -> Result<String, Error> {
    let ids = g.section_ids();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::encode(
            "sections",
            format!("section ids must be strictly ascending, not {ids:?}"),
        ));
    }
    if ids.first() == Some(&0) {
        return Err(Error::encode("sections", "section id 0 is not valid"));
    }
    let mut out = encode_header(&ids);
    for section in &g.sections {
        out.push('~');
        match section {
            Section::TcfEuV2(m) => out.push_str(&tc::encode(m)?),
            Section::UspV1(u) => {
                if u.version != 1 {
                    return Err(Error::encode(
                        "uspv1.version",
                        format!("{} is not 1", u.version),
                    ));
                }
                out.push('1');
                out.push(u.notice.as_char());
                out.push(u.opt_out_sale.as_char());
                out.push(u.lspa_covered.as_char());
            }
            Section::UsNat(u) => out.push_str(&encode_usnat(u)?),
            Section::Unsupported { id, raw } => {
                if matches!(*id, TCFEUV2 | USPV1 | USNAT) {
                    return Err(Error::encode(
                        "sections",
                        format!("section {id} is supported: give its fields, not raw text"),
                    ));
                }
                if raw.is_empty() || raw.contains('~') {
                    return Err(Error::encode(
                        "sections.raw",
                        format!("section {id}: raw text must be non-empty and without '~'"),
                    ));
                }
                out.push_str(raw);
            }
        }
    }
    Ok(out)
}

/// The header for these (ascending) ids: consecutive ids become groups.
fn encode_header(ids: &[u16]) -> String {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some(last) if u32::from(last.1) + 1 == u32::from(id) => last.1 = id,
            _ => runs.push((id, id)),
        }
    }
    let mut w = BitWriter::new();
    w.write(3, 6);
    w.write(1, 6);
    w.write(runs.len() as u64, 12);
    let mut offset = 0;
    for (a, b) in runs {
        w.bit(a != b);
        w.fibonacci(a - offset);
        if a != b {
            w.fibonacci(b - a);
        }
        offset = b;
    }
    w.finish_compressed()
}

fn encode_usnat(u: &UsNat) -> Result<String, Error> {
    if u.version != 2 {
        return Err(Error::encode(
            "usnat.version",
            format!(
                "{} cannot be encoded: only version 2 is written (version 1 is decode-only)",
                u.version
            ),
        ));
    }
    if u.sensitive_data_processing.len() != 16 {
        return Err(Error::encode(
            "usnat.sensitive_data_processing",
            format!(
                "{} entries; version 2 has 16",
                u.sensitive_data_processing.len()
            ),
        ));
    }
    if u.known_child_sensitive_data_consents.len() != 3 {
        return Err(Error::encode(
            "usnat.known_child_sensitive_data_consents",
            format!(
                "{} entries; version 2 has 3",
                u.known_child_sensitive_data_consents.len()
            ),
        ));
    }
    let fields: [(&'static str, u8); 9] = [
        ("usnat.sharing_notice", u.sharing_notice),
        ("usnat.sale_opt_out_notice", u.sale_opt_out_notice),
        ("usnat.sharing_opt_out_notice", u.sharing_opt_out_notice),
        (
            "usnat.targeted_advertising_opt_out_notice",
            u.targeted_advertising_opt_out_notice,
        ),
        (
            "usnat.sensitive_data_processing_opt_out_notice",
            u.sensitive_data_processing_opt_out_notice,
        ),
        (
            "usnat.sensitive_data_limit_use_notice",
            u.sensitive_data_limit_use_notice,
        ),
        ("usnat.sale_opt_out", u.sale_opt_out),
        ("usnat.sharing_opt_out", u.sharing_opt_out),
        (
            "usnat.targeted_advertising_opt_out",
            u.targeted_advertising_opt_out,
        ),
    ];
    let tail: [(&'static str, u8); 4] = [
        ("usnat.personal_data_consents", u.personal_data_consents),
        ("usnat.mspa_covered_transaction", u.mspa_covered_transaction),
        ("usnat.mspa_opt_out_option_mode", u.mspa_opt_out_option_mode),
        (
            "usnat.mspa_service_provider_mode",
            u.mspa_service_provider_mode,
        ),
    ];
    let lists = [
        (
            "usnat.sensitive_data_processing",
            &u.sensitive_data_processing,
        ),
        (
            "usnat.known_child_sensitive_data_consents",
            &u.known_child_sensitive_data_consents,
        ),
    ];
    for (field, v) in fields.iter().chain(&tail).copied().chain(
        lists
            .iter()
            .flat_map(|&(f, l)| l.iter().map(move |&v| (f, v))),
    ) {
        if v > 2 {
            return Err(Error::encode(field, format!("{v} is not 0, 1 or 2")));
        }
    }
    if u.mspa_covered_transaction == 0 {
        return Err(Error::encode(
            "usnat.mspa_covered_transaction",
            "0 is not valid: 1 = yes, 2 = no",
        ));
    }
    let mut w = BitWriter::new();
    w.write(2, 6);
    for (_, v) in fields {
        w.write(u64::from(v), 2);
    }
    for &v in u
        .sensitive_data_processing
        .iter()
        .chain(&u.known_child_sensitive_data_consents)
    {
        w.write(u64::from(v), 2);
    }
    for (_, v) in tail {
        w.write(u64::from(v), 2);
    }
    let mut out = w.finish_compressed();
    if let Some(gpc) = u.gpc {
        let mut w = BitWriter::new();
        w.write(1, 2);
        w.bit(gpc);
        out.push('.');
        out.push_str(&w.finish_compressed());
    }
    Ok(out)
}
