//! `/v1/consents/users`: create, read (also at an instant), change, erase and list users.

use crate::common::Backend;
use crate::common::{
    TestServer, assert_bad_field, assert_error, purpose, purpose_enabled, urlencode,
};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::HashSet;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn creating_a_user_answers_it_and_it_can_be_read_by_id_and_organization_user_id(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, user) = api
        .post(
            "/v1/consents/users",
            json!({"id": "u1", "organization_user_id": "gil@example.com",
                   "metadata": {"plan": "pro"}, "country": "fr", "last_seen_country": "BE"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["id"], "u1");
    assert_eq!(user["organization_id"], "default");
    assert_eq!(user["organization_user_id"], "gil@example.com");
    assert_eq!(user["metadata"], json!({"plan": "pro"}));
    assert_eq!(user["country"], "FR");
    assert_eq!(user["last_seen_country"], "BE");
    assert_eq!(user["version"], 1);
    assert!(crate::events::is_utc_millis(&user["created_at"]), "{user}");
    assert!(crate::events::is_utc_millis(&user["updated_at"]), "{user}");
    assert_eq!(user["consents"]["purposes"], json!([]));
    assert_eq!(user["consents"]["channels"], json!([]));
    assert_eq!(
        user["consents"]["vendors"],
        json!({"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []})
    );
    assert_eq!(api.user("u1").await, user);
    assert_eq!(api.user_by_ouid("gil@example.com").await, user);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn creating_a_user_without_id_generates_one(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, user) = api.post("/v1/consents/users", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let id = user["id"].as_str().unwrap();
    assert_eq!(
        id.split('-').map(str::len).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert_eq!(api.user(id).await["id"], id);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn creating_a_user_with_a_taken_id_or_organization_user_id_is_409(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post(
        "/v1/consents/users",
        json!({"id": "u1", "organization_user_id": "hal@example.com", "metadata": {"v": 1}}),
    )
    .await;
    let (status, body) = api
        .post(
            "/v1/consents/users",
            json!({"id": "u1", "metadata": {"v": 2}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (status, body) = api
        .post(
            "/v1/consents/users",
            json!({"id": "u2", "organization_user_id": "hal@example.com"}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    assert_eq!(api.user_status_code("u2").await, StatusCode::NOT_FOUND);
    assert_eq!(api.user("u1").await["metadata"], json!({"v": 1}));
    // A user made by an event is taken too.
    api.event(json!({"user": {"id": "from-event", "organization_user_id": "ivy@example.com"}}))
        .await;
    let (status, _) = api
        .post("/v1/consents/users", json!({"id": "from-event"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .post(
            "/v1/consents/users",
            json!({"organization_user_id": "ivy@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(api.all_users().await.len(), 2);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn creating_a_user_with_a_bad_field_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (body, path) in [
        (json!({"id": "u1", "email": "x@y"}), "email"),
        (json!({"id": "u1", "country": "XX"}), "country"),
        (json!({"id": "u1", "metadata": "x"}), "metadata"),
        (json!({"id": ""}), "id"),
        (json!({"id": "x".repeat(256)}), "id"),
        (
            json!({"id": "u1", "organization_user_id": "a\u{7}b"}),
            "organization_user_id",
        ),
    ] {
        let (status, out) = api.post("/v1/consents/users", body).await;
        assert_bad_field(status, &out, path);
    }
    let (status, out) = api.post("/v1/consents/users", json!([])).await;
    assert_error(status, &out, 400, "BadRequest");
    assert!(api.all_users().await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_user_is_404_by_id_and_by_organization_user_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1", "organization_user_id": "jo@example.com"}}))
        .await;
    let (status, body) = api.get("/v1/consents/users/ghost").await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api
        .get("/v1/consents/users/ghost%40example.com?$by_organization_user_id=true")
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (status, _) = api
        .get("/v1/consents/users/jo%40example.com?$by_organization_user_id=false")
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "without the flag the path is a user id"
    );
    let (status, body) = api
        .get("/v1/consents/users/jo%40example.com?$by_organization_user_id=maybe")
        .await;
    assert_bad_field(status, &body, "$by_organization_user_id");
    let (status, body) = api
        .patch("/v1/consents/users/ghost", json!({"metadata": {}}))
        .await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api.delete("/v1/consents/users/ghost").await;
    assert_error(status, &body, 404, "NotFound");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_metadata_merges_by_key_and_null_removes_a_key(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post(
        "/v1/consents/users",
        json!({"id": "u1", "metadata": {"a": 1, "b": 2, "c": 3}}),
    )
    .await;
    let (status, user) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"metadata": {"b": 20, "c": null, "d": "new"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["metadata"], json!({"a": 1, "b": 20, "d": "new"}));
    assert_eq!(api.user("u1").await["metadata"], user["metadata"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_change_increments_the_version_and_a_stale_version_is_409(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (_, created) = api.post("/v1/consents/users", json!({"id": "u1"})).await;
    let v1 = created["version"].as_i64().unwrap();
    let (status, user) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"version": v1, "metadata": {"k": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["version"], v1 + 1);
    let (_, user) = api
        .patch("/v1/consents/users/u1", json!({"country": "IT"}))
        .await;
    assert_eq!(
        user["version"],
        v1 + 2,
        "a patch without version is unconditional"
    );
    api.event(
        json!({"user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
    )
    .await;
    let current = api.user("u1").await;
    assert_eq!(current["version"], v1 + 3, "an event changes the user too");

    let (status, body) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"version": v1 + 1, "metadata": {"k": 2}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let after = api.user("u1").await;
    assert_eq!(after, current, "a refused patch changes nothing");
    let (status, _) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"version": v1 + 3, "metadata": {"k": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.user("u1").await["metadata"]["k"], 2);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_countries_and_organization_user_id_changes_the_user(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post(
        "/v1/consents/users",
        json!({"id": "u1", "organization_user_id": "old@example.com"}),
    )
    .await;
    let (status, user) = api
        .patch(
            "/v1/consents/users/u1",
            json!({"organization_user_id": "new@example.com", "country": "de", "last_seen_country": "AT"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["organization_user_id"], "new@example.com");
    assert_eq!(user["country"], "DE");
    assert_eq!(user["last_seen_country"], "AT");
    assert_eq!(api.user_by_ouid("new@example.com").await["id"], "u1");
    let (status, _) = api
        .get("/v1/consents/users/old%40example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, user) = api
        .patch(
            "/v1/consents/users/new%40example.com?$by_organization_user_id=true",
            json!({"metadata": {"via": "ouid"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["id"], "u1");
    assert_eq!(user["metadata"]["via"], "ouid");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_to_an_organization_user_id_of_another_user_is_409(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post(
        "/v1/consents/users",
        json!({"id": "u1", "organization_user_id": "one@example.com"}),
    )
    .await;
    api.post(
        "/v1/consents/users",
        json!({"id": "u2", "organization_user_id": "two@example.com"}),
    )
    .await;
    let before = api.user("u2").await;
    let (status, body) = api
        .patch(
            "/v1/consents/users/u2",
            json!({"organization_user_id": "one@example.com", "metadata": {"x": 1}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    assert_eq!(api.user("u2").await, before);
    assert_eq!(api.user_by_ouid("one@example.com").await["id"], "u1");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_patch_with_a_bad_field_is_400_naming_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post("/v1/consents/users", json!({"id": "u1"})).await;
    for (body, path) in [
        (json!({"id": "u2"}), "id"),
        (json!({"created_at": "2020-01-01T00:00:00Z"}), "created_at"),
        (json!({"country": "ZZ"}), "country"),
        (json!({"version": "1"}), "version"),
        (json!({"version": -1}), "version"),
        (json!({"metadata": [1]}), "metadata"),
    ] {
        let (status, out) = api.patch("/v1/consents/users/u1", body).await;
        assert_bad_field(status, &out, path);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn profile_edits_survive_recomputation_and_newest_value_wins(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1", "metadata": {"a": "event", "b": "event"}}}))
        .await;
    api.patch(
        "/v1/consents/users/u1",
        json!({"metadata": {"b": "edit", "c": "edit"}}),
    )
    .await;
    assert_eq!(
        api.user("u1").await["metadata"],
        json!({"a": "event", "b": "edit", "c": "edit"})
    );
    api.event(json!({"id": "e2", "user": {"id": "u1", "metadata": {"c": "event2"}}}))
        .await;
    assert_eq!(
        api.user("u1").await["metadata"],
        json!({"a": "event", "b": "edit", "c": "event2"})
    );
    let (status, _) = api.delete("/v1/consents/events/e2").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.user("u1").await["metadata"],
        json!({"a": "event", "b": "edit", "c": "edit"}),
        "deleting an event keeps direct edits"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_a_user_erases_it_and_its_events_and_answers_the_deleted_user(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(
        json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "kim@example.com"},
                     "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
    )
    .await;
    api.event(json!({"id": "e2", "status": "pending_approval", "user": {"id": "u1"}}))
        .await;
    api.event(json!({"id": "e3", "regulation": "ccpa", "user": {"id": "u1"}}))
        .await;
    api.event(json!({"id": "keep", "user": {"id": "u2"}})).await;
    let before = api.user("u1").await;

    let (status, deleted) = api.delete("/v1/consents/users/u1").await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], "u1");
    assert_eq!(deleted["organization_user_id"], "kim@example.com");
    assert_eq!(deleted["consents"], before["consents"]);
    assert_eq!(purpose_enabled(&deleted, "p"), Some(true));

    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    let (status, _) = api
        .get("/v1/consents/users/kim%40example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for id in ["e1", "e2", "e3"] {
        let (status, body) = api.get(&format!("/v1/consents/events/{id}")).await;
        assert_error(status, &body, 404, "NotFound");
    }
    assert_eq!(api.event_status_code("keep").await, StatusCode::OK);
    let (status, _) = api.delete("/v1/consents/users/u1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The ids are free again, and a new user starts from nothing.
    api.event(json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "kim@example.com"}}))
        .await;
    let reborn = api.user("u1").await;
    assert_eq!(reborn["consents"]["purposes"], json!([]));
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_a_user_by_organization_user_id_erases_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1", "organization_user_id": "lee@example.com"}}))
        .await;
    let (status, deleted) = api
        .delete("/v1/consents/users/lee%40example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], "u1");
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    assert_eq!(api.event_status_code("e1").await, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_pages_with_a_cursor_until_null(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..100)
            .map(|i| chunk * 100 + i)
            .filter(|n| *n < 250)
            .map(|n| json!({"user": {"id": format!("user-{n:03}")}}))
            .collect();
        let (status, out) = api.post("/v1/consents/events", Value::Array(batch)).await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/consents/users?$limit=100&$cursor={}", urlencode(c)),
            None => "/v1/consents/users?$limit=100".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["limit"], 100);
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        seen.extend(data.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match &page["cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => {
                cursor = None;
                break;
            }
            other => panic!("cursor must be a string or null: {other}"),
        }
    }
    assert!(cursor.is_none(), "the last page has cursor null");
    assert_eq!(sizes, [100, 100, 50]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 250, "no duplicates");
    let expected: HashSet<String> = (0..250).map(|n| format!("user-{n:03}")).collect();
    assert_eq!(unique, expected.iter().collect(), "every user is seen");
    assert_eq!(
        seen,
        {
            let mut sorted = seen.clone();
            sorted.sort();
            sorted
        },
        "users come in creation order"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_cursor_is_null_when_the_last_page_is_exactly_full(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let batch: Vec<Value> = (0..20)
        .map(|n| json!({"user": {"id": format!("u{n:02}")}}))
        .collect();
    api.post("/v1/consents/events", Value::Array(batch)).await;
    let (_, first) = api.get("/v1/consents/users?$limit=10").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 10);
    let cursor = first["cursor"].as_str().expect("a second page exists");
    let (status, second) = api
        .get(&format!(
            "/v1/consents/users?$limit=10&$cursor={}",
            urlencode(cursor)
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["data"].as_array().unwrap().len(), 10);
    assert!(second["cursor"].is_null(), "no empty third page: {second}");
    let (_, all) = api.get("/v1/consents/users?$limit=20").await;
    assert!(all["cursor"].is_null(), "{}", all["cursor"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_defaults_to_pages_of_100(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let batch: Vec<Value> = (0..100)
        .map(|n| json!({"user": {"id": format!("a{n}")}}))
        .collect();
    api.post("/v1/consents/events", Value::Array(batch)).await;
    api.event(json!({"user": {"id": "last"}})).await;
    let (status, page) = api.get("/v1/consents/users").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["limit"], 100);
    assert_eq!(page["data"].as_array().unwrap().len(), 100);
    assert!(page["cursor"].is_string(), "{}", page["cursor"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_filters_on_organization_user_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for name in ["ann", "ben", "cat"] {
        api.event(
            json!({"user": {"id": name, "organization_user_id": format!("{name}@example.com")}}),
        )
        .await;
    }
    api.event(json!({"user": {"id": "anon"}})).await;
    let ids = |page: &Value| -> Vec<String> { crate::common::ids_of(&page["data"]) };
    let (_, page) = api
        .get("/v1/consents/users?organization_user_id=ben%40example.com")
        .await;
    assert_eq!(ids(&page), ["ben"]);
    assert!(page["cursor"].is_null());
    let (_, page) = api
        .get("/v1/consents/users?organization_user_id[$in]=ann%40example.com&organization_user_id[$in]=cat%40example.com")
        .await;
    assert_eq!(ids(&page), ["ann", "cat"]);
    let (_, page) = api
        .get("/v1/consents/users?organization_user_id=nobody")
        .await;
    assert_eq!(page["data"], json!([]));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_filters_on_metadata_and_country(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.post(
        "/v1/consents/users",
        json!({"id": "a", "metadata": {"plan": "pro"}, "country": "FR"}),
    )
    .await;
    api.post(
        "/v1/consents/users",
        json!({"id": "b", "metadata": {"plan": "free"}, "country": "FR"}),
    )
    .await;
    api.event(json!({"user": {"id": "c", "metadata": {"plan": "pro"}, "country": "DE"}}))
        .await;
    let ids = |page: Value| crate::common::ids_of(&page["data"]);
    assert_eq!(
        ids(api.get("/v1/consents/users?metadata.plan=pro").await.1),
        ["a", "c"]
    );
    assert_eq!(
        ids(api.get("/v1/consents/users?country=FR").await.1),
        ["a", "b"]
    );
    assert_eq!(
        ids(api
            .get("/v1/consents/users?metadata.plan=pro&country[$ne]=FR")
            .await
            .1),
        ["c"]
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_filters_on_a_created_at_range(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let mut created = Vec::new();
    for i in 0..4 {
        let (_, user) = api
            .post("/v1/consents/users", json!({"id": format!("t{i}")}))
            .await;
        created.push(user["created_at"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
    }
    assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");
    let (status, page) = api
        .get(&format!(
            "/v1/consents/users?created_at[$gte]={}&created_at[$lt]={}",
            created[1], created[3]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(crate::common::ids_of(&page["data"]), ["t1", "t2"]);
    let (_, page) = api
        .get(&format!(
            "/v1/consents/users?created_at[$gt]={}",
            created[2]
        ))
        .await;
    assert_eq!(crate::common::ids_of(&page["data"]), ["t3"]);
    let (_, page) = api
        .get(&format!(
            "/v1/consents/users?updated_at[$lte]={}",
            created[0]
        ))
        .await;
    assert_eq!(crate::common::ids_of(&page["data"]), ["t0"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_users_shows_the_status_of_the_requested_regulation(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(
        json!({"user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
    )
    .await;
    api.event(json!({"regulation": "ccpa", "user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": false}]}})).await;
    let (_, page) = api.get("/v1/consents/users").await;
    assert_eq!(purpose_enabled(&page["data"][0], "p"), Some(true));
    let (_, page) = api.get("/v1/consents/users?regulation=ccpa").await;
    assert_eq!(purpose_enabled(&page["data"][0], "p"), Some(false));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_bad_cursor_limit_or_filter_on_the_user_list_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}})).await;
    for (q, path) in [
        ("$cursor=garbage", "$cursor"),
        ("$cursor=u-5", "$cursor"),
        ("$limit=1001", "$limit"),
        ("$limit=x", "$limit"),
        ("email=x", "email"),
        ("created_at[$gt]=soon", "created_at[$gt]"),
        (
            "organization_user_id[$like]=a",
            "organization_user_id[$like]",
        ),
        ("$skip=1", "$skip"),
        ("regulation=GDPR", "regulation"),
    ] {
        let (status, body) = api.get(&format!("/v1/consents/users?{q}")).await;
        assert_bad_field(status, &body, path);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn at_answers_the_status_as_it_stood_at_that_instant(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(
        json!({"created_at": "2023-01-01T00:00:00Z", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "newsletter", "enabled": true}],
                                  "vendors": {"enabled": ["google"]}}}),
    )
    .await;
    api.event(json!({"created_at": "2023-06-01T00:00:00Z", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "newsletter", "enabled": false}, {"id": "sms", "enabled": true}],
                                  "vendors": {"disabled": ["google"]}}}))
        .await;
    api.event(json!({"created_at": "2023-03-01T00:00:00Z", "status": "pending_approval", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "pending", "enabled": true}]}}))
        .await;

    let (status, then) = api
        .get("/v1/consents/users/u1?at=2023-03-15T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["id"], "u1");
    assert_eq!(purpose_enabled(&then, "newsletter"), Some(true));
    assert!(purpose(&then, "sms").is_none(), "{then}");
    assert!(
        purpose(&then, "pending").is_none(),
        "pending events never count"
    );
    assert_eq!(then["consents"]["vendors"]["enabled"], json!(["google"]));

    let (_, at_first) = api
        .get("/v1/consents/users/u1?at=2023-01-01T00:00:00Z")
        .await;
    assert_eq!(
        purpose_enabled(&at_first, "newsletter"),
        Some(true),
        "at is inclusive"
    );

    let (_, before) = api
        .get("/v1/consents/users/u1?at=2022-12-31T23:59:59Z")
        .await;
    assert_eq!(before["consents"]["purposes"], json!([]));
    assert_eq!(before["consents"]["vendors"]["enabled"], json!([]));

    let (_, now) = api
        .get("/v1/consents/users/u1?at=2024-01-01T00:00:00Z")
        .await;
    let current = api.user("u1").await;
    assert_eq!(now["consents"], current["consents"]);
    assert_eq!(purpose_enabled(&now, "newsletter"), Some(false));

    let (_, with_offset) = api
        .get("/v1/consents/users/u1?at=2023-03-15T01:00:00%2B01:00&regulation=gdpr")
        .await;
    assert_eq!(with_offset["consents"], then["consents"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn at_follows_the_requested_regulation(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"created_at": "2023-01-01T00:00:00Z", "regulation": "ccpa", "user": {"id": "u1", "organization_user_id": "mo@example.com"},
                     "consents": {"purposes": [{"id": "sale", "enabled": false}]}}))
        .await;
    let (_, gdpr) = api
        .get("/v1/consents/users/u1?at=2023-02-01T00:00:00Z")
        .await;
    assert_eq!(gdpr["consents"]["purposes"], json!([]));
    let (status, ccpa) = api
        .get("/v1/consents/users/mo%40example.com?$by_organization_user_id=true&regulation=ccpa&at=2023-02-01T00:00:00Z")
        .await;
    assert_eq!(status, StatusCode::OK, "{ccpa}");
    assert_eq!(purpose_enabled(&ccpa, "sale"), Some(false));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_bad_at_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}})).await;
    for at in ["yesterday", "2023-01-01", "1"] {
        let (status, body) = api.get(&format!("/v1/consents/users/u1?at={at}")).await;
        assert_bad_field(status, &body, "at");
    }
    let (status, body) = api
        .get("/v1/consents/users/u1?when=2023-01-01T00:00:00Z")
        .await;
    assert_bad_field(status, &body, "when");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn organization_user_ids_with_reserved_url_characters_work_in_paths(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for ouid in [
        "a/b@example.com",
        "q?x=1&y",
        "hash#tag",
        "two words",
        "ünï/cødé",
        "100%",
    ] {
        let event = api
            .event(json!({"user": {"organization_user_id": ouid}}))
            .await;
        let user = api.user_by_ouid(ouid).await;
        assert_eq!(user["organization_user_id"], ouid);
        assert_eq!(user["id"], event["user"]["id"]);
        assert_eq!(
            api.events(&format!("organization_user_id={}", urlencode(ouid)))
                .await["total"],
            1,
            "{ouid}"
        );
    }
    for id in ["x/y", "a b", "é?#"] {
        api.event(json!({"id": format!("evt {id}"), "user": {"id": id}}))
            .await;
        assert_eq!(api.user(id).await["id"], id);
        let (status, event) = api
            .get(&format!(
                "/v1/consents/events/{}",
                urlencode(&format!("evt {id}"))
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
        assert_eq!(event["user"]["id"], id);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_batch_moves_the_version_of_each_user_it_touches_by_one(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, _) = api
        .post(
            "/v1/consents/events",
            json!([{"user": {"id": "u1"}}, {"user": {"id": "u1"}}, {"user": {"id": "u2"}}, {"user": {"id": "u1"}}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.user("u1").await["version"],
        1,
        "created by its first event: version 1"
    );
    assert_eq!(api.user("u2").await["version"], 1);
    api.post(
        "/v1/consents/events",
        json!([{"user": {"id": "u1"}}, {"user": {"id": "u1"}}]),
    )
    .await;
    assert_eq!(api.user("u1").await["version"], 2);
    assert_eq!(
        api.user("u2").await["version"],
        1,
        "an untouched user keeps its version"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deleting_the_event_that_attached_an_organization_user_id_keeps_it(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "e1", "user": {"id": "u1"}})).await;
    api.event(json!({"id": "e2", "user": {"id": "u1", "organization_user_id": "nat@example.com"}}))
        .await;
    let (status, _) = api.delete("/v1/consents/events/e2").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.user("u1").await["organization_user_id"],
        "nat@example.com"
    );
    assert_eq!(api.user_by_ouid("nat@example.com").await["id"], "u1");
    server.stop().await;
}
