//! How an event finds its user (API.md §3.4, last paragraph).

use crate::common::Backend;
use crate::common::{TestServer, assert_error, purpose_enabled};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::json;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_naming_an_unknown_user_id_creates_that_user(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    assert_eq!(
        api.user_status_code("new-user").await,
        StatusCode::NOT_FOUND
    );
    let event = api
        .event(json!({"user": {"id": "new-user"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}))
        .await;
    assert_eq!(event["user"]["id"], "new-user");
    let user = api.user("new-user").await;
    assert_eq!(user["id"], "new-user");
    assert!(
        user.get("organization_user_id").is_none_or(|o| o.is_null()),
        "{user}"
    );
    assert_eq!(purpose_enabled(&user, "p"), Some(true));
    api.event(json!({"user": {"id": "new-user"}})).await;
    assert_eq!(
        api.all_users().await.len(),
        1,
        "the second event reuses the user"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_naming_an_unknown_organization_user_id_creates_a_user_with_it(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let first = api
        .event(json!({"user": {"organization_user_id": "bob@example.com"}}))
        .await;
    let second = api
        .event(json!({"user": {"organization_user_id": "bob@example.com"},
                      "consents": {"purposes": [{"id": "p", "enabled": false}]}}))
        .await;
    assert_eq!(
        first["user"]["id"], second["user"]["id"],
        "both events go to one user"
    );
    let user = api.user_by_ouid("bob@example.com").await;
    assert_eq!(user["id"], first["user"]["id"]);
    assert_eq!(user["organization_user_id"], "bob@example.com");
    assert_eq!(purpose_enabled(&user, "p"), Some(false));
    assert_eq!(api.all_users().await.len(), 1);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_without_user_creates_a_user_with_a_generated_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let a = api
        .event(json!({"consents": {"purposes": [{"id": "p", "enabled": true}]}}))
        .await;
    let b = api.event(json!({"user": {}})).await;
    let id = a["user"]["id"].as_str().expect("a generated user id");
    let parts: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "a UUID: {id}");
    assert_eq!(&id[14..15], "7", "server-made ids are UUIDv7: {id}");
    assert_ne!(
        a["user"]["id"], b["user"]["id"],
        "each anonymous event makes its own user"
    );
    let user = api.user(id).await;
    assert_eq!(purpose_enabled(&user, "p"), Some(true));
    assert_eq!(api.all_users().await.len(), 2);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_naming_both_ids_attaches_the_organization_user_id_once(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}})).await;
    let (status, _) = api
        .get("/v1/consents/users/carol%40example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let event = api
        .event(
            json!({"user": {"id": "u1", "organization_user_id": "carol@example.com"},
                      "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .await;
    assert_eq!(event["user"]["id"], "u1");
    let user = api.user_by_ouid("carol@example.com").await;
    assert_eq!(user["id"], "u1");
    assert_eq!(
        api.user("u1").await["organization_user_id"],
        "carol@example.com"
    );

    // Naming the same pair again is fine, and so is naming only the organization user id.
    api.event(json!({"user": {"id": "u1", "organization_user_id": "carol@example.com"}}))
        .await;
    let by_ouid = api
        .event(json!({"user": {"organization_user_id": "carol@example.com"}}))
        .await;
    assert_eq!(by_ouid["user"]["id"], "u1");
    assert_eq!(api.all_users().await.len(), 1);
    assert_eq!(api.events("user_id=u1").await["total"], 4);
    assert_eq!(
        api.events("organization_user_id=carol%40example.com").await["total"],
        4,
        "events from before the attachment are listed by the organization user id too"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_naming_a_different_organization_user_id_than_the_users_is_409(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1", "organization_user_id": "first@example.com"}}))
        .await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"id": "clash", "user": {"id": "u1", "organization_user_id": "second@example.com"},
                   "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    assert_eq!(api.event_status_code("clash").await, StatusCode::NOT_FOUND);
    let user = api.user("u1").await;
    assert_eq!(user["organization_user_id"], "first@example.com");
    assert_eq!(purpose_enabled(&user, "p"), None);
    let (status, _) = api
        .get("/v1/consents/users/second%40example.com?$by_organization_user_id=true")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_giving_a_user_an_organization_user_id_owned_by_another_user_is_409(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "owner", "organization_user_id": "taken@example.com"}}))
        .await;
    api.event(json!({"user": {"id": "u2"}})).await;
    for user in [
        json!({"id": "u2", "organization_user_id": "taken@example.com"}),
        json!({"id": "brand-new", "organization_user_id": "taken@example.com"}),
    ] {
        let (status, body) = api.post("/v1/consents/events", json!({"user": user})).await;
        assert_error(status, &body, 409, "Conflict");
    }
    assert_eq!(
        api.user_status_code("brand-new").await,
        StatusCode::NOT_FOUND
    );
    assert!(
        api.user("u2")
            .await
            .get("organization_user_id")
            .is_none_or(|o| o.is_null())
    );
    assert_eq!(api.user_by_ouid("taken@example.com").await["id"], "owner");
    server.stop().await;
}
