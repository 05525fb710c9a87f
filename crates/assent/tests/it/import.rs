//! `assent import`: files of consent history sent through the API. Every event lands once,
//! whatever the format and however often the import is run; refused rows land in the rejects
//! file with their line and reason.

use crate::common::{Backend, TestServer, purpose_enabled};
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// Runs `assent import` against `server` with its bootstrap key.
async fn import(server: &TestServer, files: &[&Path], extra: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("import")
        .args(files)
        .args(["--server", &server.base, "--key", &server.key])
        .args(["--secret", &server.secret])
        .args(extra)
        .env("ASSENT_LOG", "warn")
        .output()
        .await
        .expect("assent import runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `users` users, `per_user` back-dated purpose choices each, alternating; returns the NDJSON
/// text and each user's last choice.
fn history(users: usize, per_user: usize) -> (String, BTreeMap<String, bool>) {
    let mut text = String::new();
    let mut last = BTreeMap::new();
    for i in 0..per_user {
        for u in 0..users {
            let enabled = (i + u) % 2 == 0;
            let user = format!("user-{u}");
            let line = json!({
                "user": {"organization_user_id": user},
                "created_at": format!("2024-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                "consents": {"purposes": [{"id": "newsletter", "enabled": enabled}]},
            });
            text.push_str(&line.to_string());
            text.push('\n');
            last.insert(user, enabled);
        }
    }
    (text, last)
}

/// The count in the summary line for `what` ("created 12").
fn count(summary: &str, what: &str) -> u64 {
    summary
        .split(", ")
        .find_map(|part| part.trim().strip_prefix(what))
        .and_then(|n| n.trim().split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no '{what}' in: {summary}"))
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_import_stores_every_event_once_and_a_rerun_creates_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (text, last) = history(50, 12);
    let ndjson = dir.path().join("history.ndjson");
    std::fs::write(&ndjson, text).unwrap();
    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "organization_user_id,purpose,enabled,created_at,regulation\n\
         csv-alice,analytics,true,2024-02-01T00:00:00Z,gdpr\n\
         csv-alice,analytics,false,2024-03-01T00:00:00Z,gdpr\n\
         csv-bob,analytics,1,2024-02-01T00:00:00Z,\n",
    )
    .unwrap();

    let out = import(&server, &[&ndjson, &csv], &["--concurrency", "3"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout(&out);
    assert_eq!(count(&summary, "read"), 603, "{summary}");
    assert_eq!(count(&summary, "created"), 603, "{summary}");
    assert_eq!(count(&summary, "rejected"), 0, "{summary}");

    let api = server.client().await;
    for (user, enabled) in &last {
        let status = api.user_by_ouid(user).await;
        assert_eq!(
            purpose_enabled(&status, "newsletter"),
            Some(*enabled),
            "{user}"
        );
        let events = api
            .events(&format!("organization_user_id={user}&$limit=100"))
            .await;
        assert_eq!(events["total"], 12, "{user}");
    }
    let alice = api.user_by_ouid("csv-alice").await;
    assert_eq!(purpose_enabled(&alice, "analytics"), Some(false));
    let bob = api.user_by_ouid("csv-bob").await;
    assert_eq!(purpose_enabled(&bob, "analytics"), Some(true));

    // The server's clock has a one-second grain in the Date header.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let again = import(&server, &[&ndjson, &csv], &[]).await;
    let summary = stdout(&again);
    assert!(again.status.success(), "{summary}");
    assert_eq!(count(&summary, "created"), 0, "{summary}");
    assert_eq!(count(&summary, "already present"), 603, "{summary}");
    for user in ["user-0", "user-49"] {
        let events = api
            .events(&format!("organization_user_id={user}&$limit=100"))
            .await;
        assert_eq!(events["total"], 12, "no duplicates for {user}");
    }
    server.stop().await;
}

#[tokio::test]
async fn refused_rows_land_in_the_rejects_file_with_their_line_and_the_rest_is_stored() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("choices.csv");
    std::fs::write(
        &csv,
        "organization_user_id,purpose,enabled,created_at\n\
         good-1,ads,true,2024-02-01T00:00:00Z\n\
         bad-date,ads,true,yesterday\n\
         bad-bool,ads,perhaps,2024-02-01T00:00:00Z\n\
         truncated,ads\n\
         good-2,ads,false,2024-02-01T00:00:00Z\n",
    )
    .unwrap();
    let ndjson = dir.path().join("events.ndjson");
    std::fs::write(
        &ndjson,
        "{\"user\":{\"organization_user_id\":\"good-3\"}}\n\
         {\"user\":{\"organization_user_id\":\"unknown-field\"},\"colour\":\"red\"}\n\
         {\"user\":{\"organization_user_id\":\"good-4\"}}\n\
         {\"user\":{\"organization_user_id\":\"trunc",
    )
    .unwrap();

    let out = import(&server, &[&csv, &ndjson], &[]).await;
    let summary = stdout(&out);
    assert!(out.status.success(), "{summary}");
    assert_eq!(count(&summary, "created"), 4, "{summary}");
    assert_eq!(count(&summary, "rejected"), 5, "{summary}");

    let rejects = |path: &Path| -> Vec<Value> {
        let text = std::fs::read_to_string(format!("{}.rejects.ndjson", path.display()))
            .expect("a rejects file");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let csv_rejects = rejects(&csv);
    let lines: Vec<u64> = csv_rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5], "{csv_rejects:?}");
    assert!(
        csv_rejects[0]["error"]
            .as_str()
            .unwrap()
            .contains("created_at")
    );
    assert!(
        csv_rejects[1]["error"]
            .as_str()
            .unwrap()
            .contains("boolean")
    );
    assert!(csv_rejects[2]["error"].as_str().unwrap().contains("fields"));
    assert_eq!(csv_rejects[1]["row"][0], "bad-bool");

    let json_rejects = rejects(&ndjson);
    let lines: Vec<u64> = json_rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![4, 2],
        "the reader's reject comes first: {json_rejects:?}"
    );
    assert!(json_rejects[0]["error"].as_str().unwrap().contains("JSON"));
    assert!(
        json_rejects[1]["error"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "the server's reason: {json_rejects:?}"
    );

    let api = server.client().await;
    for user in ["good-1", "good-2", "good-3", "good-4"] {
        api.user_by_ouid(user).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn an_interrupted_import_run_again_creates_each_event_exactly_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = history(100, 60);
    let file = dir.path().join("big.ndjson");
    std::fs::write(&file, text).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("import")
        .arg(&file)
        .args(["--server", &server.base, "--key", &server.key])
        .args(["--secret", &server.secret, "--concurrency", "1"])
        .env("ASSENT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("import starts");
    let api = server.client().await;
    // Kill it once some, but not all, events are in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, page) = api
            .get("/v1/consents/events?organization_user_id=user-0&$limit=100")
            .await;
        if page["total"].as_u64().unwrap_or(0) >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the import made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let (_, partial) = api
        .get("/v1/consents/events?organization_user_id=user-99&$limit=100")
        .await;
    assert!(
        partial["total"].as_u64().unwrap() < 60,
        "killed mid-way: {partial}"
    );

    // The server's clock has a one-second grain in the Date header.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = import(&server, &[&file], &[]).await;
    let summary = stdout(&out);
    assert!(out.status.success(), "{summary}");
    assert_eq!(count(&summary, "read"), 6000, "{summary}");
    assert!(count(&summary, "already present") > 0, "{summary}");
    for u in 0..100 {
        let events = api
            .events(&format!("organization_user_id=user-{u}&$limit=100"))
            .await;
        assert_eq!(events["total"], 60, "user-{u}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_refused_key_or_an_unknown_file_type_is_one_clear_sentence() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.ndjson");
    std::fs::write(&file, "{}\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("import")
        .arg(&file)
        .args([
            "--server",
            &server.base,
            "--key",
            &server.key,
            "--secret",
            "wrong",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the key"), "{err}");

    let xml = dir.path().join("h.xml");
    std::fs::write(&xml, "<x/>").unwrap();
    let out = import(&server, &[&xml], &[]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown file type"), "{err}");
    server.stop().await;
}
