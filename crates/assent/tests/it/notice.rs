//! Consent events in the notice shape of CMP SDKs (`events` array) on
//! `POST /v1/consents/events`, and read back with `GET /v1/consents/events?$format=notice`.

use crate::common::{Api, Backend, TestServer, assert_bad_field, assert_error, urlencode};
use crate::integrations::{Mode, Receiver, event_hook};
use assent_tcf::builder::{Choices, TcfParams, build};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};
use std::time::Duration;

const EVENTS: &str = "/v1/consents/events";

const ACTIONS: &[&str] = &[
    "consent.given",
    "consent.refused",
    "preference.shown",
    "preferences.click.agreetoall",
    "preferences.click.disagreetoall",
    "preferences.click.savechoices",
];

const LEGAL_BASES: &[Option<&str>] = &[
    None,
    Some("consent"),
    Some("legitimate_interest"),
    Some("contract"),
    Some("legal_obligation"),
    Some("vital_interest"),
    Some("public_interest"),
];

/// A notice event of `org` for the didomi user `user` with these actions.
fn notice(org: &str, user: &str, events: Value) -> Value {
    json!({"organization_id": org, "user": {"id": user}, "events": events})
}

/// `body` with the fields of `extra` set (or replaced).
fn with(mut body: Value, extra: Value) -> Value {
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// Posts and asserts a 200.
async fn ok(api: &Api, body: Value) -> Value {
    let (status, out) = api.post(EVENTS, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} refused: {out}");
    out
}

/// A user's status under `regulation`.
async fn status(api: &Api, user: &str, regulation: &str) -> Value {
    let (code, user) = api
        .get(&format!(
            "/v1/consents/users/{}?regulation={regulation}",
            urlencode(user)
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{user}");
    user["consents"].clone()
}

/// The `(enabled, enabled_li)` of purpose `id` in a status; `None` when it is absent.
fn purpose_of(consents: &Value, id: &str) -> Option<(Value, Value)> {
    consents["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .map(|p| (p["enabled"].clone(), p["enabled_li"].clone()))
}

/// The vendor lists of a status that name `id`.
fn lists_of(consents: &Value, id: &str) -> Vec<&'static str> {
    ["enabled", "disabled", "enabled_li", "disabled_li"]
        .into_iter()
        .filter(|list| {
            consents["vendors"][*list]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == id)
        })
        .collect()
}

/// The choice an action makes when no `value` is sent.
fn implied(action: &str) -> Option<bool> {
    match action {
        "consent.given" | "preferences.click.agreetoall" => Some(true),
        "consent.refused" | "preferences.click.disagreetoall" => Some(false),
        _ => None,
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_action_and_legal_basis_sets_the_slot_it_names(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    // One user per (action, legal basis, purpose or vendor), all in one batch.
    let mut cases = Vec::new();
    for action in ACTIONS {
        for basis in LEGAL_BASES {
            for target in ["purpose", "vendor"] {
                let user = format!("u{}", cases.len());
                let mut item = json!({"action": action, target: "x"});
                if let Some(basis) = basis {
                    item["legal_basis"] = json!(basis);
                }
                cases.push((user, *action, *basis, target, item));
            }
        }
    }
    assert_eq!(cases.len(), 84);
    let batch: Vec<Value> = cases
        .iter()
        .map(|(user, _, _, _, item)| notice(&api.org, user, json!([item])))
        .collect();
    let stored = ok(&api, Value::Array(batch)).await;
    assert_eq!(stored.as_array().unwrap().len(), 84);

    for (user, action, basis, target, _) in &cases {
        let consents = status(&api, user, "gdpr").await;
        let li = *basis == Some("legitimate_interest");
        let case = format!("{action} {basis:?} {target}");
        match (implied(action), *target) {
            (None, "purpose") => assert_eq!(purpose_of(&consents, "x"), None, "{case}"),
            (None, _) => assert!(lists_of(&consents, "x").is_empty(), "{case}"),
            (Some(choice), "purpose") => {
                let set = json!(choice);
                let expected = if li {
                    (Value::Null, set)
                } else {
                    (set, Value::Null)
                };
                assert_eq!(purpose_of(&consents, "x"), Some(expected), "{case}");
            }
            (Some(choice), _) => {
                let list = match (choice, li) {
                    (true, false) => "enabled",
                    (false, false) => "disabled",
                    (true, true) => "enabled_li",
                    (false, true) => "disabled_li",
                };
                assert_eq!(lists_of(&consents, "x"), vec![list], "{case}");
            }
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn value_overrides_the_action(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let table = [
        ("consent.given", false, false),
        ("consent.refused", true, true),
        ("preferences.click.agreetoall", false, false),
        ("preferences.click.disagreetoall", true, true),
        ("preferences.click.savechoices", true, true),
        ("preferences.click.savechoices", false, false),
    ];
    for (i, (action, value, expected)) in table.into_iter().enumerate() {
        let user = format!("v{i}");
        ok(
            &api,
            notice(
                &api.org,
                &user,
                json!([{"action": action, "purpose": "p", "value": value},
                       {"action": action, "vendor": "g", "value": value,
                        "legal_basis": "legitimate_interest"}]),
            ),
        )
        .await;
        let consents = status(&api, &user, "gdpr").await;
        assert_eq!(
            purpose_of(&consents, "p"),
            Some((json!(expected), Value::Null)),
            "{action} value {value}"
        );
        let list = if expected {
            "enabled_li"
        } else {
            "disabled_li"
        };
        assert_eq!(
            lists_of(&consents, "g"),
            vec![list],
            "{action} value {value}"
        );
    }
    // preference.shown makes no choice, so it takes no value.
    let (code, out) = api
        .post(
            EVENTS,
            notice(
                &api.org,
                "v9",
                json!([{"action": "preference.shown", "purpose": "p", "value": true}]),
            ),
        )
        .await;
    assert_bad_field(code, &out, "events[0].value");
    // Opposite choices for one purpose in one notice are refused at the later one.
    let (code, out) = api
        .post(
            EVENTS,
            notice(
                &api.org,
                "v9",
                json!([{"action": "consent.given", "purpose": "p"},
                       {"action": "consent.given", "purpose": "p", "value": false}]),
            ),
        )
        .await;
    assert_bad_field(code, &out, "events[1]");
    assert_eq!(
        out["errors"]["events[1]"],
        "purpose 'p' is refused here but given at events[0]; one event makes one choice per \
         purpose and legal basis"
    );
    assert_eq!(api.user_status_code("v9").await, StatusCode::NOT_FOUND);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_notice_batch_with_replays_is_all_or_nothing(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let org = api.org.clone();
    let n1 = with(
        notice(
            &org,
            "u1",
            json!([{"action": "consent.given", "purpose": "p"}]),
        ),
        json!({"id": "n1", "created_at": "2024-01-01T00:00:00Z"}),
    );
    let n2 = with(
        notice(
            &org,
            "u1",
            json!([{"action": "consent.refused", "vendor": "g"}]),
        ),
        json!({"id": "n2", "notice_id": "nt"}),
    );
    let first = ok(&api, json!([n1.clone(), n2.clone()])).await;

    // A replay of n2 with other content rejects the whole batch: nothing new is stored.
    let n2_changed = with(n2.clone(), json!({"notice_id": "other"}));
    let n3 = with(
        notice(
            &org,
            "u1",
            json!([{"action": "consent.given", "purpose": "q"}]),
        ),
        json!({"id": "n3"}),
    );
    let api_shape = json!({"id": "e4", "user": {"id": "u1"},
        "consents": {"purposes": [{"id": "r", "enabled": true}]}});
    let (code, out) = api
        .post(
            EVENTS,
            json!([n1.clone(), n3.clone(), api_shape.clone(), n2_changed]),
        )
        .await;
    assert_error(code, &out, 409, "Conflict");
    assert!(out["message"].as_str().unwrap().contains("n2"), "{out}");
    for id in ["n3", "e4"] {
        assert_eq!(
            api.event_status_code(id).await,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }

    // An invalid item rejects the batch too, keyed by its index.
    let bad = notice(&org, "u1", json!([{"action": "consent.maybe"}]));
    let (code, out) = api
        .post(EVENTS, json!([n3.clone(), api_shape.clone(), bad]))
        .await;
    assert_bad_field(code, &out, "[2].events[0].action");
    assert_eq!(out["errors"].as_object().unwrap().len(), 1, "{out}");
    assert_eq!(api.event_status_code("n3").await, StatusCode::NOT_FOUND);

    // Same content: the stored events answer, untouched; the new ones are written.
    let second = ok(&api, json!([n1, n3, api_shape, n2])).await;
    assert_eq!(second[0], first[0], "n1 is answered as stored");
    assert_eq!(second[3], first[1], "n2 is answered as stored");
    assert_eq!(second[1]["id"], "n3");
    assert_eq!(second[2]["id"], "e4");
    let listed = api.events("user_id=u1").await;
    assert_eq!(listed["total"], 4, "{listed}");
    let consents = status(&api, "u1", "gdpr").await;
    for p in ["p", "q", "r"] {
        assert_eq!(
            purpose_of(&consents, p),
            Some((json!(true), Value::Null)),
            "{p}"
        );
    }
    assert_eq!(lists_of(&consents, "g"), vec!["disabled"]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn invalid_enums_name_the_path_and_the_allowed_values(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let base = notice(
        &api.org,
        "u1",
        json!([{"action": "consent.given", "purpose": "p"}]),
    );
    let table = [
        (
            json!({"events": [{"action": "consent.maybe"}]}),
            "events[0].action",
            "'consent.maybe' is not allowed; expected one of: consent.given, consent.refused, \
             preference.shown, preferences.click.agreetoall, preferences.click.disagreetoall, \
             preferences.click.savechoices",
        ),
        (
            json!({"regulation": "pipeda"}),
            "regulation",
            "'pipeda' is not allowed; expected one of: gdpr, ccpa, vcdpa, ctdpa, cpa, utah, \
             cdpa, tcf, gpp, chilean-law-25, australian-privacy, none",
        ),
        (
            json!({"source": {"type": "tizen"}}),
            "source.type",
            "'tizen' is not allowed; expected one of: web, ios, android, react-native, \
             flutter, unity, vega-os, amp, api",
        ),
        (
            json!({"events": [{"action": "consent.given", "purpose": "p",
                               "legal_basis": "whim"}]}),
            "events[0].legal_basis",
            "'whim' is not allowed; expected one of: consent, legitimate_interest, contract, \
             legal_obligation, vital_interest, public_interest",
        ),
        (
            json!({"user": {"id": "u1", "type": "crm"}}),
            "user.type",
            "'crm' is not allowed; expected one of: didomi, external",
        ),
    ];
    for (change, path, message) in table {
        let (code, out) = api.post(EVENTS, with(base.clone(), change.clone())).await;
        assert_bad_field(code, &out, path);
        assert_eq!(out["errors"][path], message, "{change}");
        assert_eq!(out["errors"].as_object().unwrap().len(), 1, "{out}");
        // In a batch, behind a valid event, the path starts with the index.
        let (code, out) = api
            .post(EVENTS, json!([base.clone(), with(base.clone(), change)]))
            .await;
        assert_bad_field(code, &out, &format!("[1].{path}"));
    }
    // Other checks of the shape, each at its path.
    let table = [
        (
            json!({"organization_id": null}),
            "organization_id",
            "is required",
        ),
        (
            json!({"organization_id": "another"}),
            "organization_id",
            "must equal the organization_id of the query",
        ),
        (json!({"user": null}), "user", "is required"),
        (
            json!({"events": []}),
            "events",
            "must list at least one action (consent.given, preference.shown, ...)",
        ),
        (
            json!({"events": [{"purpose": "p"}]}),
            "events[0].action",
            "is required",
        ),
        (
            json!({"source": {"url": "/relative/path"}}),
            "source.url",
            "must be an absolute URL such as https://www.example.com/page (relative URL without a base)",
        ),
        (
            json!({"created_at": "yesterday"}),
            "created_at",
            "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z",
        ),
        (
            json!({"updated_at": "2024-01-01 10:00"}),
            "updated_at",
            "must be an RFC 3339 date-time such as 2024-05-01T12:00:00Z",
        ),
        (
            json!({"consents": {}}),
            "consents",
            "is not a known field; expected one of: id, organization_id, notice_id, user, \
             regulation, consent_string, events, source, created_at, updated_at",
        ),
        (
            json!({"user": {"type": "external"}}),
            "user.id",
            "is required when type is external (it is the organization user id)",
        ),
        (
            json!({"user": {"id": "u1", "country": "XX"}}),
            "user.country",
            "'XX' is not an ISO 3166-1 alpha-2 country code",
        ),
        (
            json!({"notice_id": "x".repeat(256)}),
            "notice_id",
            "must be at most 255 characters",
        ),
    ];
    for (change, path, message) in table {
        let (code, out) = api.post(EVENTS, with(base.clone(), change.clone())).await;
        assert_bad_field(code, &out, path);
        assert_eq!(out["errors"][path], message, "{change}");
    }
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
}

/// A TC string with these choices.
fn tc_string(choices: Choices) -> String {
    let model = build(&TcfParams::new(300), &choices, chrono::Utc::now()).unwrap();
    assent_tcf::encode(&model).unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn invalid_consent_strings_are_refused_with_the_reason(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let base = notice(&api.org, "u1", json!([{"action": "preference.shown"}]));
    let table = [
        (
            "CQ",
            "is not a valid TCF v2 consent string: core segment: truncated",
        ),
        ("", "must not be empty"),
        ("not-a-tc-string", "is not a valid TCF v2 consent string: "),
        (
            "DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
            "is not a valid TCF v2 consent string: ",
        ),
    ];
    for (string, reason) in table {
        for regulation in ["gdpr", "tcf"] {
            let body = with(
                base.clone(),
                json!({"consent_string": string, "regulation": regulation}),
            );
            let (code, out) = api.post(EVENTS, body).await;
            assert_bad_field(code, &out, "consent_string");
            let message = out["errors"]["consent_string"].as_str().unwrap();
            assert!(message.starts_with(reason), "{string:?}: {message}");
        }
    }
    let (code, out) = api
        .post(EVENTS, with(base.clone(), json!({"consent_string": 7})))
        .await;
    assert_bad_field(code, &out, "consent_string");
    // The same notice generated by the server instead is refused too: the shape has no iab.
    let (code, out) = api
        .post(
            "/v1/consents/events?$generate_tcfcs=true",
            with(
                base.clone(),
                json!({"consent_string": tc_string(Choices::default())}),
            ),
        )
        .await;
    assert_bad_field(code, &out, "consent_string");
    assert_eq!(api.user_status_code("u1").await, StatusCode::NOT_FOUND);
    // A valid string is stored as consents.tcfcs.
    let string = tc_string(Choices::default());
    let stored = ok(&api, with(base, json!({"consent_string": string}))).await;
    assert_eq!(stored["consents"]["tcfcs"], string.as_str());
    assert_eq!(status(&api, "u1", "gdpr").await["tcfcs"], string.as_str());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn regulation_none_is_stored_and_listed_but_changes_no_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let org = api.org.clone();
    ok(
        &api,
        notice(
            &org,
            "u1",
            json!([{"action": "consent.given", "purpose": "p"}]),
        ),
    )
    .await;
    let before = status(&api, "u1", "gdpr").await;
    let none = with(
        notice(
            &org,
            "u1",
            json!([{"action": "consent.refused", "purpose": "p"},
                   {"action": "consent.given", "vendor": "g"}]),
        ),
        json!({"id": "none-1", "regulation": "none", "user": {"id": "u1", "country": "DE"}}),
    );
    let stored = ok(&api, none).await;
    assert_eq!(stored["regulation"], "none");
    assert_eq!(
        stored["consents"]["purposes"][0]["enabled"], false,
        "stored as sent"
    );
    // API-shape events under `none` change nothing either.
    api.event(json!({"user": {"id": "u1"}, "regulation": "none",
                     "consents": {"purposes": [{"id": "p", "enabled": false}]}}))
        .await;

    assert_eq!(status(&api, "u1", "gdpr").await, before);
    let under_none = status(&api, "u1", "none").await;
    assert_eq!(under_none["purposes"], json!([]), "{under_none}");
    assert_eq!(under_none["vendors"]["enabled"], json!([]), "{under_none}");
    assert_eq!(
        api.user("u1").await["country"],
        "DE",
        "the profile still changes"
    );
    let listed = api.events("user_id=u1&regulation=none").await;
    assert_eq!(listed["total"], 2, "{listed}");
    assert_eq!(listed["data"][0]["id"], "none-1");
    // A point-in-time read and a refold (after a deletion) skip it too.
    let (code, at) = api
        .get("/v1/consents/users/u1?regulation=none&at=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(code, StatusCode::OK, "{at}");
    assert_eq!(at["consents"]["purposes"], json!([]));
    let (code, _) = api.delete("/v1/consents/events/none-1").await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert_eq!(status(&api, "u1", "gdpr").await, before);
    assert_eq!(status(&api, "u1", "none").await["purposes"], json!([]));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_listed_regulation_has_its_own_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let regulations = [
        "gdpr",
        "ccpa",
        "vcdpa",
        "ctdpa",
        "cpa",
        "utah",
        "cdpa",
        "tcf",
        "gpp",
        "chilean-law-25",
        "australian-privacy",
    ];
    let batch: Vec<Value> = regulations
        .iter()
        .map(|r| {
            with(
                notice(
                    &api.org,
                    "u1",
                    json!([{"action": "consent.given", "purpose": format!("p-{r}")}]),
                ),
                json!({"regulation": r}),
            )
        })
        .collect();
    ok(&api, Value::Array(batch)).await;
    for r in regulations {
        let consents = status(&api, "u1", r).await;
        let ids: Vec<&str> = consents["purposes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![format!("p-{r}")], "{r}");
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn regulation_tcf_applies_the_strings_purposes_and_vendors(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let string = tc_string(Choices {
        purpose_consents: vec![1, 3],
        purpose_legitimate_interests: vec![7],
        special_features: vec![1],
        vendor_consents: vec![755],
        vendor_legitimate_interests: vec![28],
        vendors_disclosed: vec![28, 91, 755],
        ..Choices::default()
    });
    let body = with(
        notice(
            &api.org,
            "u1",
            json!([{"action": "consent.refused", "purpose": "cookies"},
                   {"action": "consent.given", "purpose": "newsletter"}]),
        ),
        json!({"consent_string": string, "regulation": "tcf"}),
    );
    ok(&api, body.clone()).await;
    let consents = status(&api, "u1", "tcf").await;
    let expected = [
        ("cookies", json!(false), Value::Null),
        ("select_basic_ads", json!(false), json!(false)),
        ("create_ads_profile", json!(true), Value::Null),
        ("select_personalized_ads", json!(false), Value::Null),
        ("measure_ad_performance", json!(false), json!(true)),
        ("improve_products", json!(false), json!(false)),
        ("geolocation_data", json!(true), Value::Null),
        ("device_characteristics", json!(false), Value::Null),
        ("newsletter", json!(true), Value::Null),
    ];
    for (id, enabled, li) in expected {
        assert_eq!(purpose_of(&consents, id), Some((enabled, li)), "{id}");
    }
    assert_eq!(
        consents["purposes"].as_array().unwrap().len(),
        14,
        "{consents}"
    );
    assert_eq!(
        consents["vendors"],
        json!({"enabled": ["iab:755"], "disabled": ["iab:28", "iab:91"],
               "enabled_li": ["iab:28"], "disabled_li": ["iab:755", "iab:91"]})
    );
    assert_eq!(consents["tcfcs"], string.as_str());

    // Under another regulation the string is stored, and only the actions apply.
    ok(
        &api,
        with(body, json!({"regulation": "gdpr", "user": {"id": "u2"}})),
    )
    .await;
    let consents = status(&api, "u2", "gdpr").await;
    assert_eq!(consents["tcfcs"], string.as_str());
    let ids: Vec<&str> = consents["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["cookies", "newsletter"]);
    assert_eq!(consents["vendors"]["enabled"], json!([]));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn source_type_notice_id_region_and_actions_are_filterable(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let org = api.org.clone();
    let shown = json!([{"action": "preference.shown"}]);
    let given = json!([{"action": "consent.given", "purpose": "p"}]);
    for (id, source, notice_id, region, events) in [
        ("web-1", "web", "n1", "BY", &shown),
        ("ios-1", "ios", "n1", "IDF", &given),
        ("ios-2", "ios", "n2", "IDF", &shown),
    ] {
        ok(
            &api,
            json!({"id": id, "organization_id": org, "notice_id": notice_id,
                   "user": {"id": "u1", "region": region},
                   "source": {"type": source, "sdk_version": "2.1.0"}, "events": events}),
        )
        .await;
    }
    api.event(json!({"id": "api-1", "user": {"id": "u1"}}))
        .await;
    let table = [
        ("source.type=ios", vec!["ios-1", "ios-2"]),
        (
            "source.type[$in]=web&source.type[$in]=android",
            vec!["web-1"],
        ),
        ("notice_id=n1", vec!["web-1", "ios-1"]),
        ("notice_id[$ne]=n1", vec!["ios-2", "api-1"]),
        ("source.type=ios&notice_id=n2", vec!["ios-2"]),
        ("source.sdk_version=2.1.0", vec!["web-1", "ios-1", "ios-2"]),
        ("user.region=IDF", vec!["ios-1", "ios-2"]),
        (
            "metadata.notice_actions=preference.shown",
            vec!["web-1", "ios-2"],
        ),
    ];
    for (filter, expected) in table {
        let page = api.events(&format!("user_id=u1&{filter}")).await;
        assert_eq!(page["total"], expected.len(), "{filter}: {page}");
        let ids: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected, "{filter}");
    }
    let stored = &api.events("user_id=u1&notice_id=n2").await["data"][0];
    assert_eq!(
        stored["source"],
        json!({"type": "ios", "sdk_version": "2.1.0"})
    );
    assert_eq!(stored["user"]["region"], "IDF");
    assert_eq!(
        stored["metadata"],
        json!({"notice_actions": ["preference.shown"]})
    );
    // A notice that only shows changes nothing.
    let consents = status(&api, "u1", "gdpr").await;
    assert_eq!(purpose_of(&consents, "p"), Some((json!(true), Value::Null)));
    assert_eq!(consents["purposes"].as_array().unwrap().len(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_notice_reads_back_as_written_with_format_notice(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let string = tc_string(Choices {
        purpose_consents: vec![1],
        ..Choices::default()
    });
    let full = json!({
        "id": "full", "organization_id": api.org, "notice_id": "notice-7",
        "user": {"id": "crm-42", "type": "external", "country": "FR", "region": "IDF"},
        "regulation": "tcf", "consent_string": string,
        "events": [
            {"action": "preference.shown"},
            {"action": "preferences.click.savechoices"},
            {"action": "consent.given", "purpose": "analytics", "legal_basis": "consent"},
            {"action": "consent.refused", "vendor": "iab:755", "value": false,
             "legal_basis": "legitimate_interest"}
        ],
        "source": {"type": "react-native", "sdk_version": "3.4.0",
                   "url": "https://www.example.com/page?x=1"},
        "created_at": "2024-03-01T10:00:00.000Z", "updated_at": "2024-03-01T10:00:05.000Z"
    });
    ok(&api, full.clone()).await;
    let page = api
        .events("organization_user_id=crm-42&regulation=tcf&$format=notice")
        .await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["data"][0], full, "read back as written");

    // Server-filled fields are added; dates and countries come back normalized.
    let minimal = json!({"organization_id": api.org, "user": {"id": "u1", "country": "de"},
        "events": [{"action": "preferences.click.agreetoall", "purpose": "p"}],
        "created_at": "2024-03-01T12:00:00+02:00"});
    let stored = ok(&api, minimal).await;
    let page = api.events("user_id=u1&$format=notice").await;
    assert_eq!(
        page["data"][0],
        json!({"id": stored["id"], "organization_id": api.org,
               "user": {"id": "u1", "country": "DE"}, "regulation": "gdpr",
               "events": [{"action": "preferences.click.agreetoall", "purpose": "p"}],
               "created_at": "2024-03-01T10:00:00.000Z", "updated_at": stored["updated_at"]})
    );

    // An event of the Consents API shape is shown as the actions its choices are.
    let api_event = api
        .event(json!({"user": {"id": "u1", "organization_user_id": "o1"},
            "created_at": "2024-03-02T00:00:00Z", "regulation": "gdpr",
            "consents": {"purposes": [{"id": "a", "enabled": true, "enabled_li": false}],
                         "channels": [{"id": "email", "enabled": true}],
                         "vendors": {"disabled": ["v"]}}}))
        .await;
    let page = api.events("user_id=u1&$format=notice").await;
    assert_eq!(page["total"], 2);
    assert_eq!(
        page["data"][1],
        json!({"id": api_event["id"], "organization_id": api.org,
               "user": {"id": "u1", "type": "didomi"}, "regulation": "gdpr",
               "events": [
                   {"action": "consent.given", "purpose": "a"},
                   {"action": "consent.refused", "purpose": "a",
                    "legal_basis": "legitimate_interest"},
                   {"action": "consent.refused", "vendor": "v"}
               ],
               "created_at": "2024-03-02T00:00:00.000Z",
               "updated_at": api_event["updated_at"]})
    );

    // The default shape is unchanged; another $format is refused, naming it.
    let page = api.events("user_id=u1").await;
    assert_eq!(page["data"][0]["status"], "confirmed");
    assert_eq!(page["data"][0]["consents"]["purposes"][0]["id"], "p");
    for bad in ["csv", "", "NOTICE"] {
        let (code, out) = api.get(&format!("{EVENTS}?user_id=u1&$format={bad}")).await;
        assert_bad_field(code, &out, "$format");
        assert_eq!(
            out["errors"]["$format"],
            "must be 'notice' (leave $format out for the Consents API shape)"
        );
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn patching_a_notice_events_consents_rewrites_its_actions(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    ok(
        &api,
        with(
            notice(
                &api.org,
                "u1",
                json!([{"action": "preferences.click.agreetoall", "purpose": "p"}]),
            ),
            json!({"id": "n1", "notice_id": "nt"}),
        ),
    )
    .await;
    let (code, patched) = api
        .patch(
            "/v1/consents/events/n1",
            json!({"consents": {"purposes": [{"id": "p", "enabled": false}]}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["notice_id"], "nt");
    let page = api.events("user_id=u1&$format=notice").await;
    assert_eq!(
        page["data"][0]["events"],
        json!([{"action": "consent.refused", "purpose": "p"}])
    );
    assert_eq!(page["data"][0]["notice_id"], "nt");
    let consents = status(&api, "u1", "gdpr").await;
    assert_eq!(
        purpose_of(&consents, "p"),
        Some((json!(false), Value::Null))
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_consent_token_writes_notice_events_for_its_user_only(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let bob = api
        .event(json!({"user": {"organization_user_id": "bob"}}))
        .await["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, token) = api
        .post(
            "/v1/consents/tokens",
            json!({"organization_user_id": "alice", "event": {"metadata": {"via": "token"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{token}");
    let alice = Api {
        token: token["id_token"].as_str().unwrap().to_owned(),
        ..api.clone()
    };
    let given = json!([{"action": "consent.given", "purpose": "p"}]);
    let org = api.org.clone();
    for user in [
        json!({"id": "bob", "type": "external"}),
        json!({"id": bob}),
        json!({"id": "someone-else"}),
    ] {
        let body = json!({"organization_id": org, "user": user, "events": given});
        let (code, out) = alice.post(EVENTS, body.clone()).await;
        assert_error(code, &out, 403, "Forbidden");
        // Hidden in a batch behind an event of its own user, too.
        let own = json!({"organization_id": org, "user": {"id": "alice", "type": "external"},
                         "events": given});
        let (code, out) = alice.post(EVENTS, json!([own, body])).await;
        assert_error(code, &out, 403, "Forbidden");
    }
    assert_eq!(api.events("organization_user_id=alice").await["total"], 0);
    assert_eq!(api.events("organization_user_id=bob").await["total"], 1);

    for user in [json!({"id": "alice", "type": "external"}), json!({})] {
        let stored = ok(
            &alice,
            json!({"organization_id": org, "user": user, "events": given}),
        )
        .await;
        assert_eq!(stored["user"]["organization_user_id"], "alice");
        assert_eq!(
            stored["metadata"],
            json!({"notice_actions": ["consent.given"], "via": "token"})
        );
    }
    let user = api.user_by_ouid("alice").await;
    assert_eq!(user["consents"]["purposes"][0]["enabled"], true);
    assert_eq!(api.events("organization_user_id=alice").await["total"], 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn notice_events_reach_webhooks_as_consent_events(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let receiver = Receiver::start(Mode::Ok).await;
    event_hook(&api, &receiver).await;
    let stored = ok(
        &api,
        json!({"organization_id": api.org, "notice_id": "nt", "user": {"id": "u1"},
               "source": {"type": "amp"},
               "events": [{"action": "consent.given", "purpose": "p"}]}),
    )
    .await;
    receiver
        .wait_for(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    let got = receiver.acknowledged();
    assert_eq!(got[0].body["type"], "event.created");
    let entity = &got[0].body["parameters"]["entity"];
    assert_eq!(*entity, stored);
    assert_eq!(entity["notice_id"], "nt");
    assert_eq!(entity["source"], json!({"type": "amp"}));
    assert_eq!(
        entity["consents"]["purposes"][0],
        json!({"id": "p", "enabled": true})
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_notice_shape() {
    let server = TestServer::start().await;
    let (code, doc) = server
        .raw(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(code, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let notice_in = &schemas["NoticeEventIn"];
    let mut required: Vec<&str> = notice_in["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["events", "organization_id", "user"]);
    let actions = &schemas["NoticeAction"]["enum"];
    assert_eq!(*actions, json!(ACTIONS));
    assert_eq!(
        schemas["NoticeRegulation"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    assert!(schemas["NoticeEventView"]["properties"]["events"].is_object());
    assert!(schemas["EventView"]["properties"]["notice_id"].is_object());
    let has_format = |method: &str| {
        doc["paths"]["/v1/consents/events"][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "$format")
    };
    assert!(has_format("get"), "the list takes $format");
    let format = doc["paths"]["/v1/consents/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "$format")
        .unwrap();
    assert_eq!(
        format["schema"]["enum"],
        json!(["notice"]),
        "inline, so that no reference dangles: {format}"
    );
    assert!(!has_format("delete"), "deleting by filter does not");
}
