//! Keys, secrets, consent tokens and proofs (API.md §2 and §5): secrets are shown once and
//! stored hashed, a disabled or deleted key opens no session and its tokens stop working, a
//! consent token reaches one end user only, proofs are typed by their bytes and addressed by
//! their content.

use crate::common::{Api, Backend, TestServer, assert_bad_field, assert_error};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Write};

/// Opens a session with `key` and `secret`; returns the status.
async fn session_status(server: &TestServer, key: &str, secret: &str) -> StatusCode {
    let (status, _) = server
        .raw(
            Method::POST,
            "/v1/sessions",
            None,
            Some(json!({"type": "api-key", "key": key, "secret": secret})),
        )
        .await;
    status
}

/// Creates a key through the API; returns its view (with its secret).
async fn new_key(api: &Api, name: &str) -> Value {
    let (status, key) = api.post("/v1/keys", json!({"name": name})).await;
    assert_eq!(status, StatusCode::OK, "{key}");
    key
}

/// Every byte of every file under `dir`, for checks that a value was never written.
fn all_bytes_under(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(all_bytes_under(&path));
        } else {
            out.extend(std::fs::read(&path).expect("file"));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_new_key_shows_its_secret_once_and_opens_sessions(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let key = new_key(&api, "backend").await;
    let secret = key["secret"].as_str().expect("the secret, once");
    assert_eq!(key["name"], "backend");
    assert_eq!(key["enabled"], true);
    assert_eq!(key["organization_id"], server.org);
    let id = key["id"].as_str().unwrap();

    let (status, read) = api.get(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert!(read.get("secret").is_none(), "shown once only: {read}");
    let (_, list) = api.get("/v1/keys").await;
    assert_eq!(
        list["total"], 2,
        "the bootstrap key and the new one: {list}"
    );
    assert!(!list.to_string().contains(secret), "{list}");

    let token = server.session(key["key"].as_str().unwrap(), secret).await;
    assert!(!token.is_empty());
    assert_eq!(
        session_status(&server, key["key"].as_str().unwrap(), "wrong").await,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

#[tokio::test]
async fn key_and_secret_values_never_reach_the_disk_in_clear() {
    let server = TestServer::start().await;
    let api = server.client().await;
    let key = new_key(&api, "k").await;
    let key_secret = key["secret"].as_str().unwrap().to_owned();
    let (status, secret) = api.post("/v1/secrets", json!({"name": "s"})).await;
    assert_eq!(status, StatusCode::OK, "{secret}");
    let secret_value = secret["secret"].as_str().unwrap().to_owned();
    let (dir, _) = server.stop().await;
    let bytes = all_bytes_under(dir.path());
    assert!(
        contains(&bytes, "$argon2id$"),
        "keys are hashed with argon2id"
    );
    assert!(!contains(&bytes, &key_secret), "a key secret was stored");
    assert!(
        !contains(&bytes, &secret_value),
        "a secret value was stored"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_disabled_or_deleted_key_opens_no_session_and_its_tokens_stop_working(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let admin = server.client().await;
    let key = new_key(&admin, "to disable").await;
    let (id, public, secret) = (
        key["id"].as_str().unwrap(),
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    let token = server.session(public, secret).await;
    let with_token = |t: String| Api {
        token: t,
        ..admin.clone()
    };
    let user = with_token(token.clone());
    assert_eq!(user.get("/v1/consents/users").await.0, StatusCode::OK);

    let (status, body) = admin
        .patch(&format!("/v1/keys/{id}"), json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], false);
    assert_eq!(
        session_status(&server, public, secret).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = user.get("/v1/consents/users").await;
    assert_error(status, &body, 401, "NotAuthenticated");

    admin
        .patch(&format!("/v1/keys/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(
        session_status(&server, public, secret).await,
        StatusCode::OK
    );
    assert_eq!(user.get("/v1/consents/users").await.0, StatusCode::OK);

    let (status, body) = admin.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        session_status(&server, public, secret).await,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = user.get("/v1/consents/users").await;
    assert_error(status, &body, 401, "NotAuthenticated");
    let (status, body) = admin.get(&format!("/v1/keys/{id}")).await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn secrets_show_their_random_value_once_and_follow_their_version(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, a) = api
        .post(
            "/v1/secrets",
            json!({"name": "actito", "description": "Actito API key"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let (_, b) = api.post("/v1/secrets", json!({"name": "other"})).await;
    let value = a["secret"].as_str().expect("the value, once");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .expect("base64url");
    assert!(raw.len() >= 32, "at least 256 random bits");
    assert_ne!(a["secret"], b["secret"]);
    assert_eq!(a["version"], 1);
    let id = a["id"].as_str().unwrap();

    let (status, read) = api.get(&format!("/v1/secrets/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert!(read.get("secret").is_none(), "{read}");
    assert_eq!(read["description"], "Actito API key");
    let (_, list) = api.get("/v1/secrets").await;
    assert_eq!(list["total"], 2, "{list}");
    assert!(!list.to_string().contains(value));

    let (status, patched) = api
        .patch(
            &format!("/v1/secrets/{id}"),
            json!({"name": "actito-prod", "version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "actito-prod");
    assert_eq!(patched["version"], 2);
    let (status, body) = api
        .patch(
            &format!("/v1/secrets/{id}"),
            json!({"name": "x", "version": 1}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");

    let (status, _) = api.delete(&format!("/v1/secrets/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.get(&format!("/v1/secrets/{id}")).await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[tokio::test]
async fn an_organization_holds_at_most_300_secrets() {
    let server = TestServer::start_limited(
        Backend::Sqlite,
        crate::common::test_limits().without_rate_limits(),
    )
    .await
    .expect("SQLite is always available");
    let api = server.client().await;
    for i in 0..300 {
        let (status, body) = api
            .post("/v1/secrets", json!({"name": format!("s{i}")}))
            .await;
        assert_eq!(status, StatusCode::OK, "secret {i}: {body}");
    }
    let (status, body) = api
        .post("/v1/secrets", json!({"name": "one too many"}))
        .await;
    assert_error(status, &body, 409, "Conflict");
    let other = server.new_org("other").await;
    let (status, body) = other.post("/v1/secrets", json!({"name": "mine"})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the limit is per organization: {body}"
    );
    server.stop().await;
}

/// Events for `alice` and `bob`; returns their user ids.
async fn two_users(api: &Api) -> (String, String) {
    let a = api
        .event(json!({"user": {"organization_user_id": "alice"}, "consents": {"purposes": [{"id": "analytics", "enabled": true}]}}))
        .await;
    let b = api
        .event(json!({"user": {"organization_user_id": "bob"}, "consents": {"purposes": [{"id": "analytics", "enabled": false}]}}))
        .await;
    (
        a["user"]["id"].as_str().unwrap().to_owned(),
        b["user"]["id"].as_str().unwrap().to_owned(),
    )
}

/// A consent token for `ouid` with these extra grant fields; returns a client holding it.
async fn consent_client(api: &Api, ouid: &str, extra: Value) -> Api {
    let mut body = json!({"organization_user_id": ouid});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, out) = api.post("/v1/consents/tokens", body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["organization_user_id"], ouid);
    Api {
        token: out["id_token"].as_str().expect("id_token").to_owned(),
        ..api.clone()
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_consent_token_reads_its_own_user_and_events_only(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (alice_id, bob_id) = two_users(&api).await;
    let alice = consent_client(&api, "alice", json!({})).await;

    let (status, user) = alice
        .get("/v1/consents/users/alice?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["organization_user_id"], "alice");
    let (status, user) = alice.get(&format!("/v1/consents/users/{alice_id}")).await;
    assert_eq!(status, StatusCode::OK, "{user}");

    let (status, events) = alice.get("/v1/consents/events").await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["total"], 1, "alice's events only: {events}");
    assert!(!events.to_string().contains("bob"));

    for path in [
        "/v1/consents/users/bob?$by_organization_user_id=true".to_owned(),
        format!("/v1/consents/users/{bob_id}"),
        "/v1/consents/events?organization_user_id=bob".to_owned(),
        format!("/v1/consents/events?user_id={bob_id}"),
    ] {
        let (status, body) = alice.get(&path).await;
        assert_error(status, &body, 403, "Forbidden");
        assert!(!body.to_string().contains(&bob_id), "{path}: {body}");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_consent_token_creates_events_for_its_user_with_the_grant_applied(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    two_users(&api).await;
    let alice = consent_client(
        &api,
        "alice",
        json!({
            "lifetime": 600,
            "event": {"metadata": {"source": "preference-center"}, "user": {"metadata": {"plan": "gold"}}},
            "delegate": {"id": "agent-7", "name": "Support"},
        }),
    )
    .await;

    let (status, event) = alice
        .post(
            "/v1/consents/events",
            json!({"user": {"organization_user_id": "alice"}, "consents": {"purposes": [{"id": "analytics", "enabled": false}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["metadata"]["source"], "preference-center", "{event}");
    assert_eq!(event["user"]["metadata"]["plan"], "gold", "{event}");
    assert_eq!(event["delegate"]["id"], "agent-7", "{event}");

    let (status, event) = alice
        .post(
            "/v1/consents/events",
            json!({"consents": {"purposes": [{"id": "ads", "enabled": true}]}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the user defaults to the token's: {event}"
    );
    assert_eq!(event["user"]["organization_user_id"], "alice");

    let user = api.user_by_ouid("alice").await;
    assert_eq!(
        crate::common::purpose_enabled(&user, "analytics"),
        Some(false)
    );
    assert_eq!(crate::common::purpose_enabled(&user, "ads"), Some(true));

    for body in [
        json!({"user": {"organization_user_id": "bob"}}),
        json!([{"user": {"organization_user_id": "alice"}}, {"user": {"organization_user_id": "bob"}}]),
    ] {
        let (status, out) = alice.post("/v1/consents/events", body).await;
        assert_error(status, &out, 403, "Forbidden");
    }
    let bob = api.user_by_ouid("bob").await;
    assert_eq!(
        crate::common::purpose_enabled(&bob, "analytics"),
        Some(false),
        "bob is untouched"
    );
    let (_, events) = api
        .get("/v1/consents/events?organization_user_id=bob")
        .await;
    assert_eq!(events["total"], 1, "{events}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_consent_token_is_refused_on_every_other_route(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (alice_id, _) = two_users(&api).await;
    let event_id = api.events("organization_user_id=alice").await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = consent_client(&api, "alice", json!({})).await;
    let calls = [
        (Method::GET, "/v1/consents/users".to_owned(), None),
        (
            Method::POST,
            "/v1/consents/users".to_owned(),
            Some(json!({"organization_user_id": "alice"})),
        ),
        (
            Method::PATCH,
            format!("/v1/consents/users/{alice_id}"),
            Some(json!({"metadata": {"a": 1}})),
        ),
        (
            Method::DELETE,
            format!("/v1/consents/users/{alice_id}"),
            None,
        ),
        (Method::GET, format!("/v1/consents/events/{event_id}"), None),
        (
            Method::PATCH,
            format!("/v1/consents/events/{event_id}"),
            Some(json!({"status": "confirmed"})),
        ),
        (
            Method::DELETE,
            format!("/v1/consents/events/{event_id}"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/consents/events?organization_user_id=alice".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/v1/consents/tokens".to_owned(),
            Some(json!({"organization_user_id": "alice"})),
        ),
        (
            Method::POST,
            "/v1/consents/proofs".to_owned(),
            Some(json!({"file": "data:application/pdf;base64,JVBERi0xLjQK"})),
        ),
        (Method::GET, "/v1/keys".to_owned(), None),
        (Method::POST, "/v1/keys".to_owned(), Some(json!({}))),
        (Method::GET, "/v1/secrets".to_owned(), None),
        (
            Method::POST,
            "/v1/secrets".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (Method::GET, "/v1/marketplace/integrations".to_owned(), None),
    ];
    for (method, path, body) in calls {
        let (status, out) = alice.send(method.clone(), &path, body).await;
        assert_error(status, &out, 403, "Forbidden");
        assert!(
            !out.to_string().contains(&event_id),
            "{method} {path}: {out}"
        );
    }
    assert_eq!(
        api.events("organization_user_id=alice").await["total"],
        1,
        "nothing was changed"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn expired_and_tampered_consent_tokens_are_401(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    two_users(&api).await;
    let path = "/v1/consents/users/alice?$by_organization_user_id=true";

    let mut tampered = consent_client(&api, "alice", json!({})).await;
    // Rewrite the payload to name bob: the signature no longer matches.
    let parts: Vec<&str> = tampered.token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    assert!(payload.contains("alice"), "{payload}");
    let forged = b64.encode(payload.replace("alice", "bob"));
    tampered.token = format!("{}.{forged}.{}", parts[0], parts[2]);
    let (status, body) = tampered
        .get("/v1/consents/users/bob?$by_organization_user_id=true")
        .await;
    assert_error(status, &body, 401, "NotAuthenticated");

    let short = consent_client(&api, "alice", json!({"lifetime": 1})).await;
    assert_eq!(short.get(path).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) = short.get(path).await;
    assert_error(status, &body, 401, "NotAuthenticated");

    for lifetime in [json!(0), json!(2_592_001), json!("900")] {
        let (status, body) = api
            .post(
                "/v1/consents/tokens",
                json!({"organization_user_id": "alice", "lifetime": lifetime}),
            )
            .await;
        assert_bad_field(status, &body, "lifetime");
    }
    server.stop().await;
}

/// A data URI of `bytes` declared as `mime`.
fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", STANDARD.encode(bytes))
}

/// The content address Assent gives to `bytes` of extension `ext`.
fn address(bytes: &[u8], ext: &str) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{ext}")
}

/// An OLE compound file whose root storage has class id `clsid`, with one stream.
fn compound_file(clsid: &str, stream: &str) -> Vec<u8> {
    let mut file = cfb::CompoundFile::create(Cursor::new(Vec::new())).expect("cfb");
    file.set_storage_clsid("/", uuid::Uuid::parse_str(clsid).unwrap())
        .unwrap();
    file.create_stream(stream)
        .unwrap()
        .write_all(b"proof")
        .unwrap();
    file.flush().unwrap();
    file.into_inner().into_inner()
}

/// A Word document: a ZIP whose first entry lies under `word/`.
fn docx() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("word/document.xml", options).unwrap();
    zip.write_all(b"<w:document/>").unwrap();
    zip.start_file("[Content_Types].xml", options).unwrap();
    zip.write_all(b"<Types/>").unwrap();
    zip.finish().unwrap().into_inner()
}

/// One file of each accepted type, with its extension and MIME type.
fn proof_files() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n".to_vec()),
        (
            "png",
            "image/png",
            vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13],
        ),
        (
            "jpg",
            "image/jpeg",
            vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J'],
        ),
        ("gif", "image/gif", b"GIF89a\x01\x00\x01\x00".to_vec()),
        (
            "docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            docx(),
        ),
        (
            "doc",
            "application/msword",
            compound_file("00020906-0000-0000-c000-000000000046", "/WordDocument"),
        ),
        (
            "msg",
            "application/vnd.ms-outlook",
            compound_file(
                "00020d0b-0000-0000-c000-000000000046",
                "/__properties_version1.0",
            ),
        ),
    ]
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn each_accepted_proof_type_is_stored_under_its_content_address(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (ext, mime, bytes) in proof_files() {
        // Declared as something else: the type comes from the bytes.
        let (status, out) = api
            .post(
                "/v1/consents/proofs",
                json!({"file": data_uri("application/octet-stream", &bytes)}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ext}: {out}");
        let id = address(&bytes, ext);
        assert_eq!(out["id"], id, "{ext}");
        assert_eq!(out["size"], bytes.len(), "{ext}");

        let (status, read) = api.get(&format!("/v1/consents/proofs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{ext}: {read}");
        assert_eq!(read["file"], data_uri(mime, &bytes), "{ext}");
    }
    let other = server.new_org("other").await;
    let id = address(&proof_files()[0].2, "pdf");
    let (status, body) = other.get(&format!("/v1/consents/proofs/{id}")).await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn proofs_of_other_types_or_over_15_mb_are_refused(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for file in [
        data_uri("application/pdf", b"#!/bin/sh\necho not a pdf\n"),
        data_uri("text/html", b"<html></html>"),
        "data:application/pdf;base64,%%%".to_owned(),
        "https://example.com/proof.pdf".to_owned(),
    ] {
        let (status, body) = api.post("/v1/consents/proofs", json!({"file": file})).await;
        assert_bad_field(status, &body, "file");
    }
    let mut big = b"%PDF-1.4\n".to_vec();
    big.resize(11_300_000, b' ');
    let uri = data_uri("application/pdf", &big);
    assert!(uri.len() > 15_000_000 && uri.len() < 20 * 1024 * 1024);
    let (status, body) = api.post("/v1/consents/proofs", json!({"file": uri})).await;
    assert_error(status, &body, 413, "PayloadTooLarge");
    let (status, body) = api
        .get(&format!("/v1/consents/proofs/{}", address(&big, "pdf")))
        .await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn erasing_a_user_removes_the_proofs_no_other_user_references(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let own = b"%PDF-1.4 alice only".to_vec();
    let shared = b"%PDF-1.4 shared terms".to_vec();
    let (own_id, shared_id) = (address(&own, "pdf"), address(&shared, "pdf"));

    let event = api
        .event(json!({
            "user": {"organization_user_id": "alice"},
            "proofs": [data_uri("application/pdf", &own), data_uri("application/pdf", &shared)],
        }))
        .await;
    assert_eq!(event["proofs_id"], json!([own_id, shared_id]), "{event}");
    let (status, _) = api
        .post(
            "/v1/consents/proofs",
            json!({"file": data_uri("application/pdf", &shared)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.event(json!({"user": {"organization_user_id": "bob"}, "proofs_id": [shared_id]}))
        .await;

    let alice_id = event["user"]["id"].as_str().unwrap();
    let (status, body) = api.delete(&format!("/v1/consents/users/{alice_id}")).await;
    assert!(status.is_success(), "{status}: {body}");
    let (status, body) = api.get(&format!("/v1/consents/proofs/{own_id}")).await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api.get(&format!("/v1/consents/proofs/{shared_id}")).await;
    assert_eq!(status, StatusCode::OK, "bob still references it: {body}");
    server.stop().await;
}
