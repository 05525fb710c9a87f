//! What the server writes to its terminal: never a secret, a token, proof bytes or a request
//! body; organization user ids only at debug level.

use crate::common::{Backend, create_key, fresh_store};
use base64::Engine as _;
use rstest::rstest;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A child `assent serve` whose stdout and stderr are captured whole.
struct Captured {
    child: Child,
    base: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Captured {
    /// Starts `assent serve` with `args` at log filter `level` (`None`: the default).
    fn start(args: &[&std::ffi::OsStr], level: Option<&str>) -> Captured {
        let mut command = Command::new(env!("CARGO_BIN_EXE_assent"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("ASSENT_LOG")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(level) = level {
            command.env("ASSENT_LOG", level);
        }
        let mut child = command.spawn().expect("assent starts");
        let (addr_tx, addr_rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("Assent listening on ") {
                    let _ = addr_tx.send(addr.trim().to_owned());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        });
        let base = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("assent listens");
        Captured {
            child,
            base,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Stops the server with SIGTERM and returns everything it wrote (stdout, then stderr).
    fn stop(mut self) -> String {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(terminated.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().expect("child state").is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("assent did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let drained = |h: Option<JoinHandle<String>>| h.expect("once").join().expect("drained");
        let stdout = drained(self.stdout.take());
        let stderr = drained(self.stderr.take());
        format!("{stdout}{stderr}")
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PDF whose bytes carry a marker that must never reach the terminal.
const PROOF_MARKER: &str = "proof-bytes-7f3c1e";
/// A value in a request body that must never reach the terminal.
const BODY_MARKER: &str = "body-value-a94d02";
/// An organization user id: only at debug level.
const OUID: &str = "jane.roe.5c81@example.com";

/// Sends what carries a secret, tokens, a proof and a body; returns what must stay out of the
/// terminal, each with its name.
async fn exercise(base: &str, key: &str, secret: &str) -> Vec<(&'static str, String)> {
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"type": "api-key", "key": key, "secret": secret}))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("session JSON");
    let token = session["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let wrong_secret = "not-the-secret-0b7e44".to_owned();
    let refused = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"type": "api-key", "key": key, "secret": wrong_secret}))
        .send()
        .await
        .expect("refused session");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let org = "acme";
    let consent: Value = http
        .post(format!("{base}/v1/consents/tokens?organization_id={org}"))
        .bearer_auth(&token)
        .json(&json!({"organization_user_id": OUID, "metadata": {"note": BODY_MARKER}}))
        .send()
        .await
        .expect("consent token")
        .json()
        .await
        .expect("consent token JSON");
    let consent_token = consent["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a consent token: {consent}"))
        .to_owned();
    let pdf = format!("%PDF-1.4\n% {PROOF_MARKER}\n%%EOF\n");
    let proof_base64 = base64::engine::general_purpose::STANDARD.encode(pdf.as_bytes());
    let res = http
        .post(format!("{base}/v1/consents/events?organization_id={org}"))
        .bearer_auth(&consent_token)
        .json(&json!({
            "user": {"organization_user_id": OUID},
            "metadata": {"booking": BODY_MARKER},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}]},
            "proofs": [format!("data:application/pdf;base64,{proof_base64}")],
        }))
        .send()
        .await
        .expect("event");
    let status = res.status();
    let event: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, reqwest::StatusCode::OK, "{event}");
    // A request that fails validation, echoing its body in the answer but not in the log.
    let bad = http
        .post(format!("{base}/v1/consents/events?organization_id={org}"))
        .bearer_auth(&token)
        .json(&json!({"user": {"organization_user_id": OUID}, "unknown": BODY_MARKER}))
        .send()
        .await
        .expect("bad event");
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    vec![
        ("the key's secret", secret.to_owned()),
        ("a wrong secret", wrong_secret),
        ("the session token", token),
        ("the consent token", consent_token),
        ("the proof as base64", proof_base64),
        ("the proof's bytes", PROOF_MARKER.to_owned()),
        ("the proof's bytes as numbers", as_numbers(PROOF_MARKER)),
        ("a request body value", BODY_MARKER.to_owned()),
    ]
}

/// How a byte string looks when a byte slice is debug-printed: `112, 114, 111`.
fn as_numbers(s: &str) -> String {
    let list = format!("{:?}", s.as_bytes());
    list.trim_matches(['[', ']']).to_owned()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_log_holds_no_secret_token_proof_body_or_user_id(
    #[case] backend: Backend,
    #[values(None, Some("debug"))] level: Option<&str>,
) {
    let Some((dir, store)) = fresh_store(backend).await else {
        return;
    };
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), dir.path().into()];
    if let Some(url) = &store.database_url {
        args.extend(["--database-url".into(), url.into()]);
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let server = Captured::start(&args, level);
    let (key, secret) = create_key(&store, "acme").await;
    let forbidden = exercise(&server.base, &key, &secret).await;
    let output = server.stop();
    assert!(
        output.contains("Assent listening on") && output.contains("shutting down"),
        "both streams are captured: {output}"
    );
    if level == Some("debug") {
        assert!(
            output.contains("/v1/consents/events"),
            "debug shows each request by route: {output}"
        );
    }
    for (what, value) in forbidden {
        assert!(
            !output.contains(&value),
            "{what} ({value}) is in the output at level {level:?}:\n{output}"
        );
    }
    if level.is_none() {
        assert!(
            !output.contains(OUID),
            "the organization user id is in the output at the default level:\n{output}"
        );
    }
}
