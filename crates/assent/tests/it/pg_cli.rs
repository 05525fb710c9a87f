//! The binary on PostgreSQL: clear errors for bad configuration, `assent migrate`, and copying
//! an embedded store into PostgreSQL.

use crate::common::{Backend, all_events, fresh_store, session};
use crate::process::{serve, serve_with};
use serde_json::{Value, json};
use std::process::{Command, Output};

fn assent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(args)
        .env("ASSENT_LOG", "warn")
        .output()
        .expect("assent runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh schema's URL, or `None` when PostgreSQL is not configured.
async fn database() -> Option<String> {
    let (_dir, store) = fresh_store(Backend::Postgres).await?;
    store.database_url
}

/// Asserts `serve` fails at start with one line naming the problem, and no panic.
fn fails_with_one_sentence(url: &str, expected: &str) {
    let out = assent(&["serve", "--listen", "127.0.0.1:0", "--database-url", url]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(expected), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[tokio::test]
async fn an_unreachable_database_fails_with_one_sentence() {
    if database().await.is_none() {
        return;
    }
    fails_with_one_sentence(
        "postgres://postgres@127.0.0.1:1/test",
        "cannot connect to PostgreSQL at 127.0.0.1:1",
    );
}

#[tokio::test]
async fn an_unknown_role_or_database_fails_with_one_sentence() {
    if database().await.is_none() {
        return;
    }
    fails_with_one_sentence(
        "postgres://no_such_role@127.0.0.1:5432/test",
        "refused user 'no_such_role'",
    );
    fails_with_one_sentence(
        "postgres://postgres@127.0.0.1:5432/no_such_database",
        "database 'no_such_database' does not exist",
    );
    fails_with_one_sentence("mysql://root@127.0.0.1/test", "must start with postgres://");
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused() {
    let Some(url) = database().await else {
        return;
    };
    let out = assent(&["migrate", "--database-url", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("schema is at version 6"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("INSERT INTO assent_schema (version) VALUES (99)")
        .await
        .unwrap();
    fails_with_one_sentence(&url, "migrated by a newer version of Assent (schema 99");
}

#[tokio::test]
async fn keys_create_stores_the_key_in_postgres() {
    let Some(url) = database().await else {
        return;
    };
    let node = serve_with(&["--database-url".as_ref(), url.as_ref()]);
    let out = assent(&[
        "keys",
        "create",
        "--organization",
        "acme",
        "--database-url",
        &url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    let http = reqwest::Client::new();
    let token = session(
        &http,
        &node.base,
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    )
    .await;
    assert!(!token.is_empty());
}

/// Fills an embedded store through a real server: two organizations, users with several events
/// each (one back-dated, one deleted), a pending event. Returns the bootstrap key and secret.
async fn fill_sqlite(dir: &std::path::Path) -> (String, String) {
    let node = serve(dir);
    let boot = node.bootstrap.clone().unwrap();
    let (key, secret) = (
        boot["key"].as_str().unwrap().to_owned(),
        boot["secret"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let token = session(&http, &node.base, &key, &secret).await;
    for u in 0..30 {
        let events: Vec<Value> = (0..4)
            .map(|i| {
                json!({
                    "id": format!("u{u}-e{i}"),
                    "created_at": format!("2024-01-{:02}T00:00:00Z", 10 - i * 2),
                    "status": if i == 3 { "pending_approval" } else { "confirmed" },
                    "user": {"organization_user_id": format!("u{u}"), "metadata": {"i": i}},
                    "consents": {"purposes": [{"id": "news", "enabled": i % 2 == 0}]}
                })
            })
            .collect();
        let res = http
            .post(format!(
                "{}/v1/consents/events?organization_id=default",
                node.base
            ))
            .bearer_auth(&token)
            .json(&events)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let res = http
        .delete(format!(
            "{}/v1/consents/events/u0-e0?organization_id=default",
            node.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT);
    let res = http
        .post(format!(
            "{}/v1/marketplace/integrations?organization_id=default",
            node.base
        ))
        .bearer_auth(&token)
        .json(&json!({"type_id": "webhook-http", "name": "crm",
                      "properties": {"url": "https://hooks.example.com/consent"},
                      "event_types": ["user.updated"]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    // The purpose registry (two versions of one purpose), strict mode and the look.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/v1/purposes",
            json!({"id": "news", "labels": {"en": "News"}}),
        ),
        (
            reqwest::Method::PATCH,
            "/v1/purposes/news",
            json!({"labels": {"en": "News, v2"}}),
        ),
        (
            reqwest::Method::PATCH,
            "/v1/settings",
            json!({"strict_mode": true}),
        ),
        (
            reqwest::Method::PUT,
            "/v1/preference-center",
            json!({"title": "Copied look"}),
        ),
    ] {
        let res = http
            .request(
                method,
                format!("{}{path}?organization_id=default", node.base),
            )
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}");
    }
    drop(node);
    let out = assent(&[
        "keys",
        "create",
        "--organization",
        "acme",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    (key, secret)
}

/// What a server answers about every user: its status and its events.
async fn snapshot(base: &str, token: &str) -> Vec<(Value, Vec<String>)> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for u in 0..30 {
        let user: Value = http
            .get(format!(
                "{base}/v1/consents/users/u{u}?organization_id=default&$by_organization_user_id=true"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = all_events(&http, base, token, &format!("u{u}"))
            .await
            .unwrap();
        out.push((
            json!({"id": user["id"], "metadata": user["metadata"], "consents": user["consents"], "version": user["version"]}),
            events.iter().map(|e| e.id.clone()).collect(),
        ));
    }
    out
}

#[tokio::test]
async fn an_embedded_store_is_copied_into_postgres_and_the_copy_resumes() {
    let Some(url) = database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = fill_sqlite(dir.path()).await;
    let before = {
        let node = serve(dir.path());
        let token = session(&reqwest::Client::new(), &node.base, &key, &secret).await;
        snapshot(&node.base, &token).await
    };

    let from = format!("sqlite:{}", dir.path().display());
    let out = assent(&["migrate", "--from", &from, "--to", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains(
            "Copied 2 organizations, 2 API keys, 1 integrations, 0 secrets, 0 proofs, 30 users and 119 events"
        ),
        "{said}"
    );
    assert!(
        said.contains("Copied 1 purposes (2 versions) and 2 settings."),
        "{said}"
    );
    assert!(
        stderr(&out).contains("events: 119/119 rows"),
        "progress shown: {}",
        stderr(&out)
    );

    // Interrupt it after the fact: forget the events after the first 50, as if the copy had
    // stopped there, and run it again.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let cut: i64 = client
        .query_one("SELECT seq FROM events ORDER BY seq OFFSET 49 LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute("DELETE FROM events WHERE seq > $1", &[&cut])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE assent_copy SET last_key = $1, done = 50 WHERE phase = 'events'",
            &[&cut],
        )
        .await
        .unwrap();
    let out = assent(&["migrate", "--from", &from, "--to", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("119 events"), "{said}");
    assert!(said.contains("continuing an interrupted copy"), "{said}");

    // The same key works on PostgreSQL, and every user reads as before.
    let node = serve_with(&["--database-url".as_ref(), url.as_ref()]);
    assert!(
        node.bootstrap.is_none(),
        "the copied organizations make no new first key"
    );
    let token = session(&reqwest::Client::new(), &node.base, &key, &secret).await;
    assert_eq!(snapshot(&node.base, &token).await, before);
    let integrations: Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/marketplace/integrations?organization_id=default",
            node.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(integrations["data"][0]["name"], "crm", "{integrations}");
    assert_eq!(
        integrations["data"][0]["event_types"],
        json!(["user.updated"])
    );

    // The registry, settings and look came along.
    let get = |path: &'static str| {
        let (base, token) = (node.base.clone(), token.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let versions = get("/v1/purposes/news/versions?organization_id=default").await;
    assert_eq!(versions["total"], 2, "{versions}");
    assert_eq!(versions["data"][0]["labels"]["en"], "News, v2");
    let settings = get("/v1/settings?organization_id=default").await;
    assert_eq!(settings["strict_mode"], true, "{settings}");
    let look = get("/v1/preference-center?organization_id=default").await;
    assert_eq!(look["title"], "Copied look", "{look}");

    // New events on PostgreSQL come after the copied ones.
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/consents/events?organization_id=default", node.base))
        .bearer_auth(&token)
        .json(&json!({"user": {"organization_user_id": "u1"}, "consents": {"purposes": [{"id": "news", "enabled": true}]}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let events = all_events(&http, &node.base, &token, "u1").await.unwrap();
    assert_eq!(
        events.len(),
        4,
        "three copied confirmed events and the new one"
    );
}

#[tokio::test]
async fn copying_into_a_database_that_has_data_is_refused() {
    let Some(url) = database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fill_sqlite(dir.path()).await;
    // The target already has a user of its own.
    let node = serve_with(&["--database-url".as_ref(), url.as_ref()]);
    let boot = node.bootstrap.clone().unwrap();
    let token = session(
        &reqwest::Client::new(),
        &node.base,
        boot["key"].as_str().unwrap(),
        boot["secret"].as_str().unwrap(),
    )
    .await;
    let res = reqwest::Client::new()
        .post(format!(
            "{}/v1/consents/events?organization_id=default",
            node.base
        ))
        .bearer_auth(&token)
        .json(&json!({"user": {"id": "native"}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let out = assent(&[
        "migrate",
        "--from",
        &format!("sqlite:{}", dir.path().display()),
        "--to",
        &url,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds users or events"),
        "{}",
        stderr(&out)
    );
}
