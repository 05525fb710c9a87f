//! The isolation matrix: every authenticated route, called with each kind of credential that
//! must not reach the victim organization's data, answers the exact status expected and never
//! shows that data. The Actito inbound route authenticates with its own token instead of a
//! session; `connectors.rs` covers it.

use crate::auth::jwt;
use crate::common::{Api, Backend, TestServer};
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

/// Written into every piece of the victim's data, so that a leak shows in any body.
const MARK: &str = "VICTIM-MARK";

/// One route, called with the victim's ids.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    /// The status when another organization calls it in its own name with the victim's ids.
    elsewhere: u16,
    /// Whether an end user of the victim organization may call it with a consent token (the
    /// preference center's reads of the organization's purposes and look).
    end_users_read: bool,
}

fn route(method: Method, path: String, body: Option<Value>, elsewhere: u16) -> Route {
    Route {
        method,
        path,
        body,
        elsewhere,
        end_users_read: false,
    }
}

/// A route that the victim's end users may read with a consent token.
fn read_by_end_users(route: Route) -> Route {
    Route {
        end_users_read: true,
        ..route
    }
}

/// The ids of the victim's data.
struct Victim {
    user: String,
    event: String,
    key: String,
    secret: String,
    proof: String,
    integration: String,
    export: String,
    purpose: String,
}

/// Gives the victim organization one of everything, each marked.
async fn victim_data(api: &Api) -> Victim {
    let event = api
        .event(json!({
            "user": {"organization_user_id": "victim-alice", "metadata": {"note": MARK}},
            "metadata": {"note": MARK},
            "consents": {"purposes": [{"id": MARK, "enabled": true}]},
            "proofs": ["data:application/pdf;base64,JVBERi0xLjQKVklDVElNLU1BUks="],
        }))
        .await;
    api.event(json!({"user": {"organization_user_id": "victim-bob"}}))
        .await;
    let (status, look) = api
        .send(
            Method::PUT,
            "/v1/preference-center",
            Some(json!({"title": MARK})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{look}");
    let created = |what: &'static str, path: &'static str, body: Value| async move {
        let (status, out) = api.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{what}: {out}");
        out["id"].as_str().expect("id").to_owned()
    };
    Victim {
        user: event["user"]["id"].as_str().unwrap().to_owned(),
        event: event["id"].as_str().unwrap().to_owned(),
        proof: event["proofs_id"][0].as_str().unwrap().to_owned(),
        key: created("key", "/v1/keys", json!({"name": MARK})).await,
        secret: created("secret", "/v1/secrets", json!({"name": MARK})).await,
        export: created("export", "/v1/exports", json!({"name": MARK})).await,
        purpose: created(
            "purpose",
            "/v1/purposes",
            json!({"id": "victim-purpose", "labels": {"en": MARK}}),
        )
        .await,
        integration: created(
            "integration",
            "/v1/marketplace/integrations",
            json!({"type_id": "webhook-http", "name": MARK, "properties": {"url": "http://127.0.0.1:9/hook"}}),
        )
        .await,
    }
}

/// Every authenticated route of API.md §2–§7, aimed at the victim's data.
fn routes(v: &Victim) -> Vec<Route> {
    use Method as M;
    let delivery = "00000000-0000-4000-8000-000000000000";
    vec![
        route(
            M::GET,
            format!("/v1/consents/events?user_id={}", v.user),
            None,
            200,
        ),
        route(
            M::POST,
            "/v1/consents/events".into(),
            Some(json!({"user": {"organization_user_id": "victim-alice"}})),
            200,
        ),
        route(
            M::DELETE,
            format!("/v1/consents/events?user_id={}&metadata.note=n", v.user),
            None,
            204,
        ),
        route(
            M::GET,
            format!("/v1/consents/events/{}", v.event),
            None,
            404,
        ),
        route(
            M::PATCH,
            format!("/v1/consents/events/{}", v.event),
            Some(json!({"status": "confirmed"})),
            404,
        ),
        route(
            M::DELETE,
            format!("/v1/consents/events/{}", v.event),
            None,
            404,
        ),
        route(M::GET, "/v1/consents/users".into(), None, 200),
        route(
            M::POST,
            "/v1/consents/users".into(),
            Some(json!({"organization_user_id": "victim-bob"})),
            200,
        ),
        route(M::GET, format!("/v1/consents/users/{}", v.user), None, 404),
        route(
            M::PATCH,
            format!("/v1/consents/users/{}", v.user),
            Some(json!({"metadata": {"x": 1}})),
            404,
        ),
        route(
            M::DELETE,
            format!("/v1/consents/users/{}", v.user),
            None,
            404,
        ),
        route(
            M::POST,
            "/v1/consents/tokens".into(),
            Some(json!({"organization_user_id": "victim-alice"})),
            200,
        ),
        route(
            M::POST,
            "/v1/consents/proofs".into(),
            Some(json!({"file": "data:application/pdf;base64,JVBERi0xLjQK"})),
            200,
        ),
        route(
            M::GET,
            format!("/v1/consents/proofs/{}", v.proof),
            None,
            404,
        ),
        route(M::GET, "/v1/keys".into(), None, 200),
        route(M::POST, "/v1/keys".into(), Some(json!({"name": "k"})), 200),
        route(M::GET, format!("/v1/keys/{}", v.key), None, 404),
        route(
            M::PATCH,
            format!("/v1/keys/{}", v.key),
            Some(json!({"enabled": false})),
            404,
        ),
        route(M::DELETE, format!("/v1/keys/{}", v.key), None, 404),
        route(M::GET, "/v1/exports".into(), None, 200),
        route(
            M::POST,
            "/v1/exports".into(),
            Some(json!({"name": "e"})),
            200,
        ),
        route(M::GET, format!("/v1/exports/{}", v.export), None, 404),
        route(
            M::PATCH,
            format!("/v1/exports/{}", v.export),
            Some(json!({"enabled": false})),
            404,
        ),
        route(M::DELETE, format!("/v1/exports/{}", v.export), None, 404),
        route(
            M::POST,
            format!("/v1/exports/{}/execute", v.export),
            Some(json!({})),
            404,
        ),
        route(M::GET, "/v1/secrets".into(), None, 200),
        route(
            M::POST,
            "/v1/secrets".into(),
            Some(json!({"name": "s"})),
            200,
        ),
        route(M::GET, format!("/v1/secrets/{}", v.secret), None, 404),
        route(
            M::PATCH,
            format!("/v1/secrets/{}", v.secret),
            Some(json!({"name": "n", "version": 1})),
            404,
        ),
        route(M::DELETE, format!("/v1/secrets/{}", v.secret), None, 404),
        route(M::GET, "/v1/marketplace/integrations".into(), None, 200),
        route(
            M::POST,
            "/v1/marketplace/integrations".into(),
            Some(json!({"type_id": "webhook-http", "properties": {"url": "http://127.0.0.1:9/x"}})),
            200,
        ),
        route(
            M::GET,
            format!("/v1/marketplace/integrations/{}", v.integration),
            None,
            404,
        ),
        route(
            M::PATCH,
            format!("/v1/marketplace/integrations/{}", v.integration),
            Some(json!({"name": "n"})),
            404,
        ),
        route(
            M::DELETE,
            format!("/v1/marketplace/integrations/{}", v.integration),
            None,
            404,
        ),
        route(
            M::GET,
            format!("/v1/marketplace/integrations/{}/deliveries", v.integration),
            None,
            404,
        ),
        route(
            M::POST,
            format!(
                "/v1/marketplace/integrations/{}/deliveries/{delivery}/retry",
                v.integration
            ),
            None,
            404,
        ),
        read_by_end_users(route(M::GET, "/v1/purposes".into(), None, 200)),
        read_by_end_users(route(
            M::GET,
            format!("/v1/purposes/{}", v.purpose),
            None,
            404,
        )),
        read_by_end_users(route(
            M::GET,
            format!("/v1/purposes/{}?version=1", v.purpose),
            None,
            404,
        )),
        route(
            M::GET,
            format!("/v1/purposes/{}/versions", v.purpose),
            None,
            404,
        ),
        route(
            M::PATCH,
            format!("/v1/purposes/{}", v.purpose),
            Some(json!({"labels": {"en": "x"}})),
            404,
        ),
        route(M::DELETE, format!("/v1/purposes/{}", v.purpose), None, 404),
        // After the reads: in its own name, another organization may take the same id.
        route(
            M::POST,
            "/v1/purposes".into(),
            Some(json!({"id": v.purpose, "labels": {"en": "theirs"}})),
            200,
        ),
        route(M::GET, "/v1/settings".into(), None, 200),
        route(
            M::PATCH,
            "/v1/settings".into(),
            Some(json!({"strict_mode": false})),
            200,
        ),
        read_by_end_users(route(M::GET, "/v1/preference-center".into(), None, 200)),
        route(
            M::PUT,
            "/v1/preference-center".into(),
            Some(json!({"title": "t"})),
            200,
        ),
        route(
            M::GET,
            "/v1/stats/consents?from=2000-01-01&to=2000-12-31".into(),
            None,
            200,
        ),
        route(M::GET, "/v1/stats/consents".into(), None, 200),
    ]
}

/// Calls `route` in the name of organization `org` with `token` (if any).
async fn call(
    server: &TestServer,
    route: &Route,
    org: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let sep = if route.path.contains('?') { '&' } else { '?' };
    let path = format!("{}{sep}organization_id={org}", route.path);
    let mut req = server
        .http
        .request(route.method.clone(), format!("{}{path}", server.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = &route.body {
        req = req.json(body);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status();
    (status, res.text().await.expect("body"))
}

/// Asserts every route answers `expected` to this credential and never shows the victim's data
/// (but where `may_show` allows it).
async fn assert_cell(
    server: &TestServer,
    routes: &[Route],
    credential: &str,
    org: &str,
    token: Option<&str>,
    expected: impl Fn(&Route) -> u16,
) {
    assert_cell_showing(server, routes, credential, org, token, expected, |_| false).await;
}

/// [`assert_cell`], for a credential that may see the victim's data on some routes.
async fn assert_cell_showing(
    server: &TestServer,
    routes: &[Route],
    credential: &str,
    org: &str,
    token: Option<&str>,
    expected: impl Fn(&Route) -> u16,
    may_show: impl Fn(&Route) -> bool,
) {
    for route in routes {
        let (status, body) = call(server, route, org, token).await;
        assert_eq!(
            status.as_u16(),
            expected(route),
            "{credential}: {} {} answered {body}",
            route.method,
            route.path
        );
        assert!(
            may_show(route) || !body.contains(MARK),
            "{credential}: {} {} leaked the victim's data: {body}",
            route.method,
            route.path
        );
        if status.is_client_error() {
            let error: Value = serde_json::from_str(&body).expect("an error body");
            assert_eq!(error["code"], status.as_u16(), "{body}");
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn no_credential_reaches_another_organizations_or_users_data(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let victim_api = server.client().await;
    let victim = victim_data(&victim_api).await;
    let routes = routes(&victim);
    let org = server.org.clone();

    assert_cell(&server, &routes, "no token", &org, None, |_| 401).await;
    assert_cell(
        &server,
        &routes,
        "garbage token",
        &org,
        Some("not.a.token"),
        |_| 401,
    )
    .await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key_id = victim_api.key_id_of(&server.key).await;
    let expired = jwt::hs256(
        &server.signing_key().await,
        &json!({"sub": key_id, "org": org, "iat": now - 7200, "exp": now - 3600}),
    );
    assert_cell(
        &server,
        &routes,
        "expired token",
        &org,
        Some(&expired),
        |_| 401,
    )
    .await;

    let other = server.new_org("intruder").await;
    assert_cell(
        &server,
        &routes,
        "another organization's token",
        &org,
        Some(&other.token),
        |_| 403,
    )
    .await;

    let (status, bob) = victim_api
        .post(
            "/v1/consents/tokens",
            json!({"organization_user_id": "victim-bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{bob}");
    // A consent token reaches no other user's data; it reads its organization's purposes and
    // preference center (which are the organization's, shown to every end user).
    assert_cell_showing(
        &server,
        &routes,
        "a consent token for another user",
        &org,
        bob["id_token"].as_str(),
        |r| if r.end_users_read { 200 } else { 403 },
        |r| r.end_users_read,
    )
    .await;

    let (status, key) = victim_api
        .post("/v1/keys", json!({"name": "soon disabled"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{key}");
    let fresh = server
        .session(
            key["key"].as_str().unwrap(),
            key["secret"].as_str().unwrap(),
        )
        .await;
    let (status, _) = victim_api
        .patch(
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_cell(
        &server,
        &routes,
        "a disabled key's fresh session",
        &org,
        Some(&fresh),
        |_| 401,
    )
    .await;

    // Last, as it writes: another organization acting in its own name with the victim's ids
    // finds nothing of the victim's.
    assert_cell(
        &server,
        &routes,
        "another organization in its own name",
        "intruder",
        Some(&other.token),
        |r| r.elsewhere,
    )
    .await;

    // The victim's data is intact.
    let user = victim_api
        .get(&format!("/v1/consents/users/{}", victim.user))
        .await;
    assert_eq!(user.0, StatusCode::OK, "{}", user.1);
    assert_eq!(user.1["metadata"]["note"], MARK);
    for path in [
        format!("/v1/consents/events/{}", victim.event),
        format!("/v1/keys/{}", victim.key),
        format!("/v1/secrets/{}", victim.secret),
        format!("/v1/consents/proofs/{}", victim.proof),
        format!("/v1/marketplace/integrations/{}", victim.integration),
        format!("/v1/purposes/{}?version=1", victim.purpose),
    ] {
        let (status, body) = victim_api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    assert_eq!(
        victim_api.events(&format!("user_id={}", victim.user)).await["total"],
        1
    );
    server.stop().await;
}
