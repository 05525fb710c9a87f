//! What can go wrong decoding or encoding a string, and where.

use std::fmt;

/// The part of a string an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// The TC string's core segment (the first one).
    Core,
    /// The TC string's DisclosedVendors segment (segment type 1).
    DisclosedVendors,
    /// The TC string's deprecated AllowedVendors segment (segment type 2).
    AllowedVendors,
    /// The TC string's PublisherTC segment (segment type 3).
    PublisherTc,
    /// A TC string segment whose type is not known yet (its first 3 bits).
    Unknown,
    /// The GPP header.
    GppHeader,
    /// The core segment of the GPP `usnat` section.
    UsNatCore,
    /// The GPC subsegment of the GPP `usnat` section.
    UsNatGpc,
    /// The GPP `uspv1` section.
    UspV1,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Core => "core segment",
            Segment::DisclosedVendors => "DisclosedVendors segment",
            Segment::AllowedVendors => "AllowedVendors segment",
            Segment::PublisherTc => "PublisherTC segment",
            Segment::Unknown => "segment",
            Segment::GppHeader => "GPP header",
            Segment::UsNatCore => "usnat core segment",
            Segment::UsNatGpc => "usnat GPC subsegment",
            Segment::UspV1 => "uspv1 section",
        })
    }
}

/// Why a string could not be decoded or a model could not be encoded.
///
/// Decoding errors name the segment, the field as the IAB specification names it, and the bit
/// offset of that field from the start of the segment. Encoding errors name the model field
/// (as in [`crate::TcModel`]'s JSON).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is empty (or a segment between two `.` or `~` is).
    #[error("empty {what}")]
    Empty {
        /// What was empty: "string", "segment 2", "GPP section 3".
        what: String,
    },
    /// A character outside the base64url alphabet `A–Z a–z 0–9 - _`.
    #[error("{segment}: invalid base64url character {character:?} at position {position}")]
    InvalidBase64 {
        /// The segment holding the character.
        segment: Segment,
        /// Its byte offset within the segment.
        position: usize,
        /// The character.
        character: char,
    },
    /// The segment ends before a field does.
    #[error(
        "{segment}: truncated: {field} at bit {bit} needs {needed} bits, only {available} remain"
    )]
    Truncated {
        /// The segment.
        segment: Segment,
        /// The field being read.
        field: &'static str,
        /// The field's bit offset from the start of the segment.
        bit: usize,
        /// Bits the field needs.
        needed: usize,
        /// Bits left in the segment, padding included.
        available: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{segment}: invalid {field} at bit {bit}: {reason}")]
    InvalidField {
        /// The segment.
        segment: Segment,
        /// The field.
        field: &'static str,
        /// The field's bit offset from the start of the segment.
        bit: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The string is of a kind or version this crate does not read (a TCF v1 string, a GPP
    /// string given to the TC decoder, a repeated segment…).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A GPP string's structure is wrong: the header's section ids do not match its sections.
    #[error("GPP string: {0}")]
    GppStructure(String),
    /// An error inside one section of a GPP string.
    #[error("GPP section {id} ({name}): {source}")]
    GppSection {
        /// The section id.
        id: u16,
        /// The section's prefix, such as `tcfeuv2`.
        name: &'static str,
        /// What went wrong inside it.
        source: Box<Error>,
    },
    /// A model field cannot be encoded.
    #[error("cannot encode {field}: {reason}")]
    Encode {
        /// The model field, as in the JSON (`is_service_specific`, `usnat.version`…).
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn encode(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Encode {
            field,
            reason: reason.into(),
        }
    }
}
