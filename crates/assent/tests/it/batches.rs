//! Idempotency and atomicity of event writes: replays are safe, conflicts reject the whole
//! request, and nothing of a refused request is written.

use crate::common::Backend;
use crate::common::{TestServer, assert_bad_field, assert_error, ids_of, purpose_enabled};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn replaying_an_event_with_the_same_id_and_content_returns_the_stored_one_and_writes_nothing(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let body = json!({
        "id": "import-1",
        "created_at": "2021-03-01T10:00:00Z",
        "user": {"id": "u1", "metadata": {"source": "import"}},
        "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}
    });
    let first = api.event(body.clone()).await;
    let user_before = api.user("u1").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let replay = api.event(body.clone()).await;
    assert_eq!(replay, first, "the stored event is answered as it was");
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    let user_after = api.user("u1").await;
    assert_eq!(
        user_after["version"], user_before["version"],
        "the user is not rewritten"
    );
    assert_eq!(user_after["updated_at"], user_before["updated_at"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn replaying_an_event_whose_created_at_the_server_chose_returns_the_stored_one(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let body = json!({"id": "evt-now", "user": {"id": "u1"},
                      "consents": {"purposes": [{"id": "p", "enabled": true}]}});
    let first = api.event(body.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let replay = api.event(body).await;
    assert_eq!(replay, first);
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn replaying_a_batch_mixed_with_new_events_stores_only_the_new_ones(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let e1 = json!({"id": "e1", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "a", "enabled": true}]}});
    let e2 = json!({"id": "e2", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "b", "enabled": true}]}});
    let first = api.event(e1.clone()).await;
    let (status, out) = api.post("/v1/consents/events", json!([e2, e1])).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(ids_of(&out), ["e2", "e1"]);
    assert_eq!(out[1], first);
    assert_eq!(api.events("user_id=u1").await["total"], 2);
    let user = api.user("u1").await;
    assert_eq!(purpose_enabled(&user, "a"), Some(true));
    assert_eq!(purpose_enabled(&user, "b"), Some(true));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_same_id_with_different_content_is_409_and_rejects_the_whole_batch(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "dup-1", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}}))
        .await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!([
                {"id": "fresh-1", "user": {"id": "u2"}, "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}},
                {"id": "fresh-2", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "sms", "enabled": true}]}},
                {"id": "dup-1", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "newsletter", "enabled": false}]}}
            ]),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    assert!(
        body["message"].as_str().unwrap().contains("dup-1"),
        "the conflict names the id: {body}"
    );
    assert_eq!(
        api.event_status_code("fresh-1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.event_status_code("fresh-2").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.user_status_code("u2").await, StatusCode::NOT_FOUND);
    let user = api.user("u1").await;
    assert_eq!(
        purpose_enabled(&user, "newsletter"),
        Some(true),
        "unchanged"
    );
    assert_eq!(
        purpose_enabled(&user, "sms"),
        None,
        "fresh-2 was not applied"
    );
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    let (_, stored) = api.get("/v1/consents/events/dup-1").await;
    assert_eq!(stored["consents"]["purposes"][0]["enabled"], true);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_replay_compares_metadata_values_exactly(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let metadata = json!({"score": 0.1, "big": 12345678901234567u64, "neg": -3, "text": "héllo ✓",
                          "list": [1, "two", null, {"k": false}], "empty": {}, "none": null});
    let body = json!({"id": "m1", "metadata": metadata, "user": {"id": "u1", "metadata": {"f": 1.5}},
                      "delegate": {"id": "d", "metadata": {"x": [1]}}});
    let first = api.event(body.clone()).await;
    assert_eq!(
        api.event(body.clone()).await,
        first,
        "an exact replay is the same content"
    );
    let mut changed = body.clone();
    changed["metadata"]["score"] = json!(0.2);
    let (status, out) = api.post("/v1/consents/events", changed).await;
    assert_error(status, &out, 409, "Conflict");
    let mut changed = body;
    changed["user"]["metadata"]["f"] = json!(1.25);
    let (status, out) = api.post("/v1/consents/events", changed).await;
    assert_error(status, &out, 409, "Conflict");
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_same_id_with_a_different_created_at_or_regulation_is_409(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "created_at": "2021-01-01T00:00:00Z", "user": {"id": "u1"}}))
        .await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"id": "e1", "created_at": "2021-01-02T00:00:00Z", "user": {"id": "u1"}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"id": "e1", "created_at": "2021-01-01T00:00:00Z", "regulation": "ccpa", "user": {"id": "u1"}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"id": "e1", "created_at": "2021-01-01T00:00:00Z", "user": {"id": "u2"}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    assert_eq!(api.user_status_code("u2").await, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn two_identical_ids_in_one_batch_are_400_and_write_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!([
                {"id": "same", "user": {"id": "u1"}},
                {"id": "other", "user": {"id": "u2"}},
                {"id": "same", "user": {"id": "u1"}}
            ]),
        )
        .await;
    assert_bad_field(status, &body, "[2].id");
    assert_eq!(api.event_status_code("same").await, StatusCode::NOT_FOUND);
    assert_eq!(api.event_status_code("other").await, StatusCode::NOT_FOUND);
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_batch_naming_one_new_user_twice_creates_it_once(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, out) = api
        .post(
            "/v1/consents/events",
            json!([
                {"user": {"organization_user_id": "new@example.com"}, "consents": {"purposes": [{"id": "a", "enabled": true}]}},
                {"user": {"organization_user_id": "new@example.com"}, "consents": {"purposes": [{"id": "b", "enabled": false}]}}
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out[0]["user"]["id"], out[1]["user"]["id"]);
    let users = api.all_users().await;
    assert_eq!(users.len(), 1, "{users:?}");
    let user = api.user_by_ouid("new@example.com").await;
    assert_eq!(purpose_enabled(&user, "a"), Some(true));
    assert_eq!(purpose_enabled(&user, "b"), Some(false));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_accepted_write_survives_a_restart(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"id": format!("e{i}"), "user": {"id": format!("u{}", i % 3)},
                        "consents": {"purposes": [{"id": "p", "enabled": i % 2 == 0}]}})
        })
        .collect();
    let (status, _) = api.post("/v1/consents/events", Value::Array(events)).await;
    assert_eq!(status, StatusCode::OK);
    let before: Vec<Value> = [
        api.user("u0").await,
        api.user("u1").await,
        api.user("u2").await,
    ]
    .into();

    let server = server.restart().await;
    let api = server.client().await;
    for (i, user) in before.iter().enumerate() {
        let after = api.user(&format!("u{i}")).await;
        assert_eq!(&after, user, "user u{i} after restart");
    }
    assert_eq!(api.events("user_id=u0").await["total"], 10);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deletions_patches_and_edits_survive_a_restart(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (id, at, enabled) in [
        ("a", "2024-01-01T00:00:00Z", true),
        ("b", "2024-02-01T00:00:00Z", false),
    ] {
        api.event(json!({"id": id, "created_at": at, "user": {"id": "u1", "organization_user_id": "u1@example.com"},
                         "consents": {"purposes": [{"id": "p", "enabled": enabled}]}}))
            .await;
    }
    api.event(
        json!({"id": "pending", "status": "pending_approval", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "q", "enabled": true}]}}),
    )
    .await;
    api.event(json!({"id": "gone", "user": {"id": "erased"}}))
        .await;
    let (s1, _) = api.delete("/v1/consents/events/b").await;
    let (s2, _) = api
        .patch(
            "/v1/consents/events/pending",
            json!({"status": "confirmed"}),
        )
        .await;
    let (s3, _) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"metadata": {"edited": true}, "country": "NL"}),
        )
        .await;
    let (s4, _) = api.delete("/v1/consents/users/erased").await;
    assert_eq!(
        [s1, s2, s3, s4],
        [
            StatusCode::NO_CONTENT,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK
        ]
    );
    let before = api.user("u1").await;
    assert_eq!(purpose_enabled(&before, "p"), Some(true));
    assert_eq!(purpose_enabled(&before, "q"), Some(true));

    let server = server.restart().await;
    let api = server.client().await;
    assert_eq!(api.user("u1").await, before);
    assert_eq!(api.user_by_ouid("u1@example.com").await["id"], "u1");
    assert_eq!(api.event_status_code("b").await, StatusCode::NOT_FOUND);
    assert_eq!(api.event_status_code("gone").await, StatusCode::NOT_FOUND);
    assert_eq!(api.user_status_code("erased").await, StatusCode::NOT_FOUND);
    let mut ids = api.event_ids("user_id=u1").await;
    ids.sort();
    assert_eq!(ids, ["a", "pending"]);
    server.stop().await;
}

/// A client that dies in the middle of its request body must leave nothing behind.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_request_cut_off_mid_body_writes_nothing(#[case] backend: Backend) {
    use tokio::io::AsyncWriteExt;
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let body = serde_json::to_vec(&json!([
        {"id": "cut-1", "user": {"id": "cut-user-1"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}},
        {"id": "cut-2", "user": {"id": "cut-user-2"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}
    ]))
    .unwrap();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/consents/events?organization_id={} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        api.org,
        api.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() - 10]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        api.user_status_code("cut-user-1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.event_status_code("cut-1").await, StatusCode::NOT_FOUND);
    // The same request sent whole is accepted: the server is fine.
    let (status, _) = api
        .send_bytes(
            reqwest::Method::POST,
            "/v1/consents/events",
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.event_status_code("cut-2").await, StatusCode::OK);
}
