//! The consent domain of Assent, with no I/O.
//!
//! Consent events are the record of truth; a user's consent status is the fold of its confirmed
//! events. This crate parses and validates what clients send ([`event`], [`user`], and the
//! notice shape of CMP SDKs in [`notice`]), holds the
//! merge rules that turn events into a status ([`status`]), the query language used to
//! select events and users ([`filter`], [`query`]), and how a status becomes an IAB TCF
//! string ([`tcf`], over the `assent-tcf` codec). Storage and HTTP live elsewhere.

pub mod consents;
pub mod error;
pub mod event;
pub mod export;
pub mod filter;
pub mod ids;
pub mod inbound;
pub mod integration;
pub mod json;
pub mod limits;
pub mod look;
pub mod notice;
pub mod proof;
pub mod purpose;
pub mod query;
pub mod registry;
pub mod settings;
pub mod stats;
pub mod status;
pub mod tcf;
pub mod time;
pub mod token;
pub mod user;

pub use error::{DomainError, FieldErrors};
pub use event::{ConsentEvent, EventBody, EventInput, EventStatus};
pub use ids::{EventId, OrganizationId, Regulation};
pub use status::{ConsentStatus, Stamp, UserState};
pub use time::Timestamp;
