//! `/v1/exports`: export configurations, runs on demand, and the scheduler inside
//! `assent serve` (which retries failed runs, and of many nodes runs each export once).

use crate::common::{
    Api, Backend, TestServer, assert_bad_field, test_delivery, test_exports, test_limits,
};
use assent::serve::{ServeArgs, TcfArgs, start};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The organization's export folder of a test server.
fn org_root(server: &TestServer) -> PathBuf {
    server.dir.path().join("exports").join(&server.org)
}

fn file_url(path: &Path) -> String {
    url::Url::from_directory_path(path).unwrap().to_string()
}

/// Waits until the export's `last_run` satisfies `done`; returns the export.
async fn wait_for(api: &Api, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, export) = api.get(&format!("/v1/exports/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{export}");
        if done(&export) {
            return export;
        }
        assert!(Instant::now() < deadline, "{what}: still {export}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `HH:MM:SS` of `secs` seconds from now, UTC.
fn soon(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%H:%M:%S")
        .to_string()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn exports_are_configured_checked_changed_and_deleted(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, made) = api.post("/v1/exports", json!({"id": "nightly"})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["id"], "nightly");
    assert_eq!(made["destination"], file_url(&org_root(&server)));
    assert_eq!(made["scope"], "daily");
    assert_eq!(made["time"], "02:00");
    assert_eq!(made["enabled"], true);
    assert_eq!(made["max_part_bytes"], 100_000_000);
    assert_eq!(made["last_run"], Value::Null);
    let next = made["next_run_at"].as_str().expect("a next run");
    assert!(next.contains("T02:00:00"), "{next}");

    let (status, body) = api.post("/v1/exports", json!({"id": "nightly"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = api
        .post(
            "/v1/exports",
            json!({"id": "a/b", "scope": "weekly", "time": "25:00", "enabled": "yes",
                   "max_part_bytes": 10, "colour": "red"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for field in ["id", "scope", "time", "enabled", "max_part_bytes", "colour"] {
        assert!(
            body["errors"].get(field).is_some(),
            "{field} not reported: {body}"
        );
    }
    // file:// only inside the organization's folder; clouds only where built in.
    for destination in [
        "file:///etc/",
        "file:///tmp/elsewhere/",
        "s3://bucket/x",
        "ftp://h/x",
    ] {
        let (status, body) = api
            .post("/v1/exports", json!({"destination": destination}))
            .await;
        assert_bad_field(status, &body, "destination");
    }
    let inside = file_url(&org_root(&server).join("crm"));
    let (status, body) = api
        .post(
            "/v1/exports",
            json!({"id": "crm", "destination": inside, "scope": "full", "time": "23:15"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, list) = api.get("/v1/exports").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(list["data"][0]["id"], "nightly");

    let (status, changed) = api
        .patch(
            "/v1/exports/nightly",
            json!({"time": "04:30", "name": "Nightly to the lake"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "Nightly to the lake");
    assert!(
        changed["next_run_at"]
            .as_str()
            .unwrap()
            .contains("T04:30:00")
    );
    assert_eq!(changed["destination"], made["destination"]);
    let (status, off) = api
        .patch("/v1/exports/nightly", json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(off["next_run_at"], Value::Null);
    let (status, body) = api
        .patch("/v1/exports/nightly", json!({"id": "other"}))
        .await;
    assert_bad_field(status, &body, "id");

    let (status, _) = api.delete("/v1/exports/nightly").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get("/v1/exports/nightly").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.post("/v1/exports/nightly/execute", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another organization sees none of them.
    let other = server.new_org("elsewhere").await;
    let (_, list) = other.get("/v1/exports").await;
    assert_eq!(list["total"], 0);
    let (status, _) = other.get("/v1/exports/crm").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn execute_runs_an_export_in_the_background_and_shows_how_it_ended(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for user in ["alice", "bob", "carol"] {
        api.event(json!({"user": {"organization_user_id": user},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}}))
            .await;
    }
    let (status, _) = api
        .post("/v1/exports", json!({"id": "now", "scope": "full"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post("/v1/exports/now/execute?date=2026-02-30", json!({}))
        .await;
    assert_bad_field(status, &body, "date");

    let (status, started) = api.post("/v1/exports/now/execute", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["last_run"]["status"], "running");
    assert_eq!(started["last_run"]["trigger"], "manual");
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(started["last_run"]["date"], today);

    let done = wait_for(&api, "now", "the run ends", |e| {
        e["last_run"]["status"] == "succeeded"
    })
    .await;
    let run = &done["last_run"];
    assert_eq!(run["users"], 3);
    assert_eq!(run["events"], 3);
    assert_eq!(run["parts"], 1);
    assert_eq!(done["runs"], 1);
    assert_eq!(done["running"], false);
    let folder = org_root(&server).join(format!("export-id=now/date={today}"));
    assert!(folder.join("_SUCCESS").is_file());
    assert!(folder.join("users/part-00000.json.gz").is_file());
    // A manual run leaves the schedule alone.
    assert_eq!(done["next_run_at"], started["next_run_at"]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_failed_scheduled_run_is_visible_and_retried_until_it_succeeds(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"organization_user_id": "alice"}}))
        .await;
    // A file where the export's folder should be: every run fails until it goes.
    let root = org_root(&server);
    std::fs::create_dir_all(&root).unwrap();
    let blocker = root.join("lake");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let (status, made) = api
        .post(
            "/v1/exports",
            json!({"id": "lake", "scope": "full", "time": soon(1),
                   "destination": file_url(&blocker.join("consents"))}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");

    let failed = wait_for(&api, "lake", "a second failed try", |e| {
        e["last_run"]["status"] == "failed" && e["last_run"]["attempt"].as_u64() >= Some(2)
    })
    .await;
    let run = &failed["last_run"];
    assert_eq!(run["trigger"], "schedule");
    assert!(run["error"].as_str().unwrap().contains("lake"), "{run}");
    let next = failed["next_run_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(next).unwrap()
            < chrono::Utc::now() + chrono::Duration::seconds(30),
        "a retry is due soon, not tomorrow: {next}"
    );
    assert!(!blocker.join("consents").exists());

    std::fs::remove_file(&blocker).unwrap();
    let done = wait_for(&api, "lake", "a successful retry", |e| {
        e["last_run"]["status"] == "succeeded"
    })
    .await;
    let run = &done["last_run"];
    assert!(run["attempt"].as_u64().unwrap() >= 2, "{run}");
    let date = run["date"].as_str().unwrap();
    assert!(
        blocker
            .join(format!("consents/export-id=lake/date={date}/_SUCCESS"))
            .is_file()
    );
    // After a success the next run is the next day's.
    let next = chrono::DateTime::parse_from_rfc3339(done["next_run_at"].as_str().unwrap()).unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::Duration::hours(23),
        "{next}"
    );
}

#[tokio::test]
async fn of_two_nodes_on_one_database_one_runs_a_scheduled_export() {
    let Some(first) = TestServer::start_on(Backend::Postgres).await else {
        return;
    };
    let second = start(ServeArgs {
        listen: "127.0.0.1:0".into(),
        store: first.store.clone(),
        delivery: test_delivery(),
        limits: test_limits(),
        tcf: TcfArgs::default(),
        exports: test_exports(&first.dir),
    })
    .await
    .expect("the second node starts");
    let api = first.client().await;
    api.event(json!({"user": {"organization_user_id": "alice"}}))
        .await;
    let (status, _) = api
        .post(
            "/v1/exports",
            json!({"id": "once", "scope": "full", "time": soon(2)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = wait_for(&api, "once", "the scheduled run", |e| {
        e["last_run"]["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["last_run"]["trigger"], "schedule");
    // Both nodes look every 100 ms; give the other one time to run it a second time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, after) = api.get("/v1/exports/once").await;
    assert_eq!(after["runs"], 1, "{after}");
    second.stop().await.unwrap();
}
