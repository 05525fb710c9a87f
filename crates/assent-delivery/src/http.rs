//! An outgoing HTTP client that is safe to point at customer-chosen URLs.
//!
//! Destinations are configured by tenants, so a URL may name (or resolve to, or redirect to)
//! an address inside the operator's network: loopback, a private range, the cloud metadata
//! service at 169.254.169.254, and so on. [`OutboundClient`] refuses all of those unless the
//! operator allowed the network explicitly (see [`HttpConfig::allowed_networks`]):
//!
//! - IP-literal hosts are checked before sending ([`OutboundClient::check_url`]);
//! - host names are resolved by a resolver that drops refused addresses, so the connection
//!   goes only to an address that was checked (no DNS-rebinding window);
//! - redirects are followed only to http(s) URLs whose IP-literal host is not refused (host
//!   names are checked by the resolver when connecting), and only so many times;
//! - system proxies are ignored, since they would connect on the client's behalf.
//!
//! Every request is bounded in time (connect and total) and in the size of the response body
//! that is kept.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::redirect::{Attempt, Policy};
use reqwest::{Method, Url};
use url::Host;

use crate::schedule::parse_retry_after;

/// The `User-Agent` of every outgoing request.
const USER_AGENT: &str = concat!("Assent-Webhooks/", env!("CARGO_PKG_VERSION"));

/// Limits and exceptions of an [`OutboundClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Longest time for a whole request: connecting, sending, and reading the answer's body
    /// (default 15 s).
    pub timeout: Duration,
    /// Longest time to establish the connection, TLS included (default 5 s).
    pub connect_timeout: Duration,
    /// Most bytes of an answer's body that are kept; the rest is not read (default 64 KiB).
    pub max_response_bytes: usize,
    /// Networks that may be reached even though [`is_refused`] refuses them, such as a
    /// private range where the operator's own receivers live (default none).
    pub allowed_networks: Vec<IpNet>,
    /// Most redirects followed for one request (default 5).
    pub max_redirects: usize,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 64 * 1024,
            allowed_networks: Vec::new(),
            max_redirects: 5,
        }
    }
}

/// Whether outgoing requests must not reach `ip`: true for loopback, private (10/8,
/// 172.16/12, 192.168/16), carrier-grade NAT (100.64/10), link-local (169.254/16, fe80::/10),
/// unique-local (fc00::/7), unspecified, broadcast, multicast, documentation, benchmarking and
/// reserved addresses, 0.0.0.0/8, and the IPv6 forms that embed such an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64, 6to4); false for any address in one of the
/// `allowed` networks.
pub fn is_refused(ip: IpAddr, allowed: &[IpNet]) -> bool {
    let embedded = match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => embedded_ipv4(v6),
    };
    let is_allowed = |ip: IpAddr| allowed.iter().any(|net| net.contains(&ip));
    if is_allowed(ip) || embedded.is_some_and(|v4| is_allowed(IpAddr::V4(v4))) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => is_refused_v4(v4),
        IpAddr::V6(v6) => embedded.map_or_else(|| is_refused_v6(v6), is_refused_v4),
    }
}

/// Whether an IPv4 address is in a range that must not be reached.
fn is_refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", including the unspecified address
        || a == 10 // private
        || (a == 100 && b & 0xc0 == 64) // carrier-grade NAT, 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, cloud metadata services
        || (a == 172 && b & 0xf0 == 16) // private, 172.16/12
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168) // private
        || (a == 198 && b & 0xfe == 18) // benchmarking, 198.18/15
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast, reserved, broadcast
}

/// Whether an IPv6 address that embeds no IPv4 address is in a range that must not be
/// reached.
fn is_refused_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || s[0] & 0xffc0 == 0xfe80 // link-local
        || s[0] & 0xffc0 == 0xfec0 // site-local (deprecated)
        || s[0] & 0xfe00 == 0xfc00 // unique-local
        || s[0] & 0xff00 == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation, 3fff::/20
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64, 64:ff9b:1::/48
}

/// The IPv4 address an IPv6 address stands for, when it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, also covering `::` and `::1`), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let from = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0; 6] || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4]) {
        Some(from(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(from(s[1], s[2]))
    } else {
        None
    }
}

/// One request to send through an [`OutboundClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRequest {
    /// The HTTP method.
    pub method: Method,
    /// The destination URL, `http` or `https`.
    pub url: String,
    /// Request headers, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The request body (empty for none).
    pub body: Vec<u8>,
}

/// What a destination answered.
#[derive(Clone, Debug)]
pub struct OutboundResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The start of the response body: at most [`HttpConfig::max_response_bytes`] bytes.
    pub body: Vec<u8>,
    /// Whether the body was longer than what [`OutboundResponse::body`] holds.
    pub truncated: bool,
    /// The wait the destination asked for in its `Retry-After` header, if it sent a valid one.
    pub retry_after: Option<Duration>,
    /// The time from sending the request to having read the (kept part of the) body.
    pub duration: Duration,
}

impl OutboundResponse {
    /// Whether the status is a success (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no answer.
///
/// The messages are meant for a delivery log shown to the destination's owner: they never
/// contain request headers or bodies, which may hold secrets, nor the full request URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The destination (or a redirect target) is an address that must not be reached, or its
    /// URL is not an http(s) URL with a host.
    Refused(String),
    /// No complete answer came within the configured time.
    Timeout,
    /// The connection could not be established (DNS failure, connection refused, TLS error).
    Connect(String),
    /// Any other failure: an invalid request, a broken answer, too many redirects.
    Other(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Refused(reason) => write!(f, "refused: {reason}"),
            SendError::Timeout => f.write_str("timed out waiting for the destination"),
            SendError::Connect(reason) => write!(f, "could not connect: {reason}"),
            SendError::Other(reason) => f.write_str(reason),
        }
    }
}

impl StdError for SendError {}

/// A destination refused by the SSRF rules, as an error that travels through reqwest (from
/// the resolver or the redirect policy) and is recognised on the way out.
#[derive(Debug)]
struct Refusal(String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refusal {}

/// Why a URL may not be requested.
enum UrlProblem {
    /// It does not parse.
    Invalid(String),
    /// It parses but must not be requested.
    Refused(String),
}

impl UrlProblem {
    fn into_message(self) -> String {
        match self {
            UrlProblem::Invalid(message) | UrlProblem::Refused(message) => message,
        }
    }
}

impl From<UrlProblem> for SendError {
    fn from(problem: UrlProblem) -> SendError {
        match problem {
            UrlProblem::Invalid(message) => SendError::Other(message),
            UrlProblem::Refused(message) => SendError::Refused(message),
        }
    }
}

/// What makes a parsed URL unfit to request, before any resolving.
enum TargetProblem {
    /// The scheme is not http or https.
    Scheme(String),
    /// There is no host.
    NoHost,
    /// The host is an IP address that is refused.
    RefusedIp(IpAddr),
}

impl TargetProblem {
    /// The problem of the URL a request was asked for.
    fn of_url(&self) -> String {
        match self {
            TargetProblem::Scheme(scheme) => {
                format!("the URL scheme {scheme:?} is not http or https")
            }
            TargetProblem::NoHost => "the URL has no host".to_owned(),
            TargetProblem::RefusedIp(ip) => {
                format!("{ip} is a private, loopback or reserved address")
            }
        }
    }

    /// The problem of a URL a destination redirected to.
    fn of_redirect(&self) -> String {
        match self {
            TargetProblem::Scheme(scheme) => format!("redirect to a {scheme:?} URL"),
            TargetProblem::NoHost => "redirect to a URL without a host".to_owned(),
            TargetProblem::RefusedIp(ip) => {
                format!("redirect to {ip}, a private, loopback or reserved address")
            }
        }
    }
}

/// Checks the parts of a parsed URL that can be checked without resolving it: http(s), a
/// host, and an IP-literal host that is not refused.
fn check_target(url: &Url, allowed: &[IpNet]) -> Result<(), TargetProblem> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetProblem::Scheme(url.scheme().to_owned()));
    }
    let ip = match url.host() {
        None => return Err(TargetProblem::NoHost),
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    if is_refused(ip, allowed) {
        Err(TargetProblem::RefusedIp(ip))
    } else {
        Ok(())
    }
}

/// Resolves host names with the system resolver and keeps only the addresses that are not
/// refused.
struct GuardedResolver {
    allowed: Arc<[IpNet]>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = Arc::clone(&self.allowed);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| !is_refused(addr.ip(), &allowed))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(Refusal(format!(
                    "{host} resolves only to refused addresses"
                ))) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy: at most `max_redirects` redirects, each to an http(s) URL whose
/// IP-literal host is not refused.
fn redirect_policy(max_redirects: usize, allowed: Arc<[IpNet]>) -> Policy {
    Policy::custom(move |attempt: Attempt| {
        // `previous` holds the original URL and every URL redirected to so far.
        if attempt.previous().len() > max_redirects {
            let message = format!("too many redirects (more than {max_redirects})");
            return attempt.error(message);
        }
        match check_target(attempt.url(), &allowed) {
            Ok(()) => attempt.follow(),
            Err(problem) => attempt.error(Refusal(problem.of_redirect())),
        }
    })
}

/// An HTTP client for customer-chosen URLs that enforces the SSRF rules and the limits of its
/// [`HttpConfig`]. Cloning it is cheap and shares its connection pool.
#[derive(Clone, Debug)]
pub struct OutboundClient {
    client: reqwest::Client,
    allowed: Arc<[IpNet]>,
    max_response_bytes: usize,
}

impl OutboundClient {
    /// Builds a client with `config`'s limits and exceptions.
    pub fn new(config: HttpConfig) -> Result<OutboundClient, String> {
        let allowed: Arc<[IpNet]> = config.allowed_networks.into();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .dns_resolver(GuardedResolver {
                allowed: Arc::clone(&allowed),
            })
            .redirect(redirect_policy(config.max_redirects, Arc::clone(&allowed)))
            .referer(false)
            .no_proxy()
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {}", describe(&error)))?;
        Ok(OutboundClient {
            client,
            allowed,
            max_response_bytes: config.max_response_bytes,
        })
    }

    /// Parses `url` and checks what can be checked before connecting: it must be http or
    /// https, have a host, and its host must not be a refused IP address. Host names are
    /// checked when they are resolved, on every request.
    pub fn check_url(&self, url: &str) -> Result<Url, String> {
        self.checked(url).map_err(UrlProblem::into_message)
    }

    fn checked(&self, url: &str) -> Result<Url, UrlProblem> {
        let parsed = Url::parse(url)
            .map_err(|error| UrlProblem::Invalid(format!("invalid URL: {error}")))?;
        check_target(&parsed, &self.allowed)
            .map_err(|problem| UrlProblem::Refused(problem.of_url()))?;
        Ok(parsed)
    }

    /// Sends `req` and reads the answer, keeping at most `max_response_bytes` of its body.
    ///
    /// Any answer, whatever its status, is `Ok`; `Err` means there was no (complete) answer.
    pub async fn send(&self, req: OutboundRequest) -> Result<OutboundResponse, SendError> {
        // reqwest does not call the resolver for IP literals: check them here.
        let url = self.checked(&req.url)?;
        let headers = header_map(&req.headers)?;
        let started = Instant::now();
        let mut response = self
            .client
            .request(req.method, url)
            .headers(headers)
            .body(req.body)
            .send()
            .await
            .map_err(|error| classify(&error))?;

        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let retry_after = headers
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));

        let limit = self.max_response_bytes;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|error| classify(&error))? {
            if body.len() + chunk.len() > limit {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        // Dropping the response closes the connection when the body was not read to its end.
        drop(response);

        Ok(OutboundResponse {
            status,
            headers,
            body,
            truncated,
            retry_after,
            duration: started.elapsed(),
        })
    }
}

/// The request headers as a header map; a bad name or value is reported without the value.
fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, SendError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::Other(format!("invalid request header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| SendError::Other(format!("invalid value for request header {name}")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// Sorts a reqwest error into a [`SendError`].
fn classify(error: &reqwest::Error) -> SendError {
    if let Some(refusal) = find_cause::<Refusal>(error) {
        SendError::Refused(refusal.0.clone())
    } else if error.is_timeout() {
        SendError::Timeout
    } else if error.is_connect() {
        SendError::Connect(describe_causes(error))
    } else {
        SendError::Other(describe(error))
    }
}

/// The first error of type `T` in `error`'s chain of causes.
fn find_cause<T: StdError + 'static>(error: &reqwest::Error) -> Option<&T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// A reqwest error and its causes in one line, without the request URL.
fn describe(error: &reqwest::Error) -> String {
    let top = match error.url() {
        Some(_) => {
            // The URL may carry credentials or tokens in its query: leave it out.
            let mut text = error.to_string();
            if let Some(at) = text.find(" for url (") {
                text.truncate(at);
            }
            text
        }
        None => error.to_string(),
    };
    let causes = describe_causes(error);
    if causes.is_empty() {
        top
    } else {
        format!("{top}: {causes}")
    }
}

/// The causes of a reqwest error, outermost first, joined by `": "`. A cause whose message its
/// parent already shows is skipped, and so is hyper's "client error (Connect)" kind of
/// wrapper, which tells nothing the next cause does not.
fn describe_causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = error.source();
    while let Some(err) = current {
        let text = err.to_string();
        let uninformative = text.is_empty()
            || text.starts_with("client error (")
            || parts.last().is_some_and(|last| last.contains(&text));
        if !uninformative {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests;
