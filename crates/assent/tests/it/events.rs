//! `POST /v1/consents/events`: the shape of what is stored and answered, and every way a body
//! is refused.

use crate::common::Backend;
use crate::common::{TestServer, assert_bad_field, assert_error, ids_of};
use reqwest::{Method, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

/// True for `2024-05-01T12:00:00.000Z`: RFC 3339, UTC, milliseconds.
pub fn is_utc_millis(s: &Value) -> bool {
    // 2024-05-01T12:00:00.000Z
    let Some(s) = s.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && b[23] == b'Z'
        && b[20..23].iter().all(u8::is_ascii_digit)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_single_event_is_answered_as_an_object_with_every_server_field(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, event) = api
        .post(
            "/v1/consents/events",
            json!({
                "user": {"organization_user_id": "alice@example.com"},
                "metadata": {"booking_id": "42"},
                "consents": {"purposes": [{"id": "newsletter", "enabled": true}]},
                "proofs_id": ["c1cd73c7.pdf"],
                "delegate": {"id": "agent-42", "name": "Support"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert!(event.is_object(), "{event}");
    let id = event["id"].as_str().expect("id");
    let uuid = uuid_parts(id);
    assert_eq!(uuid, [8, 4, 4, 4, 12], "server ids are UUIDs: {id}");
    assert_eq!(&id[14..15], "7", "server ids are UUIDv7: {id}");
    assert_eq!(event["organization_id"], "default");
    assert!(is_utc_millis(&event["created_at"]), "{event}");
    assert!(is_utc_millis(&event["updated_at"]), "{event}");
    assert_eq!(event["status"], "confirmed");
    assert_eq!(event["regulation"], "gdpr");
    assert!(event["user"]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(event["user"]["organization_user_id"], "alice@example.com");
    assert_eq!(event["metadata"]["booking_id"], "42");
    assert_eq!(event["proofs_id"], json!(["c1cd73c7.pdf"]));
    assert_eq!(event["delegate"]["id"], "agent-42");
    assert_eq!(event["consents"]["purposes"][0]["id"], "newsletter");
    assert_eq!(event["consents"]["purposes"][0]["enabled"], true);
    assert!(event.get("proofs").is_none(), "proofs are never echoed");

    let (status, stored) = api.get(&format!("/v1/consents/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, event, "GET answers what POST answered");
    server.stop().await;
}

fn uuid_parts(id: &str) -> Vec<usize> {
    id.split('-').map(str::len).collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_without_optional_fields_still_has_status_regulation_user_and_proofs_id(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let event = api.event(json!({})).await;
    for field in [
        "id",
        "organization_id",
        "created_at",
        "updated_at",
        "status",
        "regulation",
    ] {
        assert!(event[field].is_string(), "{field} missing: {event}");
    }
    assert!(event["user"]["id"].is_string(), "{event}");
    assert_eq!(event["proofs_id"], json!([]));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn created_at_with_an_offset_is_answered_in_utc_with_milliseconds(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let event = api
        .event(json!({"created_at": "2020-06-03T23:28:55.123456+02:00", "user": {"id": "u1"}}))
        .await;
    assert_eq!(event["created_at"], "2020-06-03T21:28:55.123Z");
    let event = api
        .event(json!({"created_at": "2020-06-03T21:28:55Z", "user": {"id": "u1"}}))
        .await;
    assert_eq!(event["created_at"], "2020-06-03T21:28:55.000Z");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_client_id_is_kept_as_the_event_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let event = api
        .event(json!({"id": "9556b7f5-ae22-4616-97f9-3f61e22f0ec7", "user": {"id": "u1"}}))
        .await;
    assert_eq!(event["id"], "9556b7f5-ae22-4616-97f9-3f61e22f0ec7");
    let event = api
        .event(json!({"id": "import:2020/Row 17", "user": {"id": "u1"}}))
        .await;
    assert_eq!(event["id"], "import:2020/Row 17");
    let (status, _) = api
        .get("/v1/consents/events/import%3A2020%2FRow%2017")
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_batch_is_answered_as_an_array_in_input_order(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let ids = ["evt-c", "evt-a", "evt-b", "evt-0"];
    let batch: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "user": {"id": format!("user-{i}")},
                   "consents": {"purposes": [{"id": "p", "enabled": i % 2 == 0}]}})
        })
        .collect();
    let (status, out) = api.post("/v1/consents/events", Value::Array(batch)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(ids_of(&out), ids);
    for (i, event) in out.as_array().unwrap().iter().enumerate() {
        assert_eq!(event["user"]["id"], format!("user-{i}"));
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_batch_of_one_is_answered_as_an_array_of_one(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, out) = api
        .post("/v1/consents/events", json!([{"user": {"id": "u1"}}]))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out.as_array().map(Vec::len), Some(1), "{out}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_batch_of_100_is_accepted_and_101_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let batch = |n: usize, prefix: &str| {
        Value::Array(
            (0..n)
                .map(|i| json!({"user": {"id": format!("{prefix}-{i}")}}))
                .collect(),
        )
    };
    let (status, body) = api.post("/v1/consents/events", batch(101, "big")).await;
    assert_error(status, &body, 400, "BadRequest");
    assert!(
        body["message"].as_str().unwrap().contains("100"),
        "the message states the limit: {body}"
    );
    assert!(
        api.all_users().await.is_empty(),
        "nothing of a refused batch is written"
    );

    let (status, out) = api.post("/v1/consents/events", batch(100, "ok")).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out.as_array().unwrap().len(), 100);
    assert_eq!(api.all_users().await.len(), 100);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_empty_batch_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api.post("/v1/consents/events", json!([])).await;
    assert_error(status, &body, 400, "BadRequest");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_that_is_neither_object_nor_array_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for body in [json!("event"), json!(42), json!(null), json!(true)] {
        let (status, out) = api.post("/v1/consents/events", body.clone()).await;
        assert_error(status, &out, 400, "BadRequest");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn one_invalid_event_rejects_the_whole_batch_and_writes_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let mut batch: Vec<Value> = (0..5)
        .map(|i| {
            json!({"id": format!("evt-{i}"), "user": {"id": format!("u{i}"), "organization_user_id": format!("o{i}")},
                   "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}})
        })
        .collect();
    batch[3]["user"]["country"] = json!("XX");
    let (status, body) = api.post("/v1/consents/events", Value::Array(batch)).await;
    assert_bad_field(status, &body, "[3].user.country");
    assert_eq!(
        body["errors"].as_object().unwrap().len(),
        1,
        "only the bad event is named: {body}"
    );
    for i in [0, 1, 2, 4] {
        assert_eq!(
            api.user_status_code(&format!("u{i}")).await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            api.event_status_code(&format!("evt-{i}")).await,
            StatusCode::NOT_FOUND
        );
        let (status, _) = api
            .get(&format!(
                "/v1/consents/users/o{i}?$by_organization_user_id=true"
            ))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn batch_errors_are_keyed_by_the_index_of_each_bad_event(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!([
                {"user": {"id": "ok"}},
                {"user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": "yes"}]}},
                {"user": {"id": "ok2"}},
                {"user": "u3"},
                {"created_at": "yesterday"}
            ]),
        )
        .await;
    assert_bad_field(status, &body, "[1].consents.purposes[0].enabled");
    assert_bad_field(status, &body, "[3].user");
    assert_bad_field(status, &body, "[4].created_at");
    let errors = body["errors"].as_object().unwrap();
    assert!(
        !errors
            .keys()
            .any(|k| k.starts_with("[0]") || k.starts_with("[2]")),
        "valid events are not named: {body}"
    );
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_top_level_field_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "consent": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .await;
    assert_bad_field(status, &body, "consent");
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_nested_field_is_400_naming_its_path(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let cases = [
        (
            json!({"consents": {"purposes": [{"id": "p", "enabld": true}]}}),
            "consents.purposes[0].enabld",
        ),
        (json!({"user": {"id": "u", "email": "x@y"}}), "user.email"),
        (
            json!({"consents": {"vendor": {"enabled": ["g"]}}}),
            "consents.vendor",
        ),
        (
            json!({"consents": {"vendors": {"enable": ["g"]}}}),
            "consents.vendors.enable",
        ),
        (
            json!({"consents": {"channels": [{"id": "email", "on": true}]}}),
            "consents.channels[0].on",
        ),
        (
            json!({"consents": {"purposes": [{"id": "p", "preferences": [{"id": "w", "enable": true}]}]}}),
            "consents.purposes[0].preferences[0].enable",
        ),
    ];
    for (body, path) in cases {
        let (status, out) = api.post("/v1/consents/events", body).await;
        assert_bad_field(status, &out, path);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn values_of_the_wrong_type_are_400_naming_their_path(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let cases = [
        (json!({"user": "alice"}), "user"),
        (json!({"user": {"id": 7}}), "user.id"),
        (
            json!({"user": {"organization_user_id": true}}),
            "user.organization_user_id",
        ),
        (json!({"user": {"metadata": "x"}}), "user.metadata"),
        (json!({"metadata": [1, 2]}), "metadata"),
        (json!({"consents": []}), "consents"),
        (
            json!({"consents": {"purposes": {"id": "p"}}}),
            "consents.purposes",
        ),
        (
            json!({"consents": {"purposes": ["p"]}}),
            "consents.purposes[0]",
        ),
        (
            json!({"consents": {"purposes": [{"id": "p", "enabled": "true"}]}}),
            "consents.purposes[0].enabled",
        ),
        (
            json!({"consents": {"purposes": [{"id": "p", "enabled_li": 1}]}}),
            "consents.purposes[0].enabled_li",
        ),
        (
            json!({"consents": {"purposes": [{"enabled": true}]}}),
            "consents.purposes[0].id",
        ),
        (
            json!({"consents": {"purposes": [{"id": "p", "values": {"topics": {"value": 3}}}]}}),
            "consents.purposes[0].values.topics.value",
        ),
        (
            json!({"consents": {"vendors": {"enabled": "google"}}}),
            "consents.vendors.enabled",
        ),
        (
            json!({"consents": {"vendors": {"enabled": [1]}}}),
            "consents.vendors.enabled[0]",
        ),
        (json!({"status": "approved"}), "status"),
        (json!({"status": 1}), "status"),
        (json!({"regulation": "GDPR"}), "regulation"),
        (json!({"id": ""}), "id"),
        (json!({"id": 12}), "id"),
        (json!({"id": "x".repeat(256)}), "id"),
        (json!({"id": "line\nbreak"}), "id"),
        (json!({"user": {"id": "x".repeat(256)}}), "user.id"),
        (
            json!({"consents": {"purposes": [{"id": "tab\there"}]}}),
            "consents.purposes[0].id",
        ),
        (json!({"proofs_id": "a.pdf"}), "proofs_id"),
        (json!({"delegate": {"name": "no id"}}), "delegate.id"),
        (json!({"iab": "tcf"}), "iab"),
    ];
    for (body, path) in cases {
        let (status, out) = api.post("/v1/consents/events", body.clone()).await;
        assert_bad_field(status, &out, path);
    }
    assert!(
        api.all_users().await.is_empty(),
        "no refused event made a user"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_bad_or_future_timestamp_is_400_naming_created_at(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for created_at in [
        json!("2020-06-03"),
        json!("yesterday"),
        json!("2020-13-01T00:00:00Z"),
        json!("1960-01-01T00:00:00Z"),
        json!(1591219735),
        json!("2999-01-01T00:00:00Z"),
    ] {
        let (status, body) = api
            .post(
                "/v1/consents/events",
                json!({"created_at": created_at, "user": {"id": "u1"}}),
            )
            .await;
        assert_bad_field(status, &body, "created_at");
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_bad_country_code_is_400_naming_its_path(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (user, path) in [
        (json!({"id": "u1", "country": "XX"}), "user.country"),
        (json!({"id": "u1", "country": "FRA"}), "user.country"),
        (
            json!({"id": "u1", "last_seen_country": "France"}),
            "user.last_seen_country",
        ),
        (
            json!({"id": "u1", "last_seen_country": 33}),
            "user.last_seen_country",
        ),
    ] {
        let (status, body) = api.post("/v1/consents/events", json!({"user": user})).await;
        assert_bad_field(status, &body, path);
    }
    let event = api
        .event(json!({"user": {"id": "u1", "country": "fr"}}))
        .await;
    assert_eq!(event["user"]["country"], "FR", "codes are upper-cased");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_over_one_mebibyte_is_413_and_writes_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let big = "x".repeat(60 * 1024);
    let batch: Vec<Value> = (0..18)
        .map(|i| json!({"user": {"id": format!("u{i}")}, "delegate": {"id": "d", "name": big}}))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    assert!(body.len() > 1024 * 1024);
    let (status, out) = api
        .send_bytes(
            Method::POST,
            "/v1/consents/events",
            Some("application/json"),
            body,
        )
        .await;
    assert_error(status, &out, 413, "PayloadTooLarge");
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_body_just_under_one_mebibyte_is_accepted(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let big = "x".repeat(60 * 1024);
    let batch: Vec<Value> = (0..16)
        .map(|i| json!({"user": {"id": format!("u{i}")}, "delegate": {"id": "d", "name": big}}))
        .collect();
    let body = serde_json::to_vec(&batch).unwrap();
    assert!(body.len() < 1024 * 1024);
    let (status, out) = api
        .send_bytes(
            Method::POST,
            "/v1/consents/events",
            Some("application/json"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn invalid_json_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for bytes in [&b"{\"user\": "[..], b"{'user': {}}", b"\xff\xfe", b""] {
        let (status, body) = api
            .send_bytes(
                Method::POST,
                "/v1/consents/events",
                Some("application/json"),
                bytes.to_vec(),
            )
            .await;
        assert_bad_field(status, &body, "body");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_non_json_content_type_is_415(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let body = br#"{"user": {"id": "u1"}}"#.to_vec();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let (status, out) = api
            .send_bytes(Method::POST, "/v1/consents/events", Some(ct), body.clone())
            .await;
        assert_error(status, &out, 415, "UnsupportedMediaType");
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    let (status, _) = api
        .send_bytes(
            Method::POST,
            "/v1/consents/events",
            Some("application/json; charset=utf-8"),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "JSON with a charset is JSON");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn json_nested_deeper_than_32_levels_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let mut deep = json!("leaf");
    for _ in 0..40 {
        deep = json!({ "k": deep });
    }
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "metadata": deep}),
        )
        .await;
    assert_error(status, &body, 400, "BadRequest");
    assert!(
        body["errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("metadata")),
        "{body}"
    );
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn metadata_over_16_kib_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "metadata": {"blob": "x".repeat(17 * 1024)}}),
        )
        .await;
    assert_bad_field(status, &body, "metadata");
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1", "metadata": {"blob": "x".repeat(17 * 1024)}}}),
        )
        .await;
    assert_bad_field(status, &body, "user.metadata");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_string_over_64_kib_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "delegate": {"id": "d", "name": "x".repeat(65 * 1024)}}),
        )
        .await;
    assert_bad_field(status, &body, "delegate.name");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_chunked_body_over_one_mebibyte_is_413(#[case] backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/consents/events?organization_id={} HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        api.org, api.token
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A JSON string of 1.1 MiB, sent in 64 KiB chunks without a Content-Length.
    let mut body = b"{\"metadata\": {\"x\": \"".to_vec();
    body.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 100 * 1024));
    body.extend_from_slice(b"\"}}");
    for chunk in body.chunks(64 * 1024) {
        let frame = format!("{:x}\r\n", chunk.len());
        if stream.write_all(frame.as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break; // the server may answer and close before reading everything
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let json_start = text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let body: Value = serde_json::from_str(text[json_start..].trim())
        .unwrap_or_else(|e| panic!("the 413 carries a JSON error ({e}): {text}"));
    assert_error(StatusCode::PAYLOAD_TOO_LARGE, &body, 413, "PayloadTooLarge");
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn country_and_last_seen_country_of_an_event_land_on_the_user(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1", "country": "pt", "last_seen_country": "ES"}}))
        .await;
    let user = api.user("u1").await;
    assert_eq!(user["country"], "PT");
    assert_eq!(user["last_seen_country"], "ES");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn client_ids_of_255_characters_are_accepted(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let id = "é".repeat(255);
    let event = api
        .event(json!({"id": id, "user": {"id": id}, "consents": {"purposes": [{"id": id, "enabled": true}]}}))
        .await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(api.user(&id).await["id"], id.as_str());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn writes_accept_the_disable_integrations_flag(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, event) = api
        .post(
            "/v1/consents/events?$disable_integrations=true",
            json!({"id": "e1", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(
        crate::common::purpose_enabled(&api.user("u1").await, "p"),
        Some(true)
    );
    let (status, _) = api
        .patch(
            "/v1/consents/users/u1?$disable_integrations=true",
            json!({"metadata": {"a": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api
        .delete("/v1/consents/events/e1?$disable_integrations=true")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api
        .post(
            "/v1/consents/events?$disable_integrations=maybe",
            json!({"user": {"id": "u2"}}),
        )
        .await;
    assert_bad_field(status, &body, "$disable_integrations");
    server.stop().await;
}

/// A minimal PDF (`%PDF-1.4` header), base64.
const TINY_PDF_BASE64: &str = "JVBERi0xLjQKJSVFT0YK";

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn inline_proofs_are_stored_and_their_ids_land_in_proofs_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, event) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "proofs": [format!("data:application/pdf;base64,{TINY_PDF_BASE64}")]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert!(event.get("proofs").is_none(), "proofs are never echoed");
    let ids = event["proofs_id"].as_array().expect("proofs_id");
    assert_eq!(ids.len(), 1, "{event}");
    let id = ids[0].as_str().unwrap();
    let (hash, ext) = id.split_once('.').expect("<sha256>.<ext>");
    assert_eq!(ext, "pdf");
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_valid_tcf_string_is_accepted_and_echoed(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let tcf = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA";
    let event = api
        .event(json!({"user": {"id": "u1"}, "consents": {"tcfcs": tcf}}))
        .await;
    assert_eq!(event["consents"]["tcfcs"], tcf);
    assert_eq!(api.user("u1").await["consents"]["tcfcs"], tcf);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_invalid_tcf_string_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for tcf in ["not-a-tc-string", "CQ", "!!!!"] {
        let (status, body) = api
            .post(
                "/v1/consents/events",
                json!({"user": {"id": "u1"}, "consents": {"tcfcs": tcf}}),
            )
            .await;
        assert_bad_field(status, &body, "consents.tcfcs");
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    server.stop().await;
}
