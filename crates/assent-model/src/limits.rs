//! Bounds on every input, so that no request can make the server do unbounded work.

/// Most bytes in a request body on every route but proof uploads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 100;
/// Deepest JSON nesting accepted anywhere in a body.
pub const MAX_JSON_DEPTH: usize = 32;
/// Most bytes of one `metadata` object, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Most bytes of one JSON string.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Most characters of an identifier (event, user, purpose, channel, vendor, ...).
pub const MAX_ID_CHARS: usize = 255;
/// Default page size of list routes.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// Largest page size of list routes.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// How far in the future an event's `created_at` may be, to absorb clock skew (milliseconds).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
