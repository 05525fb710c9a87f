//! `GET|PATCH|DELETE /v1/consents/events/{id}` and `DELETE /v1/consents/events`: reading one
//! event, changing it, deleting events; the user is recomputed after every change.

use crate::common::Backend;
use crate::common::{Api, TestServer, assert_bad_field, assert_error, channel, purpose_enabled};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

/// The user `id` as a twin would have it had it received only `events` (the twin gets the
/// same events under another user id, with other event ids).
async fn twin_consents(api: &Api, twin: &str, events: &[Value]) -> Value {
    for e in events {
        let mut e = e.clone();
        e["user"]["id"] = json!(twin);
        if let Some(o) = e.as_object_mut() {
            o.remove("id");
        }
        api.event(e).await;
    }
    let user = api.user(twin).await;
    json!({"consents": user["consents"], "metadata": user["metadata"], "last_seen_country": user["last_seen_country"]})
}

fn state_of(user: &Value) -> Value {
    json!({"consents": user["consents"], "metadata": user["metadata"], "last_seen_country": user["last_seen_country"]})
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_event_id_is_404_on_get_patch_and_delete(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "exists", "user": {"id": "u1"}}))
        .await;
    let (status, body) = api.get("/v1/consents/events/nope").await;
    assert_error(status, &body, 404, "NotFound");
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    let (status, body) = api
        .patch("/v1/consents/events/nope", json!({"status": "confirmed"}))
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api.delete("/v1/consents/events/nope").await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api
        .get("/v1/consents/events/9556b7f5-ae22-4616-97f9-3f61e22f0ec7")
        .await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_read_for_another_user_is_404(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "one@example.com"}}))
        .await;
    api.event(json!({"user": {"id": "u2", "organization_user_id": "two@example.com"}}))
        .await;
    assert_eq!(
        api.get("/v1/consents/events/e1?user_id=u1").await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/consents/events/e1?organization_user_id=one%40example.com")
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = api.get("/v1/consents/events/e1?user_id=u2").await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api
        .get("/v1/consents/events/e1?organization_user_id=two%40example.com")
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (status, _) = api.delete("/v1/consents/events/e1?user_id=u2").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.event_status_code("e1").await,
        StatusCode::OK,
        "not deleted"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_consents_replaces_the_events_choices_and_recomputes_the_user(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "created_at": "2024-01-01T00:00:00Z", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "newsletter", "enabled": true}, {"id": "sms", "enabled": true}]}}))
        .await;
    api.event(
        json!({"id": "e2", "created_at": "2024-02-01T00:00:00Z", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "sms", "enabled": false}]}}),
    )
    .await;
    let before = api.user("u1").await;
    let (status, patched) = api
        .patch(
            "/v1/consents/events/e1",
            json!({"consents": {"purposes": [{"id": "newsletter", "enabled": false}, {"id": "sms", "enabled": true}],
                                "channels": [{"id": "email", "enabled": true}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["id"], "e1");
    assert_eq!(
        patched["created_at"], "2024-01-01T00:00:00.000Z",
        "created_at is kept"
    );
    assert_eq!(patched["consents"]["purposes"][0]["enabled"], false);
    assert_ne!(patched["updated_at"], json!(null));

    let user = api.user("u1").await;
    assert_eq!(purpose_enabled(&user, "newsletter"), Some(false));
    assert_eq!(
        purpose_enabled(&user, "sms"),
        Some(false),
        "e2 is newer and still wins"
    );
    assert_eq!(
        channel(&user["consents"]["channels"], "email").unwrap()["enabled"],
        true
    );
    assert!(user["version"].as_i64() > before["version"].as_i64());
    let (_, stored) = api.get("/v1/consents/events/e1").await;
    assert_eq!(stored, patched);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_delegate_and_proofs_id_changes_the_event(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1"}, "proofs_id": ["a.pdf"]}))
        .await;
    let (status, patched) = api
        .patch(
            "/v1/consents/events/e1",
            json!({"proofs_id": ["b.pdf", "c.png"], "delegate": {"id": "agent-7", "name": "Support"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["proofs_id"], json!(["b.pdf", "c.png"]));
    assert_eq!(patched["delegate"]["id"], "agent-7");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_patch_with_an_unknown_or_bad_field_is_400_and_changes_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let original = api
        .event(
            json!({"id": "e1", "status": "pending_approval", "user": {"id": "u1"},
                      "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .await;
    for (body, path) in [
        (
            json!({"status": "confirmed", "created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
        ),
        (json!({"user": {"id": "u2"}}), "user"),
        (json!({"regulation": "ccpa"}), "regulation"),
        (json!({"status": "approved"}), "status"),
        (
            json!({"consents": {"purposes": [{"id": "p", "enabled": "no"}]}}),
            "consents.purposes[0].enabled",
        ),
    ] {
        let (status, out) = api.patch("/v1/consents/events/e1", body).await;
        assert_bad_field(status, &out, path);
    }
    let (_, stored) = api.get("/v1/consents/events/e1").await;
    assert_eq!(stored, original);
    assert_eq!(purpose_enabled(&api.user("u1").await, "p"), None);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_an_event_recomputes_the_user_as_if_it_never_happened(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let kept = [
        json!({"created_at": "2024-01-01T00:00:00Z", "user": {"id": "u1", "metadata": {"a": 1}, "last_seen_country": "DE"},
               "consents": {"purposes": [{"id": "newsletter", "enabled": true, "values": {"topics": {"value": "tech"}}}],
                            "vendors": {"enabled": ["google"]}}}),
        json!({"created_at": "2024-03-01T00:00:00Z", "user": {"id": "u1"},
               "consents": {"channels": [{"id": "email", "enabled": true}]}}),
    ];
    let doomed = json!({"id": "doomed", "created_at": "2024-02-01T00:00:00Z",
        "user": {"id": "u1", "metadata": {"a": 2, "b": 2}, "last_seen_country": "FR"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": false, "values": {"topics": {"value": "sport"}}},
                                  {"id": "sms", "enabled": true}],
                     "vendors": {"disabled": ["google"], "enabled": ["meta"]},
                     "channels": [{"id": "email", "enabled": false}, {"id": "push", "enabled": true}]}});
    api.event(kept[0].clone()).await;
    api.event(doomed).await;
    api.event(kept[1].clone()).await;
    let with = api.user("u1").await;
    assert_eq!(purpose_enabled(&with, "newsletter"), Some(false));

    let (status, body) = api.delete("/v1/consents/events/doomed").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(api.event_status_code("doomed").await, StatusCode::NOT_FOUND);
    let after = api.user("u1").await;
    let expected = twin_consents(&api, "twin", &kept).await;
    assert_eq!(state_of(&after), expected);
    assert_eq!(purpose_enabled(&after, "newsletter"), Some(true));
    assert_eq!(after["last_seen_country"], "DE");
    assert_eq!(after["metadata"], json!({"a": 1}));
    assert_eq!(api.events("user_id=u1").await["total"], 2);
    assert!(after["version"].as_i64() > with["version"].as_i64());

    let (status, _) = api.delete("/v1/consents/events/doomed").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a second delete finds nothing"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_events_by_filter_deletes_only_matching_ones_and_recomputes(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let events = [
        json!({"id": "b42-a", "created_at": "2024-01-01T00:00:00Z", "metadata": {"booking_id": "42"},
               "user": {"id": "u1", "organization_user_id": "dan@example.com"},
               "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        json!({"id": "b7", "created_at": "2024-02-01T00:00:00Z", "metadata": {"booking_id": "7"},
               "user": {"id": "u1"}, "consents": {"purposes": [{"id": "q", "enabled": true}]}}),
        json!({"id": "b42-b", "created_at": "2024-03-01T00:00:00Z", "metadata": {"booking_id": 42},
               "user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": false}, {"id": "r", "enabled": true}]}}),
        json!({"id": "none", "created_at": "2024-04-01T00:00:00Z", "user": {"id": "u1"},
               "consents": {"purposes": [{"id": "s", "enabled": true}]}}),
    ];
    for e in &events {
        api.event(e.clone()).await;
    }
    // Another user's event with the same booking stays.
    api.event(json!({"id": "other-42", "metadata": {"booking_id": "42"}, "user": {"id": "u2"}}))
        .await;

    let (status, body) = api
        .delete("/v1/consents/events?organization_user_id=dan%40example.com&metadata.booking_id=42")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut left = api.event_ids("user_id=u1").await;
    left.sort();
    assert_eq!(left, ["b7", "none"]);
    assert_eq!(api.event_status_code("other-42").await, StatusCode::OK);
    let user = api.user("u1").await;
    assert_eq!(
        purpose_enabled(&user, "p"),
        None,
        "both events that set p are gone"
    );
    assert!(crate::common::purpose(&user, "r").is_none(), "{user}");
    assert_eq!(purpose_enabled(&user, "q"), Some(true));
    assert_eq!(purpose_enabled(&user, "s"), Some(true));
    let expected = twin_consents(&api, "twin", &[events[1].clone(), events[3].clone()]).await;
    assert_eq!(state_of(&user)["consents"], expected["consents"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_events_by_a_date_range_deletes_pending_ones_too(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "old", "created_at": "2020-01-01T00:00:00Z", "user": {"id": "u1"}}))
        .await;
    api.event(json!({"id": "old-pending", "status": "pending_approval", "created_at": "2020-02-01T00:00:00Z", "user": {"id": "u1"}})).await;
    api.event(json!({"id": "new", "created_at": "2024-01-01T00:00:00Z", "user": {"id": "u1"}}))
        .await;
    let (status, _) = api
        .delete("/v1/consents/events?user_id=u1&created_at[$lt]=2021-01-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.event_status_code("old").await, StatusCode::NOT_FOUND);
    assert_eq!(
        api.event_status_code("old-pending").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.event_status_code("new").await, StatusCode::OK);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_events_without_a_filter_besides_the_user_is_400_and_deletes_nothing(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "eve@example.com"}}))
        .await;
    for path in [
        "/v1/consents/events?user_id=u1",
        "/v1/consents/events?organization_user_id=eve%40example.com",
        "/v1/consents/events?user_id=u1&$disable_integrations=true",
    ] {
        let (status, body) = api.delete(path).await;
        assert_error(status, &body, 400, "BadRequest");
    }
    let (status, body) = api
        .delete("/v1/consents/events?metadata.booking_id=42")
        .await;
    assert_bad_field(status, &body, "user_id");
    let (status, body) = api.delete("/v1/consents/events?user_id=u1&nope=1").await;
    assert_bad_field(status, &body, "nope");
    assert_eq!(api.event_status_code("e1").await, StatusCode::OK);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_events_of_an_unknown_user_deletes_nothing_and_answers_204(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "metadata": {"booking_id": "42"}, "user": {"id": "u1"}}))
        .await;
    let (status, body) = api
        .delete("/v1/consents/events?user_id=ghost&metadata.booking_id=42")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(api.event_status_code("e1").await, StatusCode::OK);
    server.stop().await;
}
