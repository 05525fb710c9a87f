//! `assent export`: an organization written as gzip NDJSON in Didomi's batch-export layout,
//! and read back by `assent import` into another server with every user's status intact.

use crate::common::{Backend, TestServer};
use assent::StoreArgs;
use flate2::read::GzDecoder;
use rstest::rstest;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs `assent` with `args`, quietly.
async fn assent(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(args)
        .env("ASSENT_LOG", "warn")
        .env_remove("ASSENT_DATABASE_URL")
        .env_remove("ASSENT_DATA_DIR")
        .output()
        .await
        .expect("assent runs")
}

/// The store flags of `store`.
fn store_flags(store: &StoreArgs) -> Vec<String> {
    match &store.database_url {
        Some(url) => vec!["--database-url".into(), url.clone()],
        None => vec!["--data-dir".into(), store.data_dir.display().to_string()],
    }
}

/// Runs `assent export` on `store` with `extra` flags.
async fn export(store: &StoreArgs, org: &str, to: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "export".into(),
        "--organization".into(),
        org.into(),
        "--to".into(),
        to.display().to_string(),
    ];
    args.extend(store_flags(store));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assent(&args).await
}

/// Runs `assent import` of `files` into `server`.
async fn import(server: &TestServer, files: &[PathBuf]) -> Output {
    let mut args: Vec<String> = vec!["import".into()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    for a in [
        "--server",
        &server.base,
        "--key",
        &server.key,
        "--secret",
        &server.secret,
    ] {
        args.push(a.to_owned());
    }
    args.push("--disable-integrations".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assent(&args).await
}

fn check(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A history of `users × per_user` events: NDJSON for most users, CSV for the rest, with
/// purposes, vendors and metadata that vary by user.
fn history(dir: &Path, users: usize, csv_users: usize, per_user: usize) -> Vec<PathBuf> {
    let mut ndjson = String::new();
    for u in 0..users - csv_users {
        for i in 0..per_user {
            let line = json!({
                "user": {"organization_user_id": format!("user-{u}"), "metadata": {"tier": u % 7}},
                "created_at": format!("2025-01-{:02}T{:02}:{:02}:00Z", 1 + i % 28, u % 24, i % 60),
                "metadata": {"campaign": format!("c{}", (u + i) % 5)},
                "consents": {
                    "purposes": [
                        {"id": "newsletter", "enabled": (u + i) % 3 != 0},
                        {"id": "analytics", "enabled": (u * i) % 2 == 0, "enabled_li": i % 4 == 0},
                    ],
                    "vendors": {"enabled": [format!("iab:{}", 1 + (u + i) % 50)], "disabled": []},
                },
            });
            ndjson.push_str(&line.to_string());
            ndjson.push('\n');
        }
    }
    let mut csv = String::from("organization_user_id,purpose,enabled,created_at,regulation\n");
    for u in users - csv_users..users {
        for i in 0..per_user {
            let purpose = if i % 2 == 0 { "sms" } else { "phone" };
            let regulation = if u % 3 == 0 { "ccpa" } else { "gdpr" };
            csv.push_str(&format!(
                "user-{u},{purpose},{},2025-02-{:02}T10:{:02}:00Z,{regulation}\n",
                (u + i) % 2 == 0,
                1 + i % 28,
                i % 60
            ));
        }
    }
    let a = dir.join("history.ndjson");
    let b = dir.join("history.csv");
    std::fs::write(&a, ndjson).unwrap();
    std::fs::write(&b, csv).unwrap();
    vec![a, b]
}

/// Every user's status under GDPR and CCPA, by organization user id.
async fn statuses(server: &TestServer) -> BTreeMap<String, (Value, Value)> {
    let api = server.client().await;
    let mut out = BTreeMap::new();
    for user in api.all_users().await {
        let ouid = user["organization_user_id"].as_str().unwrap().to_owned();
        let (_, ccpa) = api
            .get(&format!(
                "/v1/consents/users/{}?regulation=ccpa",
                user["id"].as_str().unwrap()
            ))
            .await;
        out.insert(ouid, (user["consents"].clone(), ccpa["consents"].clone()));
    }
    out
}

/// The part files of a run's folder and what they hold: lines, in order.
fn read_parts(folder: &Path) -> (Vec<PathBuf>, Vec<Value>) {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(folder.join("users"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    parts.sort();
    let mut lines = Vec::new();
    for part in &parts {
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(part).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    (parts, lines)
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_export_imported_into_an_empty_server_gives_every_user_the_same_status(
    #[case] backend: Backend,
) {
    let Some(first) = TestServer::start_on(backend).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let files = history(work.path(), 5_000, 1_000, 10);
    let summary = check(&import(&first, &files).await, "import");
    assert!(summary.contains("created 50000"), "{summary}");
    let before = statuses(&first).await;
    assert_eq!(before.len(), 5_000);
    let org = first.org.clone();
    // The embedded store belongs to one process at a time: stop the server to export it.
    let (_dir, store) = first.stop().await;

    let out_dir = work.path().join("exports");
    let summary = check(
        &export(
            &store,
            &org,
            &out_dir,
            &[
                "--scope",
                "full",
                "--date",
                "2026-12-04",
                "--id",
                "nightly",
                "--max-part-bytes",
                "262144",
            ],
        )
        .await,
        "export",
    );
    assert!(
        summary.contains("exported 5000 users and 50000 events"),
        "{summary}"
    );
    let folder = out_dir.join("export-id=nightly/date=2026-12-04");
    assert!(folder.join("_SUCCESS").is_file(), "no _SUCCESS");
    assert_eq!(std::fs::metadata(folder.join("_SUCCESS")).unwrap().len(), 0);
    let (parts, lines) = read_parts(&folder);
    assert!(
        parts.len() > 1,
        "expected several parts of 256 KiB, got {}",
        parts.len()
    );
    for (n, part) in parts.iter().enumerate() {
        assert_eq!(
            part.file_name().unwrap().to_str().unwrap(),
            format!("part-{n:05}.json.gz")
        );
        assert!(
            std::fs::metadata(part).unwrap().len() <= 262_144,
            "{part:?} too big"
        );
    }
    assert_eq!(lines.len(), 5_000);
    let events: usize = lines
        .iter()
        .map(|l| l["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(events, 50_000);
    let line = lines
        .iter()
        .find(|l| l["organization_user_id"] == "user-3")
        .unwrap();
    assert_eq!(line["user"]["organization_user_id"], "user-3");
    assert_eq!(line["user"]["consents"], before["user-3"].0);
    assert_eq!(line["user"]["regulations"]["gdpr"], before["user-3"].0);
    let ccpa = lines
        .iter()
        .find(|l| l["organization_user_id"] == "user-4998")
        .unwrap();
    assert_eq!(ccpa["user"]["regulations"]["ccpa"], before["user-4998"].1);

    let Some(second) = TestServer::start_on(backend).await else {
        return;
    };
    let summary = check(&import(&second, &parts).await, "import of the export");
    assert!(summary.contains("created 50000"), "{summary}");
    let after = statuses(&second).await;
    assert_eq!(after.len(), before.len());
    for (ouid, status) in &before {
        assert_eq!(after.get(ouid), Some(status), "status of {ouid}");
    }
}

#[tokio::test]
async fn a_daily_export_holds_the_users_changed_that_day_and_clears_an_earlier_attempt() {
    let server = TestServer::start().await;
    let api = server.client().await;
    api.event(json!({"user": {"organization_user_id": "today"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}}))
        .await;
    let org = server.org.clone();
    let (_dir, store) = server.stop().await;
    let out = tempfile::tempdir().unwrap();
    let today = chrono::Utc::now().date_naive();
    let yesterday = today.pred_opt().unwrap();

    // A part left by a failed attempt on the same day must not survive the next run.
    let folder = out.path().join(format!("export-id=cli/date={today}"));
    std::fs::create_dir_all(folder.join("users")).unwrap();
    std::fs::write(folder.join("users/part-00042.json.gz"), b"stale").unwrap();
    let summary = check(
        &export(&store, &org, out.path(), &["--date", &today.to_string()]).await,
        "daily export",
    );
    assert!(
        summary.contains("exported 1 users and 1 events"),
        "{summary}"
    );
    let (parts, lines) = read_parts(&folder);
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(lines[0]["organization_user_id"], "today");
    assert!(folder.join("_SUCCESS").exists());

    let summary = check(
        &export(
            &store,
            &org,
            out.path(),
            &["--date", &yesterday.to_string()],
        )
        .await,
        "export of a quiet day",
    );
    assert!(
        summary.contains("exported 0 users and 0 events"),
        "{summary}"
    );
    let quiet = out.path().join(format!("export-id=cli/date={yesterday}"));
    assert!(quiet.join("_SUCCESS").exists());
    assert!(read_parts(&quiet).0.is_empty());
}

#[tokio::test]
async fn a_failed_export_says_why_in_one_sentence_and_writes_no_success() {
    let server = TestServer::start().await;
    let org = server.org.clone();
    let (_dir, store) = server.stop().await;
    let out = tempfile::tempdir().unwrap();
    let blocker = out.path().join("blocked");
    std::fs::write(&blocker, b"a file where the folder should be").unwrap();
    let result = export(&store, &org, &blocker.join("exports"), &[]).await;
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.starts_with("assent: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    for (flags, field) in [
        (vec!["--date", "2026-02-30"], "--date"),
        (vec!["--scope", "weekly"], "--scope"),
        (vec!["--max-part-bytes", "10"], "--max-part-bytes"),
    ] {
        let result = export(&store, &org, out.path(), &flags).await;
        assert!(!result.status.success(), "{flags:?} accepted");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(field), "{flags:?}: {stderr}");
    }
    let result = assent(&[
        "export",
        "--organization",
        &org,
        "--to",
        "ftp://host/x",
        "--data-dir",
        &store.data_dir.display().to_string(),
    ])
    .await;
    assert!(String::from_utf8_lossy(&result.stderr).contains("not supported"));
    assert!(
        !out.path().join("export-id=cli").exists(),
        "a refused export wrote nothing"
    );
}
