//! The purpose registry (`/v1/purposes`), organization settings and strict mode
//! (`/v1/settings`), the preference center's look (`/v1/preference-center`) and consent
//! statistics (`/v1/stats/consents`), with what they change for events: the version in force
//! of each registered purpose an event names, and refusals in strict mode.

use crate::common::{Api, Backend, TestServer, assert_bad_field, assert_error, test_limits};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

/// A server without rate limits (these tests make many administrative calls) and a client.
async fn start(backend: Backend) -> Option<(TestServer, Api)> {
    let server = TestServer::start_limited(backend, test_limits().without_rate_limits()).await?;
    let api = server.client().await;
    Some((server, api))
}

fn newsletter() -> Value {
    json!({
        "id": "newsletter",
        "labels": {"en": "Newsletter", "fr": "Lettre d'information"},
        "descriptions": {"en": "News about our products"},
        "preferences": [
            {"id": "topics", "labels": {"en": "Topics"}, "values": [
                {"id": "tech", "labels": {"en": "Technology"}},
                {"id": "sport", "labels": {"en": "Sport"}}]},
            {"id": "frequency", "labels": {"en": "Frequency"}, "multiple": false, "values": [
                {"id": "daily", "labels": {"en": "Daily"}},
                {"id": "weekly", "labels": {"en": "Weekly"}}]}],
        "channels": [{"id": "email", "labels": {"en": "Email"}}, {"id": "sms", "labels": {"en": "SMS"}}]
    })
}

async fn create(api: &Api, body: Value) -> Value {
    let (status, out) = api.post("/v1/purposes", body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    out
}

/// A client holding a consent token for end user `ouid` of `api`'s organization.
async fn end_user(api: &Api, ouid: &str) -> Api {
    let (status, out) = api
        .post("/v1/consents/tokens", json!({"organization_user_id": ouid}))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    Api {
        token: out["id_token"].as_str().expect("a token").to_owned(),
        ..api.clone()
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn purposes_are_created_listed_versioned_and_deleted(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    let made = create(&api, newsletter()).await;
    assert_eq!(made["id"], "newsletter");
    assert_eq!(made["organization_id"], api.org);
    assert_eq!(made["version"], 1);
    assert_eq!(made["labels"]["fr"], "Lettre d'information");
    assert_eq!(
        made["preferences"][0]["multiple"], true,
        "multiple defaults to true"
    );
    assert_eq!(made["preferences"][1]["multiple"], false);
    assert_eq!(made["preferences"][0]["descriptions"], json!({}));
    assert_eq!(made["channels"][1]["id"], "sms");
    assert_eq!(made["created_at"], made["updated_at"]);
    let (status, body) = api.post("/v1/purposes", newsletter()).await;
    assert_error(status, &body, 409, "Conflict");

    create(
        &api,
        json!({"id": "analytics", "labels": {"en": "Analytics"}}),
    )
    .await;
    create(&api, json!({"id": "ads", "labels": {"en": "Ads"}})).await;
    let (status, list) = api.get("/v1/purposes").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 3);
    assert_eq!(
        (list["limit"].clone(), list["skip"].clone()),
        (json!(100), json!(0))
    );
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["newsletter", "analytics", "ads"], "creation order");
    let (_, page) = api.get("/v1/purposes?$limit=1&$skip=1").await;
    assert_eq!(page["data"][0]["id"], "analytics");
    assert_eq!(page["total"], 3);

    // A change makes version 2 and keeps version 1.
    let (status, v2) = api
        .patch(
            "/v1/purposes/newsletter",
            json!({"labels": {"en": "Our newsletter"}, "channels": [], "version": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["labels"], json!({"en": "Our newsletter"}));
    assert_eq!(v2["channels"], json!([]));
    assert_eq!(
        v2["preferences"], made["preferences"],
        "fields left out are kept"
    );
    assert_eq!(v2["created_at"], made["created_at"]);
    // Against a version that is no longer current: 409, and nothing changes.
    let (status, body) = api
        .patch(
            "/v1/purposes/newsletter",
            json!({"labels": {"en": "Late"}, "version": 1}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (status, v3) = api
        .patch("/v1/purposes/newsletter", json!({"descriptions": null}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v3}");
    assert_eq!(
        v3["version"], 3,
        "without version, the change applies to the current one"
    );
    assert_eq!(v3["descriptions"], json!({}));

    let (status, current) = api.get("/v1/purposes/newsletter").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(current["version"], 3);
    let (status, first) = api.get("/v1/purposes/newsletter?version=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first, made, "version 1 reads as it was made");
    let (status, body) = api.get("/v1/purposes/newsletter?version=4").await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = api.get("/v1/purposes/newsletter?version=zero").await;
    assert_bad_field(status, &body, "version");
    let (status, versions) = api.get("/v1/purposes/newsletter/versions").await;
    assert_eq!(status, StatusCode::OK, "{versions}");
    assert_eq!(versions["total"], 3);
    let numbers: Vec<u64> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1], "newest first");
    let (_, list) = api.get("/v1/purposes").await;
    assert_eq!(
        list["data"][0]["version"], 3,
        "the list shows current versions"
    );

    for path in ["/v1/purposes/nope", "/v1/purposes/nope/versions"] {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, 404, "NotFound");
    }
    let (status, body) = api
        .patch("/v1/purposes/nope", json!({"labels": {"en": "x"}}))
        .await;
    assert_error(status, &body, 404, "NotFound");

    let (status, body) = api.delete("/v1/purposes/newsletter").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for path in [
        "/v1/purposes/newsletter",
        "/v1/purposes/newsletter?version=1",
        "/v1/purposes/newsletter/versions",
    ] {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, 404, "NotFound");
    }
    let (status, body) = api.delete("/v1/purposes/newsletter").await;
    assert_error(status, &body, 404, "NotFound");
    let (_, list) = api.get("/v1/purposes").await;
    assert_eq!(list["total"], 2);
    // The id is free again, and starts over at version 1, after the others.
    let again = create(&api, newsletter()).await;
    assert_eq!(again["version"], 1);
    let (_, list) = api.get("/v1/purposes").await;
    assert_eq!(list["data"][2]["id"], "newsletter");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn purpose_bodies_are_checked_with_the_path_at_fault(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    let cases = [
        (json!({"labels": {"en": "x"}}), "id"),
        (json!({"id": "x"}), "labels"),
        (json!({"id": "x", "labels": {}}), "labels"),
        (
            json!({"id": "x", "labels": {"english": "x"}}),
            "labels.english",
        ),
        (json!({"id": "x", "labels": {"pt_BR": "x"}}), "labels.pt_BR"),
        (
            json!({"id": "x", "labels": {"en": "l".repeat(201)}}),
            "labels.en",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "descriptions": {"en": "d".repeat(2001)}}),
            "descriptions.en",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "colour": "red"}),
            "colour",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "channels": [{"id": "e", "labels": {"en": "E"}}, {"id": "e", "labels": {"en": "F"}}]}),
            "channels[1].id",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "preferences": [{"id": "p", "labels": {"en": "P"}}, {"id": "p", "labels": {"en": "Q"}}]}),
            "preferences[1].id",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "preferences": [{"id": "p", "labels": {"en": "P"}, "values": [{"id": "v", "labels": {"en": "V"}}, {"id": "v", "labels": {"en": "W"}}]}]}),
            "preferences[0].values[1].id",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "preferences": [{"id": "p", "labels": {"en": "P"}, "multiple": "yes"}]}),
            "preferences[0].multiple",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "preferences": [{"id": "p", "labels": {"en": "P"}, "kind": "radio"}]}),
            "preferences[0].kind",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "channels": [{"id": "e"}]}),
            "channels[0].labels",
        ),
        (
            json!({"id": "x", "labels": {"en": "x"}, "organization_id": "someone-else"}),
            "organization_id",
        ),
    ];
    for (body, path) in cases {
        let (status, out) = api.post("/v1/purposes", body.clone()).await;
        assert_bad_field(status, &out, path);
    }
    let many = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("i{i}"), "labels": {"en": "I"}}))
            .collect()
    };
    let (status, out) = api
        .post(
            "/v1/purposes",
            json!({"id": "x", "labels": {"en": "x"}, "channels": many(21)}),
        )
        .await;
    assert_bad_field(status, &out, "channels");
    let (status, out) = api
        .post(
            "/v1/purposes",
            json!({"id": "x", "labels": {"en": "x"}, "preferences": many(51)}),
        )
        .await;
    assert_bad_field(status, &out, "preferences");
    let (status, out) = api
        .post(
            "/v1/purposes",
            json!({"id": "x", "labels": {"en": "x"},
            "preferences": [{"id": "p", "labels": {"en": "P"}, "values": many(101)}]}),
        )
        .await;
    assert_bad_field(status, &out, "preferences[0].values");
    // The largest lists pass.
    let (status, out) = api
        .post(
            "/v1/purposes",
            json!({"id": "big", "labels": {"en": "x"}, "channels": many(20),
            "preferences": [{"id": "p", "labels": {"en": "P"}, "values": many(100)}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");

    let patches = [
        (json!({}), "body"),
        (json!({"version": 1}), "body"),
        (json!({"labels": null}), "labels"),
        (json!({"labels": {"en": "x"}, "version": 0}), "version"),
        (json!({"labels": {"en": "x"}, "id": "renamed"}), "id"),
        (
            json!({"channels": [{"id": "a", "labels": {"en": "A"}}, {"id": "a", "labels": {"en": "A"}}]}),
            "channels[1].id",
        ),
    ];
    for (body, path) in patches {
        let (status, out) = api.patch("/v1/purposes/big", body.clone()).await;
        assert_bad_field(status, &out, path);
    }
    let (_, big) = api.get("/v1/purposes/big").await;
    assert_eq!(big["version"], 1, "refused changes make no version");
    server.stop().await;
}

#[tokio::test]
async fn an_organization_registers_at_most_500_purposes() {
    let (server, api) = start(Backend::Sqlite).await.expect("SQLite");
    for i in 0..500 {
        let (status, body) = api
            .post(
                "/v1/purposes",
                json!({"id": format!("p{i}"), "labels": {"en": "P"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "purpose {i}: {body}");
    }
    let (status, body) = api
        .post(
            "/v1/purposes",
            json!({"id": "one-too-many", "labels": {"en": "P"}}),
        )
        .await;
    assert_error(status, &body, 409, "Conflict");
    let (_, list) = api.get("/v1/purposes?$limit=1000").await;
    assert_eq!(list["total"], 500);
    let other = server.new_org("other").await;
    let (status, body) = other
        .post("/v1/purposes", json!({"id": "mine", "labels": {"en": "P"}}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the limit is per organization: {body}"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn consent_tokens_read_the_registry_and_the_look_and_change_nothing(
    #[case] backend: Backend,
) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    create(&api, newsletter()).await;
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/v1/preference-center",
            Some(json!({"title": "Acme choices"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let alice = end_user(&api, "alice").await;

    let (status, list) = alice.get("/v1/purposes").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"][0]["id"], "newsletter");
    let (status, one) = alice.get("/v1/purposes/newsletter").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["labels"]["en"], "Newsletter");
    let (status, look) = alice.get("/v1/preference-center").await;
    assert_eq!(status, StatusCode::OK, "{look}");
    assert_eq!(look["title"], "Acme choices");

    let m = reqwest::Method::GET;
    let refused = [
        (
            reqwest::Method::POST,
            "/v1/purposes",
            Some(json!({"id": "x", "labels": {"en": "x"}})),
        ),
        (
            reqwest::Method::PATCH,
            "/v1/purposes/newsletter",
            Some(json!({"labels": {"en": "x"}})),
        ),
        (reqwest::Method::DELETE, "/v1/purposes/newsletter", None),
        (m.clone(), "/v1/purposes/newsletter/versions", None),
        (m.clone(), "/v1/settings", None),
        (
            reqwest::Method::PATCH,
            "/v1/settings",
            Some(json!({"strict_mode": true})),
        ),
        (
            reqwest::Method::PUT,
            "/v1/preference-center",
            Some(json!({"title": "Mine"})),
        ),
        (m.clone(), "/v1/stats/consents", None),
    ];
    for (method, path, body) in refused {
        let (status, out) = alice.send(method.clone(), path, body).await;
        assert_error(status, &out, 403, "Forbidden");
    }
    let (_, current) = api.get("/v1/purposes/newsletter").await;
    assert_eq!(current["version"], 1, "nothing changed");
    let (_, look) = api.get("/v1/preference-center").await;
    assert_eq!(look["title"], "Acme choices");
    let (_, settings) = api.get("/v1/settings").await;
    assert_eq!(settings["strict_mode"], false);

    // A token of another organization reads nothing here.
    let other = server.new_org("other").await;
    let bob = end_user(&other, "bob").await;
    let intruder = Api {
        org: api.org.clone(),
        ..bob
    };
    for path in [
        "/v1/purposes",
        "/v1/purposes/newsletter",
        "/v1/preference-center",
    ] {
        let (status, out) = intruder.get(path).await;
        assert_error(status, &out, 403, "Forbidden");
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn each_organization_has_its_own_registry_settings_and_look(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    create(&api, newsletter()).await;
    api.patch("/v1/settings", json!({"strict_mode": true}))
        .await;
    api.send(
        reqwest::Method::PUT,
        "/v1/preference-center",
        Some(json!({"title": "Default's"})),
    )
    .await;
    let other = server.new_org("other").await;
    let (_, list) = other.get("/v1/purposes").await;
    assert_eq!(list["total"], 0, "{list}");
    let (status, body) = other.get("/v1/purposes/newsletter").await;
    assert_error(status, &body, 404, "NotFound");
    let (status, body) = other.delete("/v1/purposes/newsletter").await;
    assert_error(status, &body, 404, "NotFound");
    // The same id in another organization is another purpose.
    let theirs = create(
        &other,
        json!({"id": "newsletter", "labels": {"en": "Theirs"}}),
    )
    .await;
    assert_eq!(theirs["organization_id"], "other");
    let (_, settings) = other.get("/v1/settings").await;
    assert_eq!(settings["strict_mode"], false);
    let (_, look) = other.get("/v1/preference-center").await;
    assert_eq!(look["title"], "Your privacy choices");
    // Other's events are not held to the default organization's strict mode.
    other
        .event(json!({"user": {"organization_user_id": "x"},
            "consents": {"purposes": [{"id": "anything", "enabled": true}]}}))
        .await;
    let (_, mine) = api.get("/v1/purposes/newsletter").await;
    assert_eq!(mine["labels"]["en"], "Newsletter");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn events_record_the_version_in_force_of_registered_purposes(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    let unregistered = api
        .event(json!({"user": {"organization_user_id": "alice"},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}}))
        .await;
    assert!(
        unregistered.get("purpose_versions").is_none(),
        "{unregistered}"
    );

    create(&api, newsletter()).await;
    create(
        &api,
        json!({"id": "analytics", "labels": {"en": "Analytics"}}),
    )
    .await;
    let first_body = json!({"id": "evt-1", "user": {"organization_user_id": "alice"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": true}, {"id": "other", "enabled": false}]}});
    let first = api.event(first_body.clone()).await;
    assert_eq!(
        first["purpose_versions"],
        json!({"newsletter": 1}),
        "{first}"
    );
    let (_, read) = api.get("/v1/consents/events/evt-1").await;
    assert_eq!(read["purpose_versions"], json!({"newsletter": 1}));
    let listed = api.events("organization_user_id=alice").await;
    assert_eq!(
        listed["data"][1]["purpose_versions"],
        json!({"newsletter": 1})
    );
    let none = api
        .event(json!({"user": {"organization_user_id": "alice"},
            "consents": {"purposes": [{"id": "other", "enabled": true}]}}))
        .await;
    assert!(none.get("purpose_versions").is_none(), "{none}");

    // An edit applies to the very next event.
    let (status, _) = api
        .patch(
            "/v1/purposes/newsletter",
            json!({"labels": {"en": "News v2"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, batch) = api
        .post(
            "/v1/consents/events",
            json!([
                {"user": {"organization_user_id": "bob"},
                 "consents": {"purposes": [{"id": "newsletter", "enabled": true}, {"id": "analytics", "enabled": true}]}},
                {"user": {"organization_user_id": "carol"},
                 "consents": {"purposes": [{"id": "analytics", "enabled": false}]}}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        batch[0]["purpose_versions"],
        json!({"analytics": 1, "newsletter": 2})
    );
    assert_eq!(batch[1]["purpose_versions"], json!({"analytics": 1}));

    // A replay after the edit is still the stored event, with the version it recorded.
    let replay = api.event(first_body.clone()).await;
    assert_eq!(replay, first, "the stored event is returned as it was");
    let mut changed = first_body.clone();
    changed["consents"]["purposes"][0]["enabled"] = json!(false);
    let (status, body) = api.post("/v1/consents/events", changed).await;
    assert_error(status, &body, 409, "Conflict");

    // New consents in a patch record the versions in force now; a status change keeps them.
    let (status, patched) = api
        .patch(
            "/v1/consents/events/evt-1",
            json!({"consents": {"purposes": [{"id": "analytics", "enabled": true}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["purpose_versions"], json!({"analytics": 1}));
    let (status, patched) = api
        .patch("/v1/consents/events/evt-1", json!({"status": "confirmed"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["purpose_versions"], json!({"analytics": 1}));

    // End users' events are stamped too.
    let alice = end_user(&api, "alice").await;
    let (status, own) = alice
        .post(
            "/v1/consents/events",
            json!({"consents": {"purposes": [{"id": "newsletter", "enabled": false}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["purpose_versions"], json!({"newsletter": 2}));
    // Clients cannot set it.
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"organization_user_id": "x"}, "purpose_versions": {"newsletter": 9}}),
        )
        .await;
    assert_bad_field(status, &body, "purpose_versions");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn strict_mode_refuses_what_the_registry_does_not_hold(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    create(&api, newsletter()).await;
    let (status, settings) = api.get("/v1/settings").await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(settings["strict_mode"], false);
    assert_eq!(settings["organization_id"], api.org);
    assert_eq!(settings["updated_at"], Value::Null, "never set");
    let ghost = json!({"user": {"organization_user_id": "alice"},
        "consents": {"purposes": [{"id": "ghost", "enabled": true}]}});
    api.event(ghost.clone()).await;

    let (status, on) = api
        .patch("/v1/settings", json!({"strict_mode": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(on["strict_mode"], true);
    assert!(on["updated_at"].is_string(), "{on}");
    let (_, read) = api.get("/v1/settings").await;
    assert_eq!(read, on);
    for (body, path) in [
        (json!({"strict_mode": "on"}), "strict_mode"),
        (json!({"strict": true}), "strict"),
    ] {
        let (status, out) = api.patch("/v1/settings", body).await;
        assert_bad_field(status, &out, path);
    }

    let purpose = |p: Value| json!({"user": {"organization_user_id": "alice"}, "consents": {"purposes": [p]}});
    let refusals = [
        (ghost.clone(), "consents.purposes[0].id"),
        (
            purpose(json!({"id": "newsletter", "values": {"colour": {"value": "red"}}})),
            "consents.purposes[0].values.colour",
        ),
        (
            purpose(json!({"id": "newsletter", "preferences": [{"id": "mood", "enabled": true}]})),
            "consents.purposes[0].preferences[0].id",
        ),
        (
            purpose(json!({"id": "newsletter", "values": {"topics": {"value": "tech,cooking"}}})),
            "consents.purposes[0].values.topics.value",
        ),
        (
            purpose(
                json!({"id": "newsletter", "values": {"frequency": {"value": "daily,weekly"}}}),
            ),
            "consents.purposes[0].values.frequency.value",
        ),
        (
            purpose(
                json!({"id": "newsletter", "channels": [{"id": "email", "enabled": true}, {"id": "fax", "enabled": true}]}),
            ),
            "consents.purposes[0].channels[1].id",
        ),
    ];
    for (body, path) in refusals {
        let (status, out) = api.post("/v1/consents/events", body.clone()).await;
        assert_bad_field(status, &out, path);
        assert!(
            out["errors"][path].as_str().unwrap().contains("registry"),
            "{out}"
        );
    }
    // Everything the registry holds passes; top-level channels and vendors are not checked.
    let good = api
        .event(
            json!({"user": {"organization_user_id": "alice"}, "consents": {
            "purposes": [{"id": "newsletter", "enabled": true,
                "values": {"topics": {"value": "tech,sport"}, "frequency": {"value": "weekly"}},
                "preferences": [{"id": "topics", "enabled": true}],
                "channels": [{"id": "sms", "enabled": false}]}],
            "channels": [{"id": "pigeon", "enabled": true}],
            "vendors": {"enabled": ["any-vendor"]}}}),
        )
        .await;
    assert_eq!(good["purpose_versions"], json!({"newsletter": 1}));

    // A batch is refused whole, with the index in the path.
    let (status, out) = api
        .post(
            "/v1/consents/events",
            json!([
                {"id": "b-0", "user": {"organization_user_id": "bob"},
                 "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}},
                {"id": "b-1", "user": {"organization_user_id": "bob"},
                 "consents": {"purposes": [{"id": "newsletter"}, {"id": "ghost", "enabled": true}]}}]),
        )
        .await;
    assert_bad_field(status, &out, "[1].consents.purposes[1].id");
    assert_eq!(
        api.event_status_code("b-0").await,
        StatusCode::NOT_FOUND,
        "nothing written"
    );
    assert_eq!(api.events("organization_user_id=bob").await["total"], 0);

    // A patch of an event's consents is held to strict mode too.
    let (status, out) = api
        .patch(
            &format!("/v1/consents/events/{}", good["id"].as_str().unwrap()),
            json!({"consents": {"purposes": [{"id": "ghost", "enabled": false}]}}),
        )
        .await;
    assert_bad_field(status, &out, "consents.purposes[0].id");
    let (_, kept) = api
        .get(&format!(
            "/v1/consents/events/{}",
            good["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(kept["consents"]["purposes"][0]["id"], "newsletter");

    // End users are held to it as well.
    let alice = end_user(&api, "alice").await;
    let (status, out) = alice
        .post(
            "/v1/consents/events",
            json!({"consents": {"purposes": [{"id": "ghost"}]}}),
        )
        .await;
    assert_bad_field(status, &out, "consents.purposes[0].id");

    // Off again: the same event passes at once.
    let (status, off) = api
        .patch("/v1/settings", json!({"strict_mode": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    api.event(ghost).await;
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_preference_center_look_has_defaults_and_must_be_readable(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    let (status, look) = api.get("/v1/preference-center").await;
    assert_eq!(status, StatusCode::OK, "{look}");
    assert_eq!(
        look,
        json!({"organization_id": api.org, "title": "Your privacy choices", "intro": null,
               "logo_url": null, "colors": {"primary": "#1a56db", "background": "#ffffff", "text": "#111827"},
               "default_language": "en", "updated_at": null})
    );
    let put = |body: Value| {
        let api = api.clone();
        async move {
            api.send(reqwest::Method::PUT, "/v1/preference-center", Some(body))
                .await
        }
    };
    let (status, set) = put(
        json!({"title": "Acme", "intro": "Choose what we may send you.",
        "logo_url": "https://cdn.acme.example/logo.svg",
        "colors": {"primary": "#0B5394", "text": "#000000"}, "default_language": "fr"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        set["colors"],
        json!({"primary": "#0b5394", "background": "#ffffff", "text": "#000000"})
    );
    assert_eq!(set["default_language"], "fr");
    assert!(set["updated_at"].is_string());
    let (_, read) = api.get("/v1/preference-center").await;
    assert_eq!(read, set);
    // What GET answers can be sent back as it is.
    let (status, again) = put(read.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["title"], "Acme");

    // PUT replaces: fields left out go back to their defaults.
    let (status, reset) = put(json!({"title": "Only a title"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reset["intro"], Value::Null);
    assert_eq!(reset["colors"]["primary"], "#1a56db");
    assert_eq!(reset["default_language"], "en");

    let refusals = [
        (json!({"title": "t".repeat(121)}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"intro": "i".repeat(1001)}), "intro"),
        (
            json!({"logo_url": "ftp://acme.example/logo.png"}),
            "logo_url",
        ),
        (json!({"logo_url": "/logo.png"}), "logo_url"),
        (
            json!({"logo_url": format!("https://acme.example/{}", "a".repeat(2048))}),
            "logo_url",
        ),
        (json!({"colors": {"primary": "blue"}}), "colors.primary"),
        (json!({"colors": {"text": "#12345"}}), "colors.text"),
        (json!({"colors": {"accent": "#000000"}}), "colors.accent"),
        (json!({"default_language": "French"}), "default_language"),
        (json!({"theme": "dark"}), "theme"),
    ];
    for (body, path) in refusals {
        let (status, out) = put(body.clone()).await;
        assert_bad_field(status, &out, path);
    }
    // Contrast below WCAG 2.1 AA: refused at the colour's path, with the ratio.
    let (status, out) = put(json!({"colors": {"text": "#777777"}})).await;
    assert_bad_field(status, &out, "colors.text");
    assert!(
        out["errors"]["colors.text"]
            .as_str()
            .unwrap()
            .contains("4.47:1"),
        "{out}"
    );
    let (status, out) = put(json!({"colors": {"primary": "#ffff00"}})).await;
    assert_bad_field(status, &out, "colors.primary");
    assert!(
        out["errors"]["colors.primary"]
            .as_str()
            .unwrap()
            .contains("1.07:1"),
        "{out}"
    );
    let (status, out) = put(json!({"colors": {"background": "#111111"}})).await;
    assert_bad_field(status, &out, "colors.text");
    // Just enough contrast passes.
    let (status, out) = put(json!({"colors": {"text": "#767676"}})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (_, read) = api.get("/v1/preference-center").await;
    assert_eq!(
        read["colors"]["text"], "#767676",
        "refused looks changed nothing"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn consent_stats_count_confirmed_events_per_utc_day(#[case] backend: Backend) {
    let Some((server, api)) = start(backend).await else {
        return;
    };
    let at = |user: &str, created_at: &str, purposes: Value| {
        json!({"user": {"organization_user_id": user}, "created_at": created_at,
               "consents": {"purposes": purposes}})
    };
    let n = |v: bool| json!({"id": "newsletter", "enabled": v});
    let a = |v: Value| json!({"id": "analytics", "enabled": v});
    let events = [
        at(
            "u1",
            "2025-03-01T00:00:00Z",
            json!([n(true), a(json!(true))]),
        ),
        at("u2", "2025-03-01T12:00:00+02:00", json!([n(true)])),
        at(
            "u3",
            "2025-03-01T23:59:59.999Z",
            json!([n(false), a(json!(null))]),
        ),
        at("u1", "2025-03-03T00:00:00Z", json!([n(false)])),
        at("u4", "2025-03-03T08:00:00Z", json!([])),
        // The day after, by 1 ms; and before the range.
        at("u5", "2025-03-05T00:00:00Z", json!([n(true)])),
        at("u6", "2025-02-27T23:59:59.999Z", json!([n(true)])),
    ];
    let (status, out) = api
        .post("/v1/consents/events", Value::Array(events.to_vec()))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    // Neither a pending event nor another regulation's counts under gdpr.
    let mut pending = at("u7", "2025-03-02T10:00:00Z", json!([n(true)]));
    pending["status"] = json!("pending_approval");
    api.event(pending).await;
    let mut ccpa = at("u8", "2025-03-02T10:00:00Z", json!([n(false)]));
    ccpa["regulation"] = json!("ccpa");
    api.event(ccpa).await;

    let (status, stats) = api
        .get("/v1/stats/consents?from=2025-02-28&to=2025-03-04&regulation=gdpr")
        .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats,
        json!({"from": "2025-02-28", "to": "2025-03-04", "regulation": "gdpr", "days": [
            {"date": "2025-02-28", "events": 0, "purposes": {}},
            {"date": "2025-03-01", "events": 3, "purposes": {
                "analytics": {"given": 1, "refused": 0},
                "newsletter": {"given": 2, "refused": 1}}},
            {"date": "2025-03-02", "events": 0, "purposes": {}},
            {"date": "2025-03-03", "events": 2, "purposes": {
                "newsletter": {"given": 0, "refused": 1}}},
            {"date": "2025-03-04", "events": 0, "purposes": {}}]})
    );
    let (_, ccpa) = api
        .get("/v1/stats/consents?from=2025-03-02&to=2025-03-02&regulation=ccpa")
        .await;
    assert_eq!(
        ccpa["days"],
        json!([{"date": "2025-03-02", "events": 1, "purposes": {"newsletter": {"given": 0, "refused": 1}}}])
    );
    // Confirming the pending event makes it count.
    let pending_id = api
        .events("organization_user_id=u7&status=pending_approval")
        .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.patch(
        &format!("/v1/consents/events/{pending_id}"),
        json!({"status": "confirmed"}),
    )
    .await;
    let (_, day2) = api
        .get("/v1/stats/consents?from=2025-03-02&to=2025-03-02")
        .await;
    assert_eq!(day2["days"][0]["events"], 1);
    assert_eq!(day2["days"][0]["purposes"]["newsletter"]["given"], 1);

    // The default range: the 30 days up to today.
    let before = chrono::Utc::now().date_naive().to_string();
    let (status, recent) = api.get("/v1/stats/consents").await;
    let after = chrono::Utc::now().date_naive().to_string();
    assert_eq!(status, StatusCode::OK, "{recent}");
    assert_eq!(recent["days"].as_array().unwrap().len(), 30);
    assert!(
        recent["to"] == before || recent["to"] == after,
        "{}",
        recent["to"]
    );
    assert_eq!(recent["regulation"], "gdpr");
    let (_, year) = api
        .get("/v1/stats/consents?from=2025-01-01&to=2026-01-01")
        .await;
    assert_eq!(year["days"].as_array().unwrap().len(), 366);

    for (query, path) in [
        ("from=2025-03-05&to=2025-03-04", "from"),
        ("from=2025-01-01&to=2026-01-02", "to"),
        ("from=2025-3-1", "from"),
        ("to=yesterday", "to"),
        ("regulation=GDPR", "regulation"),
        ("since=2025-01-01", "since"),
    ] {
        let (status, out) = api.get(&format!("/v1/stats/consents?{query}")).await;
        assert_bad_field(status, &out, path);
    }
    // Another organization counts only its own events.
    let other = server.new_org("other").await;
    let (_, theirs) = other
        .get("/v1/stats/consents?from=2025-03-01&to=2025-03-01")
        .await;
    assert_eq!(theirs["days"][0]["events"], 0);
    server.stop().await;
}
