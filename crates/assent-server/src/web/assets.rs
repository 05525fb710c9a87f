//! The files of the web pages, embedded in the binary.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The preference center's page, with `{{lang}}`, `{{title}}` and `{{config}}` to fill.
pub const PREFERENCES_HTML: &str = include_str!("../../web/preferences.html");
/// The admin console's page.
pub const CONSOLE_HTML: &str = include_str!("../../web/console.html");
/// The page that explains why a preference-center link does not open, with `{{lang}}`,
/// `{{title}}` and `{{text}}` to fill.
pub const ERROR_HTML: &str = include_str!("../../web/error.html");

/// The files under `/assets/`: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "assent.css",
        "text/css; charset=utf-8",
        include_str!("../../web/assent.css"),
    ),
    (
        "preferences.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/preferences.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/dom.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/console.js"),
    ),
];

/// Each file's entity tag: a hash of its content, so that browsers revalidate cheaply.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, _, content)| {
            let digest = Sha256::digest(content.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// `GET /assets/{name}`: one embedded file, or 404.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let (_, content_type, content) = FILES[i];
    let etag = &ETAGS[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        content.into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, value);
    }
    response
}
