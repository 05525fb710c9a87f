//! How events make a user's status (API.md §3.4): merge by id, stamps that make the result
//! independent of arrival order, null choices, vendors, metadata, countries, pending events and
//! regulations.

use crate::common::Backend;
use crate::common::{Api, TestServer, channel, purpose, purpose_enabled};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::{Value, json};

async fn choose(api: &Api, user: &str, created_at: &str, purposes: Value) -> Value {
    api.event(json!({
        "created_at": created_at,
        "user": {"id": user},
        "consents": {"purposes": purposes}
    }))
    .await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn late_event_does_not_override_newer_choice(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-02-01T00:00:00Z",
        json!([{"id": "newsletter", "enabled": false}]),
    )
    .await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "newsletter", "enabled": true}, {"id": "sms", "enabled": true}]),
    )
    .await;
    let user = api.user("u1").await;
    assert_eq!(
        purpose_enabled(&user, "newsletter"),
        Some(false),
        "the newer choice stands"
    );
    assert_eq!(
        purpose_enabled(&user, "sms"),
        Some(true),
        "the late event still sets what no later event set"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_status_does_not_depend_on_arrival_order(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let events = [
        json!({"created_at": "2024-01-01T00:00:00Z", "user": {"metadata": {"a": 1, "b": 1}, "last_seen_country": "DE"},
               "consents": {"purposes": [{"id": "p", "enabled": true, "metadata": {"k": "old"}}],
                            "vendors": {"enabled": ["google"]}, "channels": [{"id": "email", "enabled": true}]}}),
        json!({"created_at": "2024-03-01T00:00:00Z", "user": {"metadata": {"b": 3}},
               "consents": {"purposes": [{"id": "p", "enabled": false}], "vendors": {"disabled": ["google"]}}}),
        json!({"created_at": "2024-02-01T00:00:00Z", "user": {"metadata": {"a": 2, "b": 2}, "last_seen_country": "FR"},
               "consents": {"purposes": [{"id": "p", "enabled": true, "metadata": {"k": "mid"}}, {"id": "q", "enabled_li": false}],
                            "channels": [{"id": "email", "enabled": false}]}}),
    ];
    let orders = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]];
    let mut statuses = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let user_id = format!("user-{n}");
        for &i in order {
            let mut e = events[i].clone();
            e["user"]["id"] = json!(user_id);
            api.event(e).await;
        }
        let user = api.user(&user_id).await;
        statuses.push((
            user["consents"].clone(),
            user["metadata"].clone(),
            user["last_seen_country"].clone(),
        ));
    }
    for s in &statuses[1..] {
        assert_eq!(s, &statuses[0], "every arrival order gives the same status");
    }
    let (consents, metadata, country) = &statuses[0];
    let user = json!({"consents": consents});
    assert_eq!(purpose_enabled(&user, "p"), Some(false));
    assert_eq!(purpose(&user, "p").unwrap()["metadata"]["k"], "mid");
    assert_eq!(purpose(&user, "q").unwrap()["enabled_li"], false);
    assert_eq!(consents["vendors"]["disabled"], json!(["google"]));
    assert_eq!(consents["vendors"]["enabled"], json!([]));
    assert_eq!(
        channel(&consents["channels"], "email").unwrap()["enabled"],
        false
    );
    assert_eq!(metadata, &json!({"a": 2, "b": 3}));
    assert_eq!(country, "FR");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn events_at_the_same_instant_apply_in_arrival_order(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let at = "2024-01-01T00:00:00Z";
    choose(&api, "u1", at, json!([{"id": "p", "enabled": true}])).await;
    choose(&api, "u1", at, json!([{"id": "p", "enabled": false}])).await;
    assert_eq!(purpose_enabled(&api.user("u1").await, "p"), Some(false));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_null_choice_leaves_the_earlier_choice_in_place(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "p", "enabled": true, "enabled_li": false}]),
    )
    .await;
    choose(
        &api,
        "u1",
        "2024-02-01T00:00:00Z",
        json!([{"id": "p", "enabled": null, "enabled_li": null}]),
    )
    .await;
    choose(&api, "u1", "2024-03-01T00:00:00Z", json!([{"id": "p"}])).await;
    let user = api.user("u1").await;
    let p = purpose(&user, "p").unwrap();
    assert_eq!(p["enabled"], true);
    assert_eq!(p["enabled_li"], false);
    api.event(
        json!({"user": {"id": "u1"}, "consents": {"channels": [{"id": "email", "enabled": true}]}}),
    )
    .await;
    api.event(
        json!({"user": {"id": "u1"}, "consents": {"channels": [{"id": "email", "enabled": null}]}}),
    )
    .await;
    let user = api.user("u1").await;
    assert_eq!(
        channel(&user["consents"]["channels"], "email").unwrap()["enabled"],
        true
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_purpose_never_chosen_shows_null(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "p", "enabled_li": true}]),
    )
    .await;
    let user = api.user("u1").await;
    let p = purpose(&user, "p").expect("the purpose is listed");
    assert_eq!(p["enabled"], Value::Null);
    assert_eq!(p["enabled_li"], true);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn purposes_merge_by_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "a", "enabled": true}, {"id": "b", "enabled": true}]),
    )
    .await;
    choose(
        &api,
        "u1",
        "2024-02-01T00:00:00Z",
        json!([{"id": "b", "enabled": false}, {"id": "c", "enabled": true}]),
    )
    .await;
    let user = api.user("u1").await;
    assert_eq!(purpose_enabled(&user, "a"), Some(true));
    assert_eq!(purpose_enabled(&user, "b"), Some(false));
    assert_eq!(purpose_enabled(&user, "c"), Some(true));
    assert_eq!(user["consents"]["purposes"].as_array().unwrap().len(), 3);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn purpose_values_preferences_channels_and_metadata_merge_by_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{
            "id": "newsletter", "enabled": true,
            "metadata": {"source": "form", "campaign": "spring"},
            "values": {"topics": {"value": "tech,sport"}, "frequency": {"value": "weekly"}},
            "preferences": [{"id": "weekly", "enabled": true, "metadata": {"m": 1},
                             "channels": [{"id": "email", "enabled": true}, {"id": "sms", "enabled": true}]}],
            "channels": [{"id": "push", "enabled": true}]
        }]),
    )
    .await;
    choose(
        &api,
        "u1",
        "2024-02-01T00:00:00Z",
        json!([{
            "id": "newsletter",
            "metadata": {"campaign": "summer"},
            "values": {"topics": {"value": "music"}},
            "preferences": [{"id": "weekly", "channels": [{"id": "sms", "enabled": false}]},
                            {"id": "monthly", "enabled": false}],
            "channels": [{"id": "mail", "enabled": false}]
        }]),
    )
    .await;
    let user = api.user("u1").await;
    let p = purpose(&user, "newsletter").unwrap();
    assert_eq!(p["enabled"], true, "not mentioned later, kept");
    assert_eq!(
        p["metadata"],
        json!({"source": "form", "campaign": "summer"})
    );
    assert_eq!(p["values"]["topics"]["value"], "music");
    assert_eq!(p["values"]["frequency"]["value"], "weekly");
    let prefs = p["preferences"].as_array().unwrap();
    let weekly = prefs.iter().find(|x| x["id"] == "weekly").unwrap();
    let monthly = prefs.iter().find(|x| x["id"] == "monthly").unwrap();
    assert_eq!(weekly["enabled"], true);
    assert_eq!(weekly["metadata"]["m"], 1);
    assert_eq!(
        channel(&weekly["channels"], "email").unwrap()["enabled"],
        true
    );
    assert_eq!(
        channel(&weekly["channels"], "sms").unwrap()["enabled"],
        false
    );
    assert_eq!(monthly["enabled"], false);
    assert_eq!(channel(&p["channels"], "push").unwrap()["enabled"], true);
    assert_eq!(channel(&p["channels"], "mail").unwrap()["enabled"], false);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn top_level_channels_merge_by_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"created_at": "2024-01-01T00:00:00Z", "user": {"id": "u1"},
        "consents": {"channels": [{"id": "email", "enabled": true, "metadata": {"a": 1}}, {"id": "sms", "enabled": true}]}}))
        .await;
    api.event(json!({"created_at": "2024-02-01T00:00:00Z", "user": {"id": "u1"},
        "consents": {"channels": [{"id": "sms", "enabled": false, "metadata": {"b": 2}}, {"id": "phone", "enabled": true}]}}))
        .await;
    let user = api.user("u1").await;
    let channels = &user["consents"]["channels"];
    assert_eq!(channels.as_array().unwrap().len(), 3, "{channels}");
    assert_eq!(channel(channels, "email").unwrap()["enabled"], true);
    assert_eq!(
        channel(channels, "email").unwrap()["metadata"],
        json!({"a": 1})
    );
    assert_eq!(channel(channels, "sms").unwrap()["enabled"], false);
    assert_eq!(
        channel(channels, "sms").unwrap()["metadata"],
        json!({"b": 2})
    );
    assert_eq!(channel(channels, "phone").unwrap()["enabled"], true);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_vendor_switches_between_enabled_and_disabled(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let vendors = |v: Value| json!({"user": {"id": "u1"}, "consents": {"vendors": v}});
    api.event(vendors(
        json!({"enabled": ["google", "meta"], "enabled_li": ["criteo"]}),
    ))
    .await;
    let user = api.user("u1").await;
    assert_eq!(
        user["consents"]["vendors"]["enabled"],
        json!(["google", "meta"])
    );

    api.event(vendors(
        json!({"disabled": ["google"], "disabled_li": ["criteo"]}),
    ))
    .await;
    let v = api.user("u1").await["consents"]["vendors"].clone();
    assert_eq!(v["enabled"], json!(["meta"]));
    assert_eq!(v["disabled"], json!(["google"]));
    assert_eq!(v["enabled_li"], json!([]));
    assert_eq!(v["disabled_li"], json!(["criteo"]));

    api.event(vendors(
        json!({"enabled": ["google"], "enabled_li": ["criteo"]}),
    ))
    .await;
    let v = api.user("u1").await["consents"]["vendors"].clone();
    assert_eq!(v["enabled"], json!(["google", "meta"]));
    assert_eq!(v["disabled"], json!([]));
    assert_eq!(v["enabled_li"], json!(["criteo"]));
    assert_eq!(v["disabled_li"], json!([]));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_vendor_both_enabled_and_disabled_in_one_event_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let (status, body) = api
        .post(
            "/v1/consents/events",
            json!({"user": {"id": "u1"}, "consents": {"vendors": {"enabled": ["g"], "disabled": ["g"]}}}),
        )
        .await;
    crate::common::assert_bad_field(status, &body, "consents.vendors.disabled[0]");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_latest_tcf_string_wins(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let tcf = |at: &str, s: &str| json!({"created_at": at, "user": {"id": "u1"}, "consents": {"tcfcs": s}});
    let newer = "CPSG_8APSG_8ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA";
    let older = "COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA";
    api.event(tcf("2024-02-01T00:00:00Z", newer)).await;
    api.event(tcf("2024-01-01T00:00:00Z", older)).await;
    assert_eq!(api.user("u1").await["consents"]["tcfcs"], newer);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn user_metadata_merges_by_key_into_the_user(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"user": {"id": "u1", "metadata": {"a": 1, "b": "one", "nested": {"x": 1}}}}))
        .await;
    api.event(json!({"user": {"id": "u1", "metadata": {"b": "two", "c": true}}}))
        .await;
    let user = api.user("u1").await;
    assert_eq!(
        user["metadata"],
        json!({"a": 1, "b": "two", "c": true, "nested": {"x": 1}})
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn last_seen_country_comes_from_the_latest_event_that_carries_one(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    let seen = |at: &str, c: Option<&str>| {
        let mut e = json!({"created_at": at, "user": {"id": "u1"}});
        if let Some(c) = c {
            e["user"]["last_seen_country"] = json!(c);
        }
        e
    };
    api.event(seen("2024-02-01T00:00:00Z", Some("FR"))).await;
    api.event(seen("2024-01-01T00:00:00Z", Some("DE"))).await;
    assert_eq!(
        api.user("u1").await["last_seen_country"],
        "FR",
        "an older event does not win"
    );
    api.event(seen("2024-03-01T00:00:00Z", None)).await;
    assert_eq!(
        api.user("u1").await["last_seen_country"],
        "FR",
        "an event without one changes nothing"
    );
    api.event(seen("2024-04-01T00:00:00Z", Some("es"))).await;
    assert_eq!(api.user("u1").await["last_seen_country"], "ES");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_pending_event_is_stored_and_listed_but_changes_nothing_until_confirmed(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "newsletter", "enabled": false}]),
    )
    .await;
    let pending = api
        .event(json!({
            "id": "pending-1",
            "status": "pending_approval",
            "created_at": "2024-02-01T00:00:00Z",
            "user": {"id": "u1", "metadata": {"double_opt_in": "sent"}},
            "consents": {"purposes": [{"id": "newsletter", "enabled": true}, {"id": "sms", "enabled": true}]}
        }))
        .await;
    assert_eq!(pending["status"], "pending_approval");

    let user = api.user("u1").await;
    assert_eq!(purpose_enabled(&user, "newsletter"), Some(false));
    assert!(purpose(&user, "sms").is_none(), "{user}");
    assert!(user["metadata"].get("double_opt_in").is_none(), "{user}");

    assert!(
        !api.event_ids("user_id=u1")
            .await
            .contains(&"pending-1".to_owned()),
        "the default listing shows confirmed events only"
    );
    assert_eq!(
        api.event_ids("user_id=u1&status=pending_approval").await,
        ["pending-1"]
    );
    assert_eq!(
        api.event_ids("user_id=u1&status[$in]=confirmed&status[$in]=pending_approval")
            .await
            .len(),
        2
    );
    let (status, got) = api.get("/v1/consents/events/pending-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["status"], "pending_approval");

    let (status, patched) = api
        .patch(
            "/v1/consents/events/pending-1",
            json!({"status": "confirmed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["status"], "confirmed");
    let user = api.user("u1").await;
    assert_eq!(purpose_enabled(&user, "newsletter"), Some(true));
    assert_eq!(purpose_enabled(&user, "sms"), Some(true));
    assert_eq!(user["metadata"]["double_opt_in"], "sent");
    assert_eq!(api.event_ids("user_id=u1").await.len(), 2);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_confirmed_event_set_back_to_pending_stops_counting(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    choose(
        &api,
        "u1",
        "2024-01-01T00:00:00Z",
        json!([{"id": "p", "enabled": false}]),
    )
    .await;
    let e = choose(
        &api,
        "u1",
        "2024-02-01T00:00:00Z",
        json!([{"id": "p", "enabled": true}]),
    )
    .await;
    assert_eq!(purpose_enabled(&api.user("u1").await, "p"), Some(true));
    let id = e["id"].as_str().unwrap();
    let (status, _) = api
        .patch(
            &format!("/v1/consents/events/{id}"),
            json!({"status": "pending_approval"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(purpose_enabled(&api.user("u1").await, "p"), Some(false));
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn each_regulation_has_its_own_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({"id": "g1", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "sale", "enabled": true}]}}))
        .await;
    api.event(json!({"id": "c1", "regulation": "ccpa", "user": {"id": "u1"},
                     "consents": {"purposes": [{"id": "sale", "enabled": false}, {"id": "share", "enabled": false}]}}))
        .await;
    let gdpr = api.user("u1").await;
    assert_eq!(purpose_enabled(&gdpr, "sale"), Some(true));
    assert!(purpose(&gdpr, "share").is_none());
    let (status, ccpa) = api.get("/v1/consents/users/u1?regulation=ccpa").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(purpose_enabled(&ccpa, "sale"), Some(false));
    assert_eq!(purpose_enabled(&ccpa, "share"), Some(false));
    let (_, explicit) = api.get("/v1/consents/users/u1?regulation=gdpr").await;
    assert_eq!(explicit["consents"], gdpr["consents"]);
    let (_, lgpd) = api.get("/v1/consents/users/u1?regulation=lgpd").await;
    assert_eq!(lgpd["consents"]["purposes"], json!([]));

    assert_eq!(
        api.event_ids("user_id=u1").await,
        ["g1"],
        "events default to gdpr"
    );
    assert_eq!(api.event_ids("user_id=u1&regulation=ccpa").await, ["c1"]);
    assert_eq!(
        api.event_ids("user_id=u1&regulation[$in]=gdpr&regulation[$in]=ccpa")
            .await
            .len(),
        2
    );
    let (status, body) = api.get("/v1/consents/users/u1?regulation=CCPA").await;
    crate::common::assert_bad_field(status, &body, "regulation");
    server.stop().await;
}
