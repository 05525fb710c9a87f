//! The `assent` binary as a user runs it: first start, `keys create` beside a running server,
//! configuration from the environment, clear errors at start.

use crate::process::serve;
use serde_json::{Value, json};
use std::process::Command;

fn assent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_assent"))
}

async fn session_status(base: &str, key: &str, secret: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"type": "api-key", "key": key, "secret": secret}))
        .send()
        .await
        .expect("session request")
        .status()
}

#[tokio::test]
async fn first_start_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path());
    let key = first
        .bootstrap
        .clone()
        .expect("the first start prints a key");
    assert_eq!(key["organization_id"], "default");
    let (k, s) = (
        key["key"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    assert_eq!(
        session_status(&first.base, k, s).await,
        reqwest::StatusCode::OK
    );
    drop(first);
    let second = serve(dir.path());
    assert!(
        second.bootstrap.is_none(),
        "the key is printed only on the first start"
    );
    assert_eq!(
        session_status(&second.base, k, s).await,
        reqwest::StatusCode::OK
    );
}

#[tokio::test]
async fn keys_create_works_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let out = assent()
        .args([
            "keys",
            "create",
            "--organization",
            "acme",
            "--name",
            "backend",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("assent keys create runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["organization_id"], "acme");
    assert!(line["id"].as_str().is_some_and(|s| !s.is_empty()));
    let (k, s) = (
        line["key"].as_str().unwrap(),
        line["secret"].as_str().unwrap(),
    );
    assert_eq!(
        session_status(&server.base, k, s).await,
        reqwest::StatusCode::OK
    );

    // The new organization is usable at once, and only by its own key.
    let token: Value = reqwest::Client::new()
        .post(format!("{}/v1/sessions", server.base))
        .json(&json!({"type": "api-key", "key": k, "secret": s}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let res = http
        .post(format!(
            "{}/v1/consents/events?organization_id=acme",
            server.base
        ))
        .bearer_auth(token)
        .json(
            &json!({"user": {"id": "u"}, "consents": {"purposes": [{"id": "p", "enabled": true}]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let res = http
        .get(format!(
            "{}/v1/consents/users/u?organization_id=default",
            server.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::FORBIDDEN);
}

#[test]
fn keys_create_refuses_a_bad_organization_id() {
    let dir = tempfile::tempdir().unwrap();
    let out = assent()
        .args([
            "keys",
            "create",
            "--organization",
            "no spaces allowed",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--organization"), "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn listen_address_and_data_dir_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = assent()
        .arg("serve")
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_DATA_DIR", dir.path())
        .env("ASSENT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(up, "the server listened on ASSENT_LISTEN");
    assert!(
        dir.path().join("assent.db").exists(),
        "the store is in ASSENT_DATA_DIR"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_fails_with_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let _first = serve(dir.path());
    let out = assent()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another assent server is already using"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unusable_listen_address_fails_with_one_clear_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let out = assent()
        .args(["serve", "--listen", "not-an-address", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on not-an-address"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
