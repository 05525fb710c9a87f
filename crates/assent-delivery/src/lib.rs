//! Building blocks of Assent's outgoing webhook and connector delivery.
//!
//! Each module stands alone and does no storage of its own:
//!
//! - [`signature`] signs payloads the Standard Webhooks 1.0 way (`whsec_` secrets, `v1,`
//!   HMAC-SHA256 signatures).
//! - [`schedule`] decides when a failed delivery is tried again, and when it is parked.
//! - [`http`] sends requests to customer-chosen URLs without letting them reach private,
//!   loopback or otherwise internal addresses (SSRF protection), with bounded time and size.
//! - [`oauth`] obtains and caches OAuth 2.0 client-credentials bearer tokens for destinations
//!   that require one.
//! - [`webhook`] delivers a change to a `webhook-http` integration.
//! - [`connectors`] deliver a user's consent to the `actito` and `mparticle` integrations.
//! - [`worker`] runs inside `assent serve`: takes due deliveries from the store, sends them,
//!   records each attempt.

pub mod connectors;
pub mod http;
pub mod oauth;
pub mod schedule;
pub mod signature;
pub mod webhook;
pub mod worker;
