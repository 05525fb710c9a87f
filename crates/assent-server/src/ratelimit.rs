//! Rate limits (API.md §1): a fixed window of requests per organization and route class.
//!
//! Three classes are counted apart:
//! - `/v1/consents/*`, and every request made with an end user's consent token, per
//!   organization: not throttled unless configured;
//! - every other `/v1` route, per organization (100 requests per 15 s by default);
//! - `POST /v1/sessions`, per API key: there is no organization before the session exists, so
//!   the count is kept under the SHA-256 of the key id (never the key id or the secret itself).
//!
//! A window opens with a key's first request and lasts the configured duration; within it at
//! most `limit` requests pass. Every answer of a counted request carries the IETF draft-7
//! headers `RateLimit: limit=L, remaining=R, reset=S` and `RateLimit-Policy: L;w=W`; a refused
//! one is a 429 `TooManyRequests` with `Retry-After` as well.
//!
//! The counts live in this process: behind a load balancer, each server counts on its own.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The `RateLimit` header (IETF draft-ietf-httpapi-ratelimit-headers-07).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The `RateLimit-Policy` header (IETF draft-ietf-httpapi-ratelimit-headers-07).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// A rate: at most `limit` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one window (at least 1).
    pub limit: u32,
    /// The length of a window (at least one second).
    pub window: Duration,
}

impl Rate {
    /// The default of every `/v1` route but `/v1/consents/*`: 100 requests per 15 seconds.
    pub const DEFAULT: Rate = Rate {
        limit: 100,
        window: Duration::from_secs(15),
    };
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.limit, self.window.as_secs())
    }
}

/// A rate limit setting: a [`Rate`], or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting(pub Option<Rate>);

impl FromStr for RateSetting {
    type Err = String;

    /// Parses `off`, or `N/DURATION` with a humantime duration: `100/15s`, `1000/1m`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateSetting(None));
        }
        let (limit, window) = s
            .split_once('/')
            .ok_or_else(|| format!("'{s}' is not a rate: write N/DURATION (100/15s) or off"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("'{limit}' is not a positive number of requests"))?;
        let window = humantime::parse_duration(window.trim())
            .map_err(|e| format!("'{window}' is not a duration: {e}"))?;
        if window < Duration::from_secs(1) || window.subsec_nanos() != 0 {
            return Err(format!(
                "the window '{}' must be a whole number of seconds, at least 1s",
                window.as_secs_f64()
            ));
        }
        Ok(RateSetting(Some(Rate { limit, window })))
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(rate) => rate.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// The rate limits a server applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Every `/v1` route but `/v1/consents/*`, per organization; also `POST /v1/sessions`, per
    /// API key. `None`: not throttled.
    pub api: Option<Rate>,
    /// `/v1/consents/*`, per organization. `None`: not throttled.
    pub consents: Option<Rate>,
}

impl Default for RateLimitConfig {
    /// The contract's defaults: [`Rate::DEFAULT`] on every route but `/v1/consents/*`.
    fn default() -> Self {
        RateLimitConfig {
            api: Some(Rate::DEFAULT),
            consents: None,
        }
    }
}

impl RateLimitConfig {
    /// No rate limit at all.
    pub fn off() -> Self {
        RateLimitConfig {
            api: None,
            consents: None,
        }
    }
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    rate: Rate,
    allowed: bool,
    remaining: u32,
    reset: Duration,
}

impl Decision {
    /// Whether the request may go on.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Seconds until the window resets, rounded up (at least 1).
    fn reset_secs(&self) -> u64 {
        let secs = self.reset.as_secs() + u64::from(self.reset.subsec_nanos() > 0);
        secs.max(1)
    }

    /// Adds the `RateLimit` and `RateLimit-Policy` headers (and `Retry-After` when refused).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let reset = self.reset_secs();
        let value = |s: String| HeaderValue::try_from(s).expect("digits and ASCII punctuation");
        headers.insert(
            RATELIMIT.clone(),
            value(format!(
                "limit={}, remaining={}, reset={reset}",
                self.rate.limit, self.remaining
            )),
        );
        headers.insert(
            RATELIMIT_POLICY.clone(),
            value(format!(
                "{};w={}",
                self.rate.limit,
                self.rate.window.as_secs()
            )),
        );
        if !self.allowed {
            headers.insert(RETRY_AFTER, value(reset.to_string()));
        }
    }

    /// The 429 answer of a refused request.
    pub fn refusal(&self) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {} requests in {} seconds; retry in {} seconds",
                self.rate.limit,
                self.rate.window.as_secs(),
                self.reset_secs()
            ),
        )
        .into_response();
        self.apply(response.headers_mut());
        response
    }
}

/// One key's window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// Fixed windows of one rate, by key.
#[derive(Debug)]
pub struct Limiter<K: Eq + Hash> {
    rate: Rate,
    windows: DashMap<K, Window>,
    last_sweep: Mutex<Instant>,
}

impl<K: Eq + Hash + Clone> Limiter<K> {
    /// A limiter of `rate`.
    pub fn new(rate: Rate) -> Self {
        Limiter {
            rate,
            windows: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Counts one request of `key` at `now`.
    pub fn check_at(&self, key: &K, now: Instant) -> Decision {
        self.sweep(now);
        let rate = self.rate;
        let mut entry = self.windows.entry(key.clone()).or_insert(Window {
            start: now,
            count: 0,
        });
        let window = entry.value_mut();
        if now.saturating_duration_since(window.start) >= rate.window {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        let reset = rate
            .window
            .saturating_sub(now.saturating_duration_since(window.start));
        let allowed = window.count < rate.limit;
        if allowed {
            window.count += 1;
        }
        Decision {
            rate,
            allowed,
            remaining: rate.limit - window.count,
            reset,
        }
    }

    /// Counts one request of `key` now.
    pub fn check(&self, key: &K) -> Decision {
        self.check_at(key, Instant::now())
    }

    /// How many keys have a window open (or expired and not yet swept).
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no key has a window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Forgets expired windows, at most once per window length, so that the map holds only
    /// the keys seen in the last window or two.
    fn sweep(&self, now: Instant) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if now.saturating_duration_since(*last) < self.rate.window {
            return;
        }
        *last = now;
        drop(last);
        let window = self.rate.window;
        self.windows
            .retain(|_, w| now.saturating_duration_since(w.start) < window);
    }
}

/// The limiters of a server, one per route class.
#[derive(Debug)]
pub struct RateLimits {
    api: Option<Limiter<String>>,
    consents: Option<Limiter<String>>,
    sessions: Option<Limiter<[u8; 32]>>,
}

impl RateLimits {
    /// The limiters of `config`.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimits {
            api: config.api.map(Limiter::new),
            consents: config.consents.map(Limiter::new),
            sessions: config.api.map(Limiter::new),
        }
    }

    /// Counts a `POST /v1/sessions` for API key `key_id` (`None` when not throttled). The key
    /// id is hashed: the counts never hold a credential.
    pub fn session(&self, key_id: &str) -> Option<Decision> {
        let limiter = self.sessions.as_ref()?;
        let digest: [u8; 32] = Sha256::digest(key_id.as_bytes()).into();
        Some(limiter.check(&digest))
    }

    /// Counts a request of organization `org` to `path` (`None` when not throttled). Requests
    /// made with an end user's consent token count with `/v1/consents/*`: they are the
    /// preference center's traffic (its reads of `/v1/purposes` and `/v1/preference-center`),
    /// which grows with the organization's audience, not with its administrators.
    fn route(&self, path: &str, org: &str, end_user: bool) -> Option<Decision> {
        let class = match RouteClass::of(path)? {
            RouteClass::Api if end_user => RouteClass::Consents,
            class => class,
        };
        let limiter = match class {
            RouteClass::Consents => self.consents.as_ref()?,
            RouteClass::Api => self.api.as_ref()?,
        };
        Some(limiter.check(&org.to_owned()))
    }
}

/// The classes of routes counted per organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteClass {
    /// `/v1/consents/*`.
    Consents,
    /// Every other `/v1` route but `POST /v1/sessions`, which counts per key.
    Api,
}

impl RouteClass {
    /// The class of a path; `None` for routes counted elsewhere or not at all.
    fn of(path: &str) -> Option<RouteClass> {
        let rest = path.strip_prefix("/v1/")?;
        if rest == "sessions" {
            None
        } else if rest == "consents" || rest.starts_with("consents/") {
            Some(RouteClass::Consents)
        } else {
            Some(RouteClass::Api)
        }
    }
}

/// Middleware: counts each `/v1` request that carries a valid session token against the
/// token's organization, refuses it with 429 beyond the limit, and adds the rate-limit headers
/// to the answer. Requests without a valid session token are not counted here: they are
/// refused at once by the route's authentication (or, for the inbound webhook, checked
/// against the integration's own token).
pub async fn throttle(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let decision = bearer(req.headers())
        .and_then(|token| state.sessions.verify(token).ok())
        .and_then(|claims| {
            state
                .limits
                .route(req.uri().path(), &claims.org, claims.grant.is_some())
        });
    match decision {
        None => next.run(req).await,
        Some(d) if !d.allowed() => d.refusal(),
        Some(d) => {
            let mut response = next.run(req).await;
            d.apply(response.headers_mut());
            response
        }
    }
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let h = headers.get(AUTHORIZATION)?.to_str().ok()?;
    h.strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(limit: u32, secs: u64) -> Rate {
        Rate {
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn parses_rates_and_off() {
        assert_eq!(
            "100/15s".parse::<RateSetting>().unwrap(),
            RateSetting(Some(rate(100, 15)))
        );
        assert_eq!(
            "1000/1m".parse::<RateSetting>().unwrap(),
            RateSetting(Some(rate(1000, 60)))
        );
        assert_eq!("off".parse::<RateSetting>().unwrap(), RateSetting(None));
        assert_eq!("OFF".parse::<RateSetting>().unwrap(), RateSetting(None));
        for bad in [
            "",
            "100",
            "0/15s",
            "-1/15s",
            "100/",
            "100/500ms",
            "100/1.5s",
            "x/15s",
        ] {
            assert!(
                bad.parse::<RateSetting>().is_err(),
                "{bad} should not parse"
            );
        }
        assert_eq!(RateSetting(Some(rate(100, 15))).to_string(), "100/15s");
        assert_eq!(RateSetting(None).to_string(), "off");
    }

    #[test]
    fn a_window_allows_the_limit_then_refuses_until_it_resets() {
        let limiter = Limiter::new(rate(3, 10));
        let t0 = Instant::now();
        let key = "org".to_owned();
        for remaining in [2, 1, 0] {
            let d = limiter.check_at(&key, t0);
            assert!(d.allowed());
            assert_eq!(d.remaining, remaining);
            assert_eq!(d.reset_secs(), 10);
        }
        let refused = limiter.check_at(&key, t0 + Duration::from_millis(2500));
        assert!(!refused.allowed());
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_secs(), 8, "7.5 s left, rounded up");
        assert!(limiter.check_at(&"other".to_owned(), t0).allowed());
        let next = limiter.check_at(&key, t0 + Duration::from_secs(10));
        assert!(next.allowed(), "a new window opens");
        assert_eq!(next.remaining, 2);
    }

    #[test]
    fn expired_windows_are_swept() {
        let limiter = Limiter::new(rate(1, 1));
        let t0 = Instant::now();
        for i in 0..100 {
            limiter.check_at(&format!("k{i}"), t0);
        }
        assert_eq!(limiter.len(), 100);
        limiter.check_at(&"late".to_owned(), t0 + Duration::from_secs(5));
        assert_eq!(limiter.len(), 1, "only the live window is kept");
    }

    #[test]
    fn headers_follow_draft_7() {
        let limiter = Limiter::new(rate(2, 15));
        let t0 = Instant::now();
        let key = "org".to_owned();
        let mut headers = HeaderMap::new();
        limiter.check_at(&key, t0).apply(&mut headers);
        assert_eq!(headers[&RATELIMIT], "limit=2, remaining=1, reset=15");
        assert_eq!(headers[&RATELIMIT_POLICY], "2;w=15");
        assert!(!headers.contains_key(RETRY_AFTER));
        limiter.check_at(&key, t0);
        let refused = limiter.check_at(&key, t0 + Duration::from_secs(4));
        let response = refused.refusal();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "11");
        assert_eq!(
            response.headers()[&RATELIMIT],
            "limit=2, remaining=0, reset=11"
        );
    }

    #[test]
    fn routes_are_classed_by_path() {
        assert_eq!(
            RouteClass::of("/v1/consents/events"),
            Some(RouteClass::Consents)
        );
        assert_eq!(
            RouteClass::of("/v1/consents/users/u1"),
            Some(RouteClass::Consents)
        );
        assert_eq!(RouteClass::of("/v1/keys"), Some(RouteClass::Api));
        assert_eq!(
            RouteClass::of("/v1/marketplace/integrations"),
            Some(RouteClass::Api)
        );
        assert_eq!(RouteClass::of("/v1/consentsx"), Some(RouteClass::Api));
        assert_eq!(RouteClass::of("/v1/sessions"), None);
        assert_eq!(RouteClass::of("/healthz"), None);
    }

    #[test]
    fn sessions_are_counted_by_key_and_never_hold_it() {
        let limits = RateLimits::new(&RateLimitConfig {
            api: Some(rate(1, 15)),
            consents: None,
        });
        assert!(limits.session("key-a").unwrap().allowed());
        assert!(!limits.session("key-a").unwrap().allowed());
        assert!(limits.session("key-b").unwrap().allowed());
        let held = limits.sessions.as_ref().unwrap();
        let expected: [u8; 32] = Sha256::digest(b"key-a").into();
        assert!(held.windows.contains_key(&expected));
        assert!(
            RateLimits::new(&RateLimitConfig::off())
                .session("k")
                .is_none()
        );
    }
}
