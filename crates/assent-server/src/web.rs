//! The web pages: the end-user preference center (`GET /preferences?token=…`) and the admin
//! console (`GET /console`).
//!
//! Both are plain HTML, CSS and JavaScript embedded in the binary; they call the public API
//! from the browser and have no other way in. The server's part is small: it checks the
//! preference center's consent token before showing anything (an expired or forged link gets a
//! clear page, not a broken one), picks the page's languages, and embeds the organization's
//! look and purpose registry so that end users' page loads do not count against the
//! organization's rate limits.

mod assets;
mod language;

use crate::AppState;
use crate::auth::TokenProblem;
use crate::routes::settings::LookView;
use assent_model::OrganizationId;
use assent_model::purpose::PurposeView;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

/// The routes of the web pages and their assets.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/preferences", get(preferences))
        .route("/console", get(console))
        .route("/assets/{name}", get(assets::serve))
}

/// The query of the preference center's address.
#[derive(Debug, Deserialize)]
struct PreferencesQuery {
    /// The end user's consent token (`POST /v1/consents/tokens`).
    token: Option<String>,
    /// A language asked for in the address, before the browser's.
    lang: Option<String>,
}

/// Why the preference center cannot be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkProblem {
    Missing,
    Expired,
    Invalid,
    Revoked,
    Unavailable,
}

async fn preferences(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PreferencesQuery>,
) -> Response {
    let languages = language::preferred(
        query.lang.as_deref(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    match preference_center(&state, query.token.as_deref(), &languages).await {
        Ok(html) => page(StatusCode::OK, html),
        Err(problem) => link_problem_page(problem, &languages),
    }
}

/// The preference center page for a consent token, or why it cannot be shown.
async fn preference_center(
    state: &AppState,
    token: Option<&str>,
    languages: &[String],
) -> Result<String, LinkProblem> {
    let token = token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(LinkProblem::Missing)?;
    let claims = state.sessions.claims(token).map_err(|p| match p {
        TokenProblem::Expired => LinkProblem::Expired,
        TokenProblem::Invalid => LinkProblem::Invalid,
    })?;
    let grant = claims.grant.as_ref().ok_or(LinkProblem::Invalid)?;
    let org = OrganizationId::parse(&claims.org).map_err(|_| LinkProblem::Invalid)?;
    let live = state
        .sessions
        .key_is_live(state.store.as_ref(), &org, claims.key_id())
        .await
        .map_err(|_| LinkProblem::Unavailable)?;
    if !live {
        return Err(LinkProblem::Revoked);
    }
    let (look, purposes) = page_content(state, &org).await?;
    let title = look.title.clone();
    let config = json!({
        "organization_id": org.as_str(),
        "organization_user_id": grant.organization_user_id,
        "languages": languages,
        "look": look,
        "purposes": purposes,
    });
    Ok(assets::PREFERENCES_HTML
        .replace("{{lang}}", &escape_html(language::first(languages)))
        .replace("{{title}}", &escape_html(&title))
        .replace("{{config}}", &script_json(&config)))
}

/// The organization's preference-center look and purpose registry, as `GET
/// /v1/preference-center` and `GET /v1/purposes` show them.
async fn page_content(
    state: &AppState,
    org: &OrganizationId,
) -> Result<(LookView, Vec<PurposeView>), LinkProblem> {
    let (look, purposes) = tokio::try_join!(
        state.store.get_preference_center(org),
        state.store.list_purposes(org),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "preference center: reading the look and purposes failed");
        LinkProblem::Unavailable
    })?;
    Ok((
        LookView::of(org.as_str(), look),
        purposes.iter().map(|p| p.view(org.as_str())).collect(),
    ))
}

async fn console() -> Response {
    page(StatusCode::OK, assets::CONSOLE_HTML.to_owned())
}

/// A page that says, in the reader's language, why the link does not open.
fn link_problem_page(problem: LinkProblem, languages: &[String]) -> Response {
    let french = language::first(languages).starts_with("fr");
    let status = match problem {
        LinkProblem::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let (title, text) = match (problem, french) {
        (LinkProblem::Expired, false) => (
            "This link has expired",
            "For your security, links to your privacy choices work for a limited time. Ask for \
             a new link to change your choices.",
        ),
        (LinkProblem::Expired, true) => (
            "Ce lien a expiré",
            "Pour votre sécurité, les liens vers vos choix de confidentialité ne sont valables \
             qu’un temps. Demandez un nouveau lien pour modifier vos choix.",
        ),
        (LinkProblem::Revoked, false) => (
            "This link is no longer valid",
            "This link has been withdrawn. Ask for a new link to change your choices.",
        ),
        (LinkProblem::Revoked, true) => (
            "Ce lien n’est plus valable",
            "Ce lien a été retiré. Demandez un nouveau lien pour modifier vos choix.",
        ),
        (LinkProblem::Unavailable, false) => (
            "Your choices cannot be shown right now",
            "The service is briefly unavailable. Please try again in a few minutes.",
        ),
        (LinkProblem::Unavailable, true) => (
            "Vos choix ne peuvent pas être affichés pour le moment",
            "Le service est brièvement indisponible. Veuillez réessayer dans quelques minutes.",
        ),
        (LinkProblem::Missing | LinkProblem::Invalid, false) => (
            "This link is not valid",
            "The link you followed is incomplete or has been altered. Open the link exactly as \
             you received it, or ask for a new one.",
        ),
        (LinkProblem::Missing | LinkProblem::Invalid, true) => (
            "Ce lien n’est pas valide",
            "Le lien suivi est incomplet ou a été modifié. Ouvrez-le tel que vous l’avez reçu, \
             ou demandez-en un nouveau.",
        ),
    };
    let html = assets::ERROR_HTML
        .replace("{{lang}}", if french { "fr" } else { "en" })
        .replace("{{title}}", title)
        .replace("{{text}}", text);
    page(status, html)
}

/// An HTML page with the headers every page gets: no caching (the address may hold a token),
/// no referrer, and a content security policy that lets only the server's own scripts run.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: \
             http: data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    response
}

/// Text made safe to place in HTML.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON made safe to place inside a `<script type="application/json">` element: no `<`, `>`
/// or `&` can close the element or start markup.
fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_json_cannot_close_the_script_element() {
        let out = script_json(&json!({"title": "</script><script>alert(1)</script>&"}));
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["title"], "</script><script>alert(1)</script>&");
    }

    #[test]
    fn escape_html_escapes_markup() {
        assert_eq!(
            escape_html(r#"<b a="x">'&'</b>"#),
            "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }
}
