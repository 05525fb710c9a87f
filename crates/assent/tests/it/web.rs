//! The web pages: the preference center and the admin console, driven in headless Chromium
//! (Debian's `chromium`, through playwright-core in `tests/browser/`), then checked through the
//! API; and the pages' HTTP behaviour (tokens, headers, assets) with a plain client.
//!
//! The browser tests need `npm ci --prefix crates/assent/tests/browser` and `/usr/bin/chromium`
//! (`.ci/run` installs both). Without them they are skipped with a message, except under
//! `CI=true`, where they fail. `ASSENT_SCREENSHOTS=<folder>` saves a screenshot of each page
//! (`docs/screenshots/` holds the ones the README shows). Each page is also audited with
//! axe-core against WCAG 2.1 A and AA, under the page's own content security policy.

use crate::common::{Api, Backend, TestServer, urlencode};
use crate::integrations::{Mode, Receiver, wait_deliveries};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The folder of the browser driver.
fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The Chromium the tests drive.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether the browser tests can run here; under `CI=true` they must.
fn browser_ready() -> bool {
    let driver = driver_dir().join("node_modules/playwright-core");
    let ready = driver.is_dir() && chromium().is_file();
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "browser tests need {} (npm ci --prefix crates/assent/tests/browser) and {} \
             (apt-get install chromium)",
            driver.display(),
            chromium().display()
        );
        eprintln!("browser tests skipped: no playwright-core or no chromium");
    }
    ready
}

/// Runs a scenario of `web.mjs` and returns what it printed, or fails with its error.
async fn browse(scenario: &str, params: Value) -> Value {
    let mut command = tokio::process::Command::new("node");
    command
        .arg("web.mjs")
        .arg(scenario)
        .current_dir(driver_dir())
        .env("ASSENT_SCENARIO", params.to_string())
        .env("CHROMIUM", chromium())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("the browser finished within 90 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{scenario} failed: {stderr}\n{stdout}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{scenario} printed {stdout:?}: {e}"))
}

/// A consent token for `ouid` lasting `lifetime` seconds.
async fn consent_token(api: &Api, ouid: &str, lifetime: u64) -> String {
    let (status, out) = api
        .post(
            "/v1/consents/tokens",
            json!({"organization_user_id": ouid, "lifetime": lifetime}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out["id_token"].as_str().unwrap().to_owned()
}

/// Registers the purposes and the look of a small shop, as an organization would.
async fn acme_registry(api: &Api) {
    for purpose in [
        json!({
            "id": "newsletter",
            "labels": {"en": "Newsletter", "fr": "Lettre d’information"},
            "descriptions": {"en": "Our weekly email with product news and offers.",
                             "fr": "Notre e-mail hebdomadaire avec les nouveautés et les offres."},
            "preferences": [
                {"id": "topics", "labels": {"en": "Topics", "fr": "Sujets"}, "values": [
                    {"id": "tech", "labels": {"en": "Technology", "fr": "Technologie"}},
                    {"id": "sport", "labels": {"en": "Sport", "fr": "Sport"}},
                    {"id": "travel", "labels": {"en": "Travel", "fr": "Voyage"}}]},
                {"id": "frequency", "multiple": false, "labels": {"en": "How often", "fr": "Fréquence"},
                 "values": [
                    {"id": "weekly", "labels": {"en": "Weekly", "fr": "Hebdomadaire"}},
                    {"id": "monthly", "labels": {"en": "Monthly", "fr": "Mensuelle"}}]}
            ],
            "channels": [{"id": "email", "labels": {"en": "Email", "fr": "E-mail"}},
                         {"id": "sms", "labels": {"en": "Text message", "fr": "SMS"}}]
        }),
        json!({
            "id": "analytics",
            "labels": {"en": "Audience measurement", "fr": "Mesure d’audience"},
            "descriptions": {"en": "Helps us understand how our site is used, with anonymous statistics.",
                             "fr": "Nous aide à comprendre l’usage de notre site, par des statistiques anonymes."}
        }),
        json!({
            "id": "partners",
            "labels": {"en": "Offers from our partners", "fr": "Offres de nos partenaires"},
            "descriptions": {"en": "We share your email with selected partners so they can send you offers.",
                             "fr": "Nous partageons votre e-mail avec des partenaires choisis pour qu’ils vous envoient des offres."}
        }),
    ] {
        let (status, out) = api.post("/v1/purposes", purpose).await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    let (status, out) = api
        .send(
            reqwest::Method::PUT,
            "/v1/preference-center",
            Some(json!({
                "title": "Your privacy choices at Acme",
                "intro": "Choose what we may do with your data. You can change your mind at any time.",
                "colors": {"primary": "#0f5132", "background": "#ffffff", "text": "#1f2937"}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
}

/// The events of `ouid`, newest first.
async fn events_of(api: &Api, ouid: &str) -> Vec<Value> {
    let (status, page) = api
        .get(&format!(
            "/v1/consents/events?organization_user_id={}&$sort[created_at]=-1",
            urlencode(ouid)
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// The status of purpose `id` of `ouid`.
async fn enabled(api: &Api, ouid: &str, id: &str) -> Value {
    let user = api.user_by_ouid(ouid).await;
    user["consents"]["purposes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == id))
        .map_or(Value::Null, |p| p["enabled"].clone())
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_preference_center_saves_a_switched_purpose_as_one_event(#[case] backend: Backend) {
    if !browser_ready() {
        return;
    }
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    acme_registry(&api).await;
    api.event(json!({
        "user": {"organization_user_id": "alice@example.com"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}
    }))
    .await;
    let token = consent_token(&api, "alice@example.com", 600).await;

    // The reader allows audience measurement (no choice until now) with the keyboard, and
    // picks a newsletter topic.
    let page = browse(
        "preferences-save",
        json!({"base": server.base, "token": token, "purpose": "analytics",
               "value": "newsletter-topics-sport",
               // One set of screenshots is enough.
               "no_shots": backend == Backend::Postgres}),
    )
    .await;
    assert_eq!(
        page["violations"],
        json!([]),
        "WCAG 2.1 AA (axe-core): {page}"
    );
    assert_eq!(page["label"], "Audience measurement", "{page}");
    assert_eq!(page["before"], false, "{page}");
    assert_eq!(page["after"], true, "{page}");
    assert!(page["notice"].as_str().unwrap().contains("saved"), "{page}");

    // One new event, made with the end user's token, holding only what changed and the
    // registry versions in force; the status follows it.
    let events = events_of(&api, "alice@example.com").await;
    assert_eq!(events.len(), 2, "{events:?}");
    let saved = &events[0];
    assert_eq!(
        saved["consents"]["purposes"],
        json!([
            {"id": "newsletter", "values": {"topics": {"value": "sport"}}},
            {"id": "analytics", "enabled": true}
        ]),
        "{saved}"
    );
    assert_eq!(saved["metadata"]["source"], "preference-center", "{saved}");
    assert_eq!(
        saved["purpose_versions"],
        json!({"analytics": 1, "newsletter": 1}),
        "{saved}"
    );
    assert_eq!(enabled(&api, "alice@example.com", "analytics").await, true);
    assert_eq!(enabled(&api, "alice@example.com", "newsletter").await, true);
}

#[tokio::test]
async fn the_preference_center_speaks_the_readers_language() {
    if !browser_ready() {
        return;
    }
    let server = TestServer::start().await;
    let api = server.client().await;
    acme_registry(&api).await;
    api.event(json!({
        "user": {"organization_user_id": "zoe"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": false}]}
    }))
    .await;
    let token = consent_token(&api, "zoe", 600).await;
    let page = browse(
        "preferences-save",
        json!({
            "base": server.base, "token": token, "purpose": "newsletter",
            "accept_language": "fr-FR,fr;q=0.9,en;q=0.5", "locale": "fr-FR",
            "shot_prefix": "fr-"
        }),
    )
    .await;
    assert_eq!(page["lang"], "fr", "{page}");
    assert_eq!(page["label"], "Lettre d’information", "{page}");
    assert_eq!(page["save"], "Enregistrer mes choix", "{page}");
    assert!(
        page["notice"]
            .as_str()
            .unwrap()
            .starts_with("Vos choix ont été enregistrés"),
        "{page}"
    );
    assert_eq!(enabled(&api, "zoe", "newsletter").await, true);
}

#[tokio::test]
async fn an_expired_preference_link_shows_a_clear_page() {
    if !browser_ready() {
        return;
    }
    let server = TestServer::start().await;
    let api = server.client().await;
    let token = consent_token(&api, "bob", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let page = browse(
        "preferences-error",
        json!({"base": server.base, "token": token}),
    )
    .await;
    assert_eq!(page["status"], 401, "{page}");
    assert_eq!(
        page["violations"],
        json!([]),
        "WCAG 2.1 AA (axe-core): {page}"
    );
    assert_eq!(page["title"], "This link has expired", "{page}");
    assert!(
        page["text"]
            .as_str()
            .unwrap()
            .contains("Ask for a new link"),
        "{page}"
    );
}

/// Status and body of `GET /preferences` with `token` and headers.
async fn preferences_page(
    server: &TestServer,
    query: &str,
    accept_language: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = server
        .http
        .get(format!("{}/preferences{query}", server.base));
    if let Some(lang) = accept_language {
        req = req.header("accept-language", lang);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.text().await.unwrap())
}

#[tokio::test]
async fn preference_links_that_cannot_open_say_why_without_detail() {
    let server = TestServer::start().await;
    let api = server.client().await;
    let token = consent_token(&api, "carol", 600).await;

    let (status, headers, html) = preferences_page(&server, "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<h1>This link is not valid</h1>"), "{html}");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");

    // An altered token: one character of its signature changed.
    let mut altered = token.clone().into_bytes();
    let last = altered.len() - 2;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let (status, _, html) = preferences_page(&server, &format!("?token={altered}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<h1>This link is not valid</h1>"), "{html}");
    assert!(!html.contains("carol"), "{html}");

    // A session token is not a preference link.
    let (status, _, html) = preferences_page(&server, &format!("?token={}", api.token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("<h1>This link is not valid</h1>"), "{html}");

    // In French when the reader reads French.
    let (_, _, html) = preferences_page(&server, "?token=x", Some("fr-CA,fr;q=0.9")).await;
    assert!(html.contains("<h1>Ce lien n’est pas valide</h1>"), "{html}");

    // A withdrawn link: the key that issued it is disabled.
    let (status, keys) = api.get("/v1/keys").await;
    assert_eq!(status, StatusCode::OK);
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, out) = api
        .patch(&format!("/v1/keys/{key_id}"), json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (status, _, html) = preferences_page(&server, &format!("?token={token}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        html.contains("<h1>This link is no longer valid</h1>"),
        "{html}"
    );
}

#[tokio::test]
async fn the_preference_center_page_embeds_its_user_safely_with_strict_headers() {
    let server = TestServer::start().await;
    let api = server.client().await;
    let ouid = "</script><script>alert(1)</script>";
    let token = consent_token(&api, ouid, 600).await;
    let (status, headers, html) =
        preferences_page(&server, &format!("?token={token}&lang=de"), Some("fr")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.starts_with("<!doctype html>\n<html lang=\"de\">"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    let config = html
        .split("<script type=\"application/json\" id=\"config\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("config element");
    let config: Value = serde_json::from_str(config).expect("config is JSON");
    assert_eq!(config["organization_user_id"], ouid);
    assert_eq!(config["organization_id"], server.org);
    assert_eq!(config["languages"], json!(["de", "fr"]));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn page_assets_are_served_with_types_and_revalidated_by_etag() {
    let server = TestServer::start().await;
    for (name, kind) in [
        ("assent.css", "text/css; charset=utf-8"),
        ("preferences.js", "text/javascript; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
    ] {
        let url = format!("{}/assets/{name}", server.base);
        let res = server.http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        assert_eq!(res.headers()["content-type"], kind, "{name}");
        let etag = res.headers()["etag"].clone();
        assert!(!res.text().await.unwrap().is_empty());
        let again = server
            .http
            .get(&url)
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
    }
    let missing = server
        .http
        .get(format!("{}/assets/../Cargo.toml", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let console = server
        .http
        .get(format!("{}/console", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(console.status(), StatusCode::OK);
    assert!(console.text().await.unwrap().contains("Assent console"));
}

#[tokio::test]
async fn the_console_finds_a_user_shows_its_history_and_retries_a_parked_delivery() {
    if !browser_ready() {
        return;
    }
    let server = TestServer::start().await;
    let api = server.client().await;

    // An integration whose receiver fails: its delivery of the first event gets parked.
    let receiver = Receiver::start(Mode::Status(500)).await;
    let (status, hook) = api
        .post(
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http", "name": "crm hook", "properties": {"url": receiver.url()},
                   "event_types": ["event.created"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let first = api
        .event(json!({
            "created_at": "2026-01-10T09:00:00Z",
            "user": {"organization_user_id": "dana@example.com"},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}
        }))
        .await;
    let parked = wait_deliveries(&api, &hook_id, "parked", 1, Duration::from_secs(15)).await;
    let parked_id = parked["data"][0]["id"].as_str().unwrap().to_owned();
    *receiver.mode.lock().unwrap() = Mode::Ok;
    let second = api
        .event(json!({
            "created_at": "2026-02-10T09:00:00Z",
            "user": {"organization_user_id": "dana@example.com"},
            "consents": {"purposes": [{"id": "newsletter", "enabled": false}]}
        }))
        .await;

    // Two weeks of choices by other users, for the dashboard: on day d (0 = 13 days ago),
    // 2 + d % 4 events, each choosing the newsletter and audience measurement.
    let today = chrono::Utc::now().date_naive();
    let mut batch = Vec::new();
    for d in 0..14_i64 {
        let day = today - chrono::Duration::days(13 - d);
        for n in 0..(2 + d % 4) {
            batch.push(json!({
                // Seconds after midnight: today's are in the past whenever the test runs
                // (at 08:00 they were refused as future before 08:00 UTC).
                "created_at": format!("{day}T00:00:{:02}Z", n),
                "user": {"organization_user_id": format!("visitor-{d}-{n}")},
                "consents": {"purposes": [
                    {"id": "newsletter", "enabled": (d + n) % 3 != 0},
                    {"id": "analytics", "enabled": n % 2 == 0}
                ]}
            }));
        }
    }
    let expected_volume: i64 = (0..14).map(|d| 2 + d % 4).sum();
    for chunk in batch.chunks(100) {
        let (status, out) = api
            .post("/v1/consents/events", Value::Array(chunk.to_vec()))
            .await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }

    let page = browse(
        "console",
        json!({
            "base": server.base, "key": server.key, "secret": server.secret,
            "organization_user_id": "dana@example.com", "purpose": "newsletter",
            "at": "2026-01-20T12:00",
            "integration": hook_id, "integration_name": "crm hook", "parked": parked_id,
        }),
    )
    .await;
    assert_eq!(
        page["violations"],
        json!([]),
        "WCAG 2.1 AA (axe-core): {page}"
    );
    assert_eq!(page["title"], "dana@example.com", "{page}");
    assert_eq!(
        page["timeline"],
        json!([second["id"], first["id"]]),
        "the timeline lists both events, newest first: {page}"
    );
    assert_eq!(page["regulations"], json!(["gdpr"]), "{page}");
    assert_eq!(page["status_now"], "no", "{page}");
    assert_eq!(page["status_at"], "yes", "the status on 20 January: {page}");
    assert_eq!(page["charts"], 2, "{page}");
    assert_eq!(page["lines"], 2, "one line per purpose: {page}");
    assert_eq!(
        page["volume_title"],
        format!("Event volume ({expected_volume} events)"),
        "{page}"
    );
    assert!(page["deliveries"].as_u64().unwrap() >= 2, "{page}");
    assert!(
        page["retried"].as_str().unwrap().contains(&parked_id),
        "{page}"
    );
    // The retry went through the API: the parked delivery is delivered now (the deliveries of
    // the other users' events may be delivered before it: wait for that one).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let delivered =
            wait_deliveries(&api, &hook_id, "delivered", 1, Duration::from_secs(10)).await;
        let ids: Vec<&str> = delivered["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        if ids.contains(&parked_id.as_str()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retried delivery {parked_id} is not delivered: {delivered}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_console_refuses_a_wrong_secret() {
    if !browser_ready() {
        return;
    }
    let server = TestServer::start().await;
    let page = browse(
        "console-wrong-secret",
        json!({"base": server.base, "key": server.key, "secret": "not-the-secret"}),
    )
    .await;
    assert_eq!(page["signed_in"], false, "{page}");
    assert_eq!(
        page["error"], "Wrong key or secret, or the key is disabled.",
        "{page}"
    );
}
