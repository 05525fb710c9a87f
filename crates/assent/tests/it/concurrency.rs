//! Concurrent writers: group commit must neither lose nor duplicate writes, and replays and
//! conflicts of one id stay exact under races.

use crate::common::Backend;
use crate::common::{TestServer, ids_of};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::HashSet;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_events_for_one_new_user_are_all_applied_to_a_single_user(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/consents/events",
                    json!({"id": format!("e{i}"), "user": {"organization_user_id": "race@example.com"},
                           "consents": {"purposes": [{"id": format!("p{i}"), "enabled": i % 2 == 0}]}}),
                )
                .await
            })
        })
        .collect();
    let mut user_ids = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        user_ids.insert(body["user"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        user_ids.len(),
        1,
        "every event went to one user: {user_ids:?}"
    );
    assert_eq!(api.all_users().await.len(), 1);
    let user = api.user_by_ouid("race@example.com").await;
    let purposes = user["consents"]["purposes"].as_array().unwrap();
    assert_eq!(purposes.len(), 40, "{user}");
    for i in 0..40 {
        assert_eq!(
            crate::common::purpose_enabled(&user, &format!("p{i}")),
            Some(i % 2 == 0)
        );
    }
    let listed = api
        .events("organization_user_id=race%40example.com&$limit=1000")
        .await;
    assert_eq!(listed["total"], 40);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replays_of_one_event_store_it_once(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let body = json!({"id": "once", "created_at": "2024-01-01T00:00:00Z", "user": {"id": "u1"},
                      "consents": {"purposes": [{"id": "p", "enabled": true}]}});
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (api, body) = (api.clone(), body.clone());
            tokio::spawn(async move { api.post("/v1/consents/events", body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        let (status, out) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{out}");
        answers.push(out);
    }
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "every replay answers the same event"
    );
    assert_eq!(api.events("user_id=u1").await["total"], 1);
    assert_eq!(api.all_users().await.len(), 1);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_of_one_id_with_different_content_store_exactly_one(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/consents/events",
                    json!({"id": "contested", "user": {"id": format!("u{i}")}}),
                )
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        let (status, out) = t.await.unwrap();
        match status {
            StatusCode::OK => won.push(out),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {out}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one write wins: {won:?}");
    let (_, stored) = api.get("/v1/consents/events/contested").await;
    assert_eq!(stored, won[0]);
    assert_eq!(api.all_users().await.len(), 1, "losers created no user");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_request_in_a_group_does_not_undo_its_neighbours(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "taken", "user": {"id": "owner"}}))
        .await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let body = if i % 3 == 0 {
                    // Conflicts with the stored event: refused at write time, not at parse time.
                    json!([{"id": format!("ok-{i}"), "user": {"id": format!("bad-{i}")}},
                           {"id": "taken", "user": {"id": "someone-else"}}])
                } else {
                    json!([{"id": format!("ok-{i}"), "user": {"id": format!("good-{i}")}}])
                };
                (i, api.post("/v1/consents/events", body).await)
            })
        })
        .collect();
    for t in tasks {
        let (i, (status, out)) = t.await.unwrap();
        if i % 3 == 0 {
            assert_eq!(status, StatusCode::CONFLICT, "{out}");
            assert_eq!(
                api.event_status_code(&format!("ok-{i}")).await,
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                api.user_status_code(&format!("bad-{i}")).await,
                StatusCode::NOT_FOUND
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{out}");
            assert_eq!(ids_of(&out), [format!("ok-{i}")]);
            assert_eq!(
                api.user_status_code(&format!("good-{i}")).await,
                StatusCode::OK
            );
        }
    }
    let users: Vec<Value> = api.all_users().await;
    assert_eq!(users.len(), 1 + 20, "the owner and the twenty good users");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_is_visible_to_the_next_read(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for i in 0..30 {
        api.event(json!({"user": {"id": "u1"}, "consents": {"purposes": [{"id": "p", "enabled": i % 2 == 0}]}}))
            .await;
        let user = api.user("u1").await;
        assert_eq!(
            crate::common::purpose_enabled(&user, "p"),
            Some(i % 2 == 0),
            "read after write {i}"
        );
        if i % 10 == 9 {
            // Let the store flush its in-memory users to their rows, then read again.
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            assert_eq!(api.user("u1").await, user, "after the flush");
        }
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_with_the_same_version_let_exactly_one_win(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (_, user) = api.post("/v1/consents/users", json!({"id": "u1"})).await;
    let version = user["version"].as_i64().unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.patch(
                    "/v1/consents/users/u1",
                    json!({"version": version, "metadata": {"writer": i}}),
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => winners.push(body),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "optimistic locking lets one writer win");
    let user = api.user("u1").await;
    assert_eq!(user["version"], version + 1);
    assert_eq!(user["metadata"], winners[0]["metadata"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creations_of_one_user_id_let_exactly_one_win(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                api.post(
                    "/v1/consents/users",
                    json!({"id": "u1", "organization_user_id": format!("o{i}")}),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(api.all_users().await.len(), 1);
    server.stop().await;
}
