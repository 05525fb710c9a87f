//! PostgreSQL's rows themselves, where the API cannot show the difference: appends only queue
//! their events and each node's folder writes them into their users' rows in the background
//! (reads fold what is still queued); appends do not lock their users' rows, and an erasure
//! must still take every event of its user with it.

use crate::common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_folder_writes_queued_events_into_user_rows() {
    let Some(server) = TestServer::start_on(Backend::Postgres).await else {
        return;
    };
    let api = server.client().await;
    let users: Vec<String> = (0..5).map(|i| format!("folded-{i}")).collect();
    for round in 0..3 {
        let batch: Vec<Value> = users
            .iter()
            .map(|u| {
                json!({
                    "user": {"organization_user_id": u},
                    "consents": {"purposes": [{"id": format!("purpose-{round}"), "enabled": true}]}
                })
            })
            .collect();
        let (status, out) = api.post("/v1/consents/events", json!(batch)).await;
        assert_eq!(status, StatusCode::OK, "{out}");
    }
    let mut before = Vec::new();
    for u in &users {
        before.push(api.user_by_ouid(u).await);
    }

    let url = server
        .store
        .database_url
        .clone()
        .expect("a PostgreSQL store");
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("database reachable");
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queued: i64 = db
            .query_one("SELECT count(*) FROM pending_folds", &[])
            .await
            .expect("count")
            .get(0);
        if queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} events still queued after 20 s: the folder does not fold"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (u, seen) in users.iter().zip(&before) {
        let row = db
            .query_one(
                "SELECT version, state FROM users WHERE organization_user_id = $1",
                &[u],
            )
            .await
            .expect("user row");
        let version: i64 = row.get(0);
        let state = String::from_utf8(row.get::<_, Vec<u8>>(1)).expect("JSON state");
        assert_eq!(Some(version), seen["version"].as_i64(), "{u}: {seen}");
        for round in 0..3 {
            assert!(
                state.contains(&format!("purpose-{round}")),
                "{u}: the row lacks purpose-{round}: {state}"
            );
        }
        assert_eq!(&api.user_by_ouid(u).await, seen, "reads change once folded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erasures_racing_appends_leave_no_event_without_its_user() {
    let Some(server) = TestServer::start_on(Backend::Postgres).await else {
        return;
    };
    let api = server.client().await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let api = api.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let batch: Vec<Value> = (0..5)
                        .map(|u| {
                            json!({
                                "user": {"organization_user_id": format!("erased-{u}")},
                                "consents": {"purposes": [{"id": format!("p-{w}-{i}"), "enabled": true}]}
                            })
                        })
                        .collect();
                    let (status, out) = api.post("/v1/consents/events", json!(batch)).await;
                    assert_eq!(status, StatusCode::OK, "{out}");
                }
            })
        })
        .collect();
    let eraser = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut erased = 0;
            for round in 0..60 {
                let (status, _) = api
                    .delete(&format!(
                        "/v1/consents/users/erased-{}?$by_organization_user_id=true",
                        round % 5
                    ))
                    .await;
                assert!(
                    status == StatusCode::OK
                        || status == StatusCode::NO_CONTENT
                        || status == StatusCode::NOT_FOUND,
                    "{status}"
                );
                erased += usize::from(status != StatusCode::NOT_FOUND);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            erased
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    let erased = eraser.await.expect("eraser");
    assert!(erased > 5, "the erasures raced nothing ({erased})");

    let url = server
        .store
        .database_url
        .clone()
        .expect("a PostgreSQL store");
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("database reachable");
    tokio::spawn(connection);
    let orphans: i64 = db
        .query_one(
            "SELECT count(*) FROM events e WHERE NOT EXISTS
                 (SELECT 1 FROM users u WHERE u.org_id = e.org_id AND u.user_key = e.user_key)",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(orphans, 0, "events outlived their erased users");
}
