//! IAB TCF v2.2 / 2.3 TC strings and IAB GPP strings: decode, encode, build. No I/O.
//!
//! - [`decode`] reads every TC string segment (core with publisher restrictions and both
//!   vendor encodings, DisclosedVendors, the deprecated AllowedVendors, PublisherTC with custom
//!   purposes) into a [`TcModel`]; [`encode`] writes `core.disclosedVendors.publisherTC`
//!   byte for byte as the IAB's iabgpp-es library does.
//! - [`gpp`] does the same for GPP strings: the header, `tcfeuv2`, `uspv1` and `usnat`;
//!   other sections are kept as raw text with their id.
//! - [`builder`] turns the API's `iab.tcf` parameters and a user's choices into a
//!   [`TcModel`].
//!
//! Every model type is serde-serializable with snake_case fields, so a CLI can print a decoded
//! string as JSON and encode one from JSON. Errors ([`Error`]) say what is wrong and where: the
//! segment, the field as the specification names it, and its bit offset.

mod bits;
pub mod builder;
pub mod error;
pub mod gpp;
mod tc;
pub mod types;

pub use error::{Error, Segment};
pub use tc::{LI_FORBIDDEN_PURPOSES, TcModel, decode, encode};
pub use types::{Alpha2, Deciseconds, IdSet, PublisherRestriction, PurposeSet, RestrictionType};

/// TC strings: the crate root's [`decode`], [`encode`] and [`TcModel`] under a name parallel to
/// [`gpp`].
pub mod tcf {
    pub use crate::tc::{TcModel, decode, encode};
}
