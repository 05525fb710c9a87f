//! IAB TCF strings through the API (`$generate_tcfcs=true`, the check of a client's
//! `consents.tcfcs`, the purpose map of `assent serve`) and the `assent tcf` / `assent gpp`
//! commands.

use crate::common::{Api, Backend, TestServer, assert_bad_field};
use crate::process::serve_with;
use assent::TcfArgs;
use assent_tcf::TcModel;
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};

const EVENTS: &str = "/v1/consents/events?$generate_tcfcs=true";

/// The TC string of an event or a user, decoded.
#[track_caller]
fn decoded(entity: &Value) -> TcModel {
    let tc = entity["consents"]["tcfcs"]
        .as_str()
        .unwrap_or_else(|| panic!("no consents.tcfcs in {entity}"));
    assent_tcf::decode(tc).unwrap_or_else(|e| panic!("{tc} does not decode: {e}"))
}

fn purposes(m: &TcModel) -> Vec<u8> {
    m.purpose_consents.iter().collect()
}

fn choices(list: &[(&str, bool)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(id, enabled)| json!({"id": id, "enabled": enabled}))
            .collect(),
    )
}

/// Posts to `path` and asserts a 200.
async fn ok(api: &Api, path: &str, body: Value) -> Value {
    let (status, out) = api.post(path, body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {out}");
    out
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_write_stores_and_returns_the_string_of_the_resulting_status(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    // A first event without the flag: on PostgreSQL it is still waiting to be folded into
    // the user when the next one asks for a string.
    api.event(json!({
        "user": {"id": "u1"},
        "consents": {"purposes": choices(&[("measure_ad_performance", true)])}
    }))
    .await;
    let event = ok(
        &api,
        EVENTS,
        json!({
            "user": {"id": "u1"},
            "consents": {
                "purposes": [
                    {"id": "cookies", "enabled": true},
                    {"id": "select_basic_ads", "enabled": false, "enabled_li": true},
                    {"id": "market_research", "enabled": false},
                    {"id": "newsletter", "enabled": true},
                    {"id": "geolocation_data", "enabled": true}
                ],
                "vendors": {"enabled": ["iab:755", "28", "google"], "disabled": ["iab:1"],
                            "enabled_li": ["iab:91"]}
            },
            "iab": {"tcf": {"cmp_id": 300, "consent_language": "fr", "publisher_cc": "DE",
                            "vendor_list_version": 48}}
        }),
    )
    .await;
    let m = decoded(&event);
    assert_eq!(m.cmp_id, 300);
    assert_eq!(
        purposes(&m),
        vec![1, 7],
        "cookies, and the earlier event's purpose 7"
    );
    assert_eq!(
        m.purpose_legitimate_interests.iter().collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(m.special_feature_optins.iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(m.vendor_consents.to_vec(), vec![28, 755]);
    assert_eq!(m.vendor_legitimate_interests.to_vec(), vec![91]);
    assert_eq!(m.vendors_disclosed.to_vec(), vec![1, 28, 91, 755]);
    assert_eq!(
        (
            m.consent_language.as_str(),
            m.publisher_country_code.as_str()
        ),
        ("FR", "DE")
    );
    assert_eq!((m.vendor_list_version, m.policy_version), (48, 5));
    assert!(m.is_service_specific);

    // Stored in the event and in the user's status.
    let tc = event["consents"]["tcfcs"].clone();
    let id = event["id"].as_str().unwrap();
    let (status, stored) = api.get(&format!("/v1/consents/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored["consents"]["tcfcs"], tc);
    assert_eq!(api.user("u1").await["consents"]["tcfcs"], tc);

    // The next string starts from the status this one encoded.
    let next = ok(
        &api,
        EVENTS,
        json!({"user": {"id": "u1"}, "consents": {"purposes": choices(&[("market_research", true)])},
               "iab": {"tcf": {"cmp_id": 300}}}),
    )
    .await;
    assert_eq!(purposes(&decoded(&next)), vec![1, 7, 9]);
    assert_eq!(
        api.user("u1").await["consents"]["tcfcs"],
        next["consents"]["tcfcs"]
    );

    // A replay with the flag answers the stored event and its string.
    let replayed = ok(
        &api,
        EVENTS,
        json!({"id": id, "user": {"id": "u1"},
               "consents": {"purposes": [
                    {"id": "cookies", "enabled": true},
                    {"id": "select_basic_ads", "enabled": false, "enabled_li": true},
                    {"id": "market_research", "enabled": false},
                    {"id": "newsletter", "enabled": true},
                    {"id": "geolocation_data", "enabled": true}],
                "vendors": {"enabled": ["iab:755", "28", "google"], "disabled": ["iab:1"],
                            "enabled_li": ["iab:91"]}},
               "iab": {"tcf": {"cmp_id": 300, "consent_language": "fr", "publisher_cc": "DE",
                               "vendor_list_version": 48}}}),
    )
    .await;
    assert_eq!(replayed["consents"]["tcfcs"], tc);
    assert_eq!(replayed["updated_at"], event["updated_at"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn each_event_of_a_batch_gets_the_string_of_the_status_after_it(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let iab = json!({"tcf": {"cmp_id": 42}});
    let (status, out) = api
        .post(
            EVENTS,
            json!([
                {"user": {"id": "a"}, "iab": iab,
                 "consents": {"purposes": choices(&[("cookies", true)])}},
                {"user": {"id": "b"}, "iab": iab,
                 "consents": {"purposes": choices(&[("improve_products", true)])}},
                {"user": {"id": "a"}, "iab": iab,
                 "consents": {"purposes": choices(&[("select_basic_ads", true)])}},
                {"user": {"id": "a"}, "iab": iab, "status": "pending_approval",
                 "consents": {"purposes": choices(&[("market_research", true)])}},
                {"user": {"id": "a"}, "iab": iab,
                 "consents": {"purposes": choices(&[("cookies", false)])}},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let strings: Vec<Vec<u8>> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|e| purposes(&decoded(e)))
        .collect();
    assert_eq!(
        strings,
        vec![vec![1], vec![10], vec![1, 2], vec![1, 2, 9], vec![2]],
        "a pending event's string holds its own choice, which later events do not see"
    );
    assert_eq!(
        api.user("a").await["consents"]["tcfcs"],
        out[4]["consents"]["tcfcs"]
    );
    assert_eq!(
        api.user("b").await["consents"]["tcfcs"],
        out[1]["consents"]["tcfcs"]
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn user_writes_store_the_string_of_the_users_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let created = ok(
        &api,
        "/v1/consents/users?$generate_tcfcs=true",
        json!({"id": "u1", "metadata": {"k": 1}, "iab": {"tcf": {"cmp_id": 77}}}),
    )
    .await;
    let m = decoded(&created);
    assert_eq!(m.cmp_id, 77);
    assert!(purposes(&m).is_empty() && m.vendor_consents.is_empty());
    assert_eq!(
        api.user("u1").await["consents"]["tcfcs"],
        created["consents"]["tcfcs"]
    );

    // Events without the flag change the status; a PATCH builds the string of it.
    api.event(json!({"user": {"id": "u1"}, "consents": {
        "purposes": choices(&[("cookies", true), ("create_ads_profile", true)]),
        "vendors": {"enabled": ["iab:10"]}}}))
        .await;
    api.event(json!({"user": {"id": "u1"}, "regulation": "ccpa",
        "consents": {"purposes": choices(&[("improve_products", true)])}}))
        .await;
    let (status, patched) = api
        .patch(
            "/v1/consents/users/u1?$generate_tcfcs=true",
            json!({"metadata": {"k": 2}, "iab": {"tcf": {"cmp_id": 77, "cmp_version": 3}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let m = decoded(&patched);
    assert_eq!((purposes(&m), m.cmp_version), (vec![1, 3], 3));
    assert_eq!(m.vendor_consents.to_vec(), vec![10]);
    assert_eq!(patched["metadata"]["k"], 2);
    let user = api.user("u1").await;
    assert_eq!(user["consents"]["tcfcs"], patched["consents"]["tcfcs"]);

    // The route's regulation chooses the status; the other regulation's string stays.
    let (status, ccpa) = api
        .patch(
            "/v1/consents/users/u1?$generate_tcfcs=true&regulation=ccpa",
            json!({"iab": {"tcf": {"cmp_id": 77}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ccpa}");
    assert_eq!(purposes(&decoded(&ccpa)), vec![10]);
    assert_eq!(
        api.user("u1").await["consents"]["tcfcs"],
        user["consents"]["tcfcs"]
    );

    // A later event's string takes over from the one the user write made.
    let later = ok(
        &api,
        EVENTS,
        json!({"user": {"id": "u1"}, "consents": {"purposes": choices(&[("cookies", false)])},
               "iab": {"tcf": {"cmp_id": 77}}}),
    )
    .await;
    assert_eq!(purposes(&decoded(&later)), vec![3]);
    assert_eq!(
        api.user("u1").await["consents"]["tcfcs"],
        later["consents"]["tcfcs"]
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_back_dated_event_gets_the_string_of_the_merged_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1"}, "consents": {
        "purposes": choices(&[("cookies", true), ("market_research", false)])}}))
        .await;
    let old = ok(
        &api,
        EVENTS,
        json!({"user": {"id": "u1"}, "created_at": "2021-03-04T05:06:07Z",
               "consents": {"purposes": choices(&[("cookies", false), ("market_research", true),
                                                   ("create_ads_profile", true)])},
               "iab": {"tcf": {"cmp_id": 300}}}),
    )
    .await;
    let m = decoded(&old);
    // The newer choices stand (cookies yes, market research no); the old event adds only
    // what nobody chose since.
    assert_eq!(purposes(&m), vec![1, 3]);
    // Dated by the newest choice it encodes (today's), not by the event (2021).
    let day = |t: std::time::SystemTime| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        secs / 86_400 * 864_000
    };
    let now = std::time::SystemTime::now();
    let today = [day(now - std::time::Duration::from_secs(60)), day(now)];
    assert!(today.contains(&m.last_updated.0), "{:?}", m.last_updated);
    let user = api.user("u1").await;
    assert_eq!(crate::common::purpose_enabled(&user, "cookies"), Some(true));
    assert_eq!(user["consents"]["tcfcs"], old["consents"]["tcfcs"]);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn without_cmp_id_the_flag_is_400_at_iab_tcf_cmp_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let consents = json!({"purposes": choices(&[("cookies", true)])});
    for iab in [
        None,
        Some(json!({})),
        Some(json!({"tcf": null})),
        Some(json!({"tcf": {"cmp_version": 2}})),
    ] {
        let mut body = json!({"user": {"id": "u1"}, "consents": consents});
        if let Some(iab) = &iab {
            body["iab"] = iab.clone();
        }
        let (status, out) = api.post(EVENTS, body.clone()).await;
        assert_bad_field(status, &out, "iab.tcf.cmp_id");
        let (status, out) = api
            .post(EVENTS, json!([{"iab": {"tcf": {"cmp_id": 5}}}, body]))
            .await;
        assert_bad_field(status, &out, "[1].iab.tcf.cmp_id");
        let mut user = json!({"id": "u1"});
        if let Some(iab) = iab {
            user["iab"] = iab;
        }
        let (status, out) = api
            .post("/v1/consents/users?$generate_tcfcs=true", user.clone())
            .await;
        assert_bad_field(status, &out, "iab.tcf.cmp_id");
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);

    api.event(json!({"user": {"id": "u1"}})).await;
    let before = api.user("u1").await;
    let (status, out) = api
        .patch(
            "/v1/consents/users/u1?$generate_tcfcs=true",
            json!({"metadata": {"k": 1}, "iab": {"tcf": {"cmp_id": 1}}}),
        )
        .await;
    assert_bad_field(status, &out, "iab.tcf.cmp_id");
    assert!(
        out["errors"]["iab.tcf.cmp_id"]
            .as_str()
            .unwrap()
            .contains("2 to 4095")
    );
    let (status, out) = api
        .patch(
            "/v1/consents/users/u1?$generate_tcfcs=true",
            json!({"metadata": {"k": 1}}),
        )
        .await;
    assert_bad_field(status, &out, "iab.tcf.cmp_id");
    assert_eq!(api.user("u1").await, before, "nothing was written");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn without_the_flag_iab_is_accepted_and_nothing_is_generated(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let iab = json!({"tcf": {"cmp_id": 300, "anything": true}, "other": 1});
    let event = api
        .event(json!({"user": {"id": "u1"}, "iab": iab,
                      "consents": {"purposes": choices(&[("cookies", true)])}}))
        .await;
    assert!(event["consents"].get("tcfcs").is_none(), "{event}");
    let user = ok(&api, "/v1/consents/users", json!({"id": "u2", "iab": iab})).await;
    assert!(user["consents"].get("tcfcs").is_none(), "{user}");
    let (status, user) = api
        .patch(
            "/v1/consents/users/u2?$generate_tcfcs=false",
            json!({"iab": iab}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert!(user["consents"].get("tcfcs").is_none(), "{user}");
    assert!(api.user("u1").await["consents"].get("tcfcs").is_none());

    // Routes that build no string refuse the flag rather than ignore it.
    let id = event["id"].as_str().unwrap();
    let (status, out) = api
        .patch(
            &format!("/v1/consents/events/{id}?$generate_tcfcs=true"),
            json!({"status": "confirmed"}),
        )
        .await;
    assert_bad_field(status, &out, "$generate_tcfcs");
    let (status, out) = api
        .delete("/v1/consents/events?user_id=u1&regulation=gdpr&$generate_tcfcs=true")
        .await;
    assert_bad_field(status, &out, "$generate_tcfcs");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_client_string_is_decoded_and_refused_with_the_reason(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for (tcf, reason) in [
        ("CQ", "truncated"),
        ("CQSbk4AQ$bk4", "invalid base64url character '$'"),
        ("DBABMA", "a GPP string"),
    ] {
        let (status, out) = api
            .post(
                "/v1/consents/events",
                json!({"user": {"id": "u1"}, "consents": {"tcfcs": tcf}}),
            )
            .await;
        assert_bad_field(status, &out, "consents.tcfcs");
        let message = out["errors"]["consents.tcfcs"].as_str().unwrap();
        assert!(
            message.starts_with("is not a valid TCF v2 consent string: ")
                && message.contains(reason),
            "{tcf}: {message}"
        );
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);

    // A string and the flag together: the server makes the string.
    let event = api.event(json!({"user": {"id": "u1"}})).await;
    let tc = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA";
    let (status, out) = api
        .post(
            EVENTS,
            json!({"user": {"id": "u1"}, "consents": {"tcfcs": tc}, "iab": {"tcf": {"cmp_id": 3}}}),
        )
        .await;
    assert_bad_field(status, &out, "consents.tcfcs");
    // `PATCH /consents/events/{id}` checks it too.
    let id = event["id"].as_str().unwrap();
    let (status, out) = api
        .patch(
            &format!("/v1/consents/events/{id}"),
            json!({"consents": {"tcfcs": "CQ"}}),
        )
        .await;
    assert_bad_field(status, &out, "consents.tcfcs");
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_document_shows_the_flag_on_the_routes_that_build_strings() {
    let server = TestServer::start().await;
    let (status, doc) = server
        .raw(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let has_flag = |path: &str, method: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
            .iter()
            .any(|p| p["name"] == "$generate_tcfcs" && p["in"] == "query")
    };
    assert!(has_flag("/v1/consents/events", "post"));
    assert!(has_flag("/v1/consents/users", "post"));
    assert!(has_flag("/v1/consents/users/{id}", "patch"));
    assert!(!has_flag("/v1/consents/events", "delete"));
    assert!(!has_flag("/v1/consents/users/{id}", "delete"));
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["TcfParamsIn"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("cmp_id"))),
        "{}",
        schemas["TcfParamsIn"]
    );
    server.stop().await;
}

/// A purpose map file in `dir`.
fn map_file(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("purposes.json");
    std::fs::write(&path, text).unwrap();
    path
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_custom_purpose_map_changes_the_numbers(#[case] backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let file = map_file(
        dir.path(),
        r#"{"purposes": {"analytics": 8, "cookies": 2}, "special_features": {"gps": 1}}"#,
    );
    let tcf = TcfArgs {
        tcf_purpose_map: Some(file),
    };
    let Some(server) = TestServer::start_tcf(backend, tcf).await else {
        return;
    };
    let api = server.client().await;
    let event = ok(
        &api,
        EVENTS,
        json!({"user": {"id": "u1"}, "iab": {"tcf": {"cmp_id": 300}},
               "consents": {"purposes": choices(&[("analytics", true), ("cookies", true),
                   ("select_basic_ads", true), ("gps", true), ("geolocation_data", true)])}}),
    )
    .await;
    let m = decoded(&event);
    assert_eq!(purposes(&m), vec![2, 8], "the file replaces Didomi's ids");
    assert_eq!(m.special_feature_optins.iter().collect::<Vec<_>>(), vec![1]);
    server.stop().await;
}

fn assent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_assent"))
}

/// Runs `assent ARGS` with `input` on standard input.
fn run(args: &[&str], input: &str) -> Output {
    let mut child = assent()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("assent runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts a failure that says one sentence on standard error, starting with `start`.
#[track_caller]
fn assert_one_sentence(out: &Output, start: &str) {
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(start), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn the_serve_flag_loads_the_map_and_a_bad_map_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = map_file(dir.path(), r#"{"purposes": {"newsletter": 11}}"#);
    let server = serve_with(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--tcf-purpose-map".as_ref(),
        file.as_os_str(),
    ]);
    let key = server
        .bootstrap
        .clone()
        .expect("a first start prints its key");
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/v1/sessions", server.base))
        .json(&json!({"type": "api-key", "key": key["key"], "secret": key["secret"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event: Value = http
        .post(format!(
            "{}/v1/consents/events?organization_id=default&$generate_tcfcs=true",
            server.base
        ))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .json(&json!({"iab": {"tcf": {"cmp_id": 300}}, "consents": {
            "purposes": choices(&[("newsletter", true), ("cookies", true)])}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(purposes(&decoded(&event)), vec![11]);
    drop(server);

    for (text, says) in [
        (None, "assent: cannot read the TCF purpose map "),
        (
            Some(r#"{"purposes": {"cookies": 30}}"#),
            "assent: the TCF purpose map ",
        ),
        (Some("{"), "assent: the TCF purpose map "),
    ] {
        let file = match text {
            Some(text) => map_file(dir.path(), text),
            None => dir.path().join("missing.json"),
        };
        let out = assent()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("ASSENT_TCF_PURPOSE_MAP", &file)
            .output()
            .unwrap();
        assert_one_sentence(&out, says);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&file.display().to_string()), "{err}");
        if text.is_some() {
            assert!(err.contains("is not valid: "), "{err}");
        }
    }
}

#[test]
fn tcf_decode_and_encode_round_trip() {
    // A vector of the IAB libraries: cmpId 746, vendor consents [702, 703], LI [683, 684].
    let vector = "COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA";
    let fields: Value =
        serde_json::from_str(&stdout(&run(&["tcf", "decode", vector], ""))).unwrap();
    assert_eq!(fields["cmp_id"], 746);
    assert_eq!(fields["vendor_consents"], json!([702, 703]));
    assert_eq!(fields["vendor_legitimate_interests"], json!([683, 684]));

    let mine = json!({"created": "2025-06-03T00:00:00Z", "last_updated": "2025-06-03T00:00:00Z",
                      "cmp_id": 300, "purpose_consents": [1, 2, 9], "vendor_consents": [755],
                      "vendors_disclosed": [28, 755], "publisher_country_code": "DE"});
    let tc = stdout(&run(&["tcf", "encode"], &mine.to_string()));
    let tc = tc.trim();
    let back: Value = serde_json::from_str(&stdout(&run(&["tcf", "decode", tc], ""))).unwrap();
    for key in [
        "cmp_id",
        "purpose_consents",
        "vendor_consents",
        "vendors_disclosed",
        "created",
    ] {
        assert_eq!(back[key], mine[key], "{key}");
    }
    assert_eq!(back["publisher_country_code"], "DE");
    // What `decode` prints, `encode` takes back to the same string.
    let again = stdout(&run(&["tcf", "encode"], &back.to_string()));
    assert_eq!(again.trim(), tc);

    assert_one_sentence(
        &run(&["tcf", "decode", "CQ"], ""),
        "assent: not a valid TC string: ",
    );
    assert_one_sentence(
        &run(&["tcf", "encode"], r#"{"cmp_id": 3}"#),
        "assent: standard input does not hold the fields of a TC string: ",
    );
    let global = json!({"created": "2025-06-03T00:00:00Z", "last_updated": "2025-06-03T00:00:00Z",
                        "cmp_id": 300, "is_service_specific": false});
    assert_one_sentence(
        &run(&["tcf", "encode"], &global.to_string()),
        "assent: cannot encode is_service_specific: ",
    );
}

#[test]
fn gpp_decode_and_encode_round_trip() {
    // iabgpp-es's encode test: usnat v2 with the GPC subsection.
    let usnat = "DBABLA~CVVVkkkkkpFY.YA";
    let fields: Value = serde_json::from_str(&stdout(&run(&["gpp", "decode", usnat], ""))).unwrap();
    assert_eq!(fields["sections"][0]["section"], "usnat");
    assert_eq!(fields["sections"][0]["gpc"], true, "{fields}");
    let again = stdout(&run(&["gpp", "encode"], &fields.to_string()));
    assert_eq!(again.trim(), usnat);

    // TCF and US Privacy sections.
    let two = "DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN";
    let fields: Value = serde_json::from_str(&stdout(&run(&["gpp", "decode", two], ""))).unwrap();
    let sections: Vec<&Value> = fields["sections"].as_array().unwrap().iter().collect();
    assert_eq!(sections[0]["section"], "tcfeuv2");
    assert_eq!(sections[0]["cmp_id"], 31);
    assert_eq!(sections[1]["section"], "uspv1");
    let encoded = stdout(&run(&["gpp", "encode"], &fields.to_string()));
    let back: Value =
        serde_json::from_str(&stdout(&run(&["gpp", "decode", encoded.trim()], ""))).unwrap();
    assert_eq!(back, fields);

    assert_one_sentence(
        &run(&["gpp", "decode", "DBABM"], ""),
        "assent: not a valid GPP string: ",
    );
    assert_one_sentence(
        &run(&["gpp", "encode"], "[]"),
        "assent: standard input does not hold the fields of a GPP string: ",
    );
}
