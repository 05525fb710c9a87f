//! `GET /v1/consents/events`: the events of one user, with filters, paging and sorting.

use crate::common::Backend;
use crate::common::{Api, TestServer, assert_bad_field};
use rstest::rstest;
use serde_json::{Value, json};

/// Stores five events of user `u1` (ouid `fay@example.com`), created on the first of months
/// 1..=5 of 2024 but sent in the order 3, 1, 5, 2, 4.
async fn five_events(api: &Api) {
    let events: Vec<Value> = [3, 1, 5, 2, 4]
        .iter()
        .map(|m| {
            json!({
                "id": format!("m{m}"),
                "created_at": format!("2024-0{m}-01T00:00:00Z"),
                "metadata": {"booking_id": if m % 2 == 0 { json!(42) } else { json!(format!("{m}")) },
                             "channel": if *m <= 2 { "web" } else if *m == 3 { "app" } else { "shop" },
                             "nested": {"depth": m}},
                "user": {"id": "u1", "organization_user_id": "fay@example.com",
                         "metadata": {"source": if *m == 5 { "import" } else { "form" }}},
                "consents": {"purposes": [{"id": if *m == 4 { "sms" } else { "newsletter" }, "enabled": true}]}
            })
        })
        .collect();
    let (status, out) = api.post("/v1/consents/events", Value::Array(events)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{out}");
}

async fn ids(api: &Api, filter: &str) -> Vec<String> {
    api.event_ids(&format!("user_id=u1&{filter}")).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_events_requires_user_id_or_organization_user_id(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    for path in [
        "/v1/consents/events",
        "/v1/consents/events?metadata.booking_id=42",
    ] {
        let (status, body) = api.get(path).await;
        assert_bad_field(status, &body, "user_id");
    }
    assert_eq!(
        api.events("organization_user_id=fay%40example.com").await["total"],
        5
    );
    assert_eq!(api.events("user_id=u1").await["total"], 5);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_list_envelope_has_total_limit_skip_and_data_sorted_by_created_at(
    #[case] backend: Backend,
) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    let page = api.events("user_id=u1").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 100, "default page size");
    assert_eq!(page["skip"], 0);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["m1", "m2", "m3", "m4", "m5"],
        "oldest first, whatever the arrival order"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn sort_created_at_descending_lists_newest_first(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    assert_eq!(
        ids(&api, "$sort[created_at]=-1").await,
        ["m5", "m4", "m3", "m2", "m1"]
    );
    assert_eq!(
        ids(&api, "$sort[created_at]=1").await,
        ["m1", "m2", "m3", "m4", "m5"]
    );
    let (status, body) = api
        .get("/v1/consents/events?user_id=u1&$sort[created_at]=2")
        .await;
    assert_bad_field(status, &body, "$sort[created_at]");
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn limit_and_skip_page_through_events_and_total_counts_all_matches(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    let page = api.events("user_id=u1&$limit=2&$skip=1").await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["skip"], 1);
    assert_eq!(crate::common::ids_of(&page["data"]), ["m2", "m3"]);
    let last = api.events("user_id=u1&$limit=2&$skip=4").await;
    assert_eq!(crate::common::ids_of(&last["data"]), ["m5"]);
    let beyond = api.events("user_id=u1&$limit=2&$skip=10").await;
    assert_eq!(beyond["data"], json!([]));
    assert_eq!(beyond["total"], 5);
    let newest = api.events("user_id=u1&$limit=1&$sort[created_at]=-1").await;
    assert_eq!(crate::common::ids_of(&newest["data"]), ["m5"]);
    let filtered = api
        .events("user_id=u1&metadata.booking_id=42&$limit=1")
        .await;
    assert_eq!(filtered["total"], 2, "total counts matches, not the page");
    assert_eq!(api.events("user_id=u1&$limit=1000").await["limit"], 1000);
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_limit_over_1000_or_not_a_number_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    for (q, path) in [
        ("$limit=1001", "$limit"),
        ("$limit=-1", "$limit"),
        ("$limit=ten", "$limit"),
        ("$skip=-5", "$skip"),
    ] {
        let (status, body) = api
            .get(&format!("/v1/consents/events?user_id=u1&{q}"))
            .await;
        assert_bad_field(status, &body, path);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_dotted_metadata_path_filters_on_nested_fields(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    assert_eq!(
        ids(&api, "metadata.booking_id=42").await,
        ["m2", "m4"],
        "numbers match their text"
    );
    assert_eq!(
        ids(&api, "metadata.booking_id=3").await,
        ["m3"],
        "strings match too"
    );
    assert_eq!(ids(&api, "metadata.nested.depth=5").await, ["m5"]);
    assert_eq!(ids(&api, "user.metadata.source=import").await, ["m5"]);
    assert_eq!(ids(&api, "consents.purposes.id=sms").await, ["m4"]);
    assert!(ids(&api, "metadata.booking_id=999").await.is_empty());
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn in_nin_and_ne_filter_on_sets_of_values(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    assert_eq!(
        ids(&api, "metadata.channel[$in]=app&metadata.channel[$in]=shop").await,
        ["m3", "m4", "m5"]
    );
    assert_eq!(
        ids(
            &api,
            "metadata.channel[$nin]=web&metadata.channel[$nin]=shop"
        )
        .await,
        ["m3"]
    );
    assert_eq!(
        ids(&api, "metadata.channel[$ne]=web").await,
        ["m3", "m4", "m5"]
    );
    assert_eq!(ids(&api, "id[$in]=m1&id[$in]=m5").await, ["m1", "m5"]);
    assert_eq!(
        ids(&api, "metadata.channel=web&metadata.booking_id[$ne]=42").await,
        ["m1"],
        "filters combine with AND"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn range_operators_filter_on_created_at(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    let at = "2024-03-01T00:00:00Z";
    assert_eq!(
        ids(&api, &format!("created_at[$lt]={at}")).await,
        ["m1", "m2"]
    );
    assert_eq!(
        ids(&api, &format!("created_at[$lte]={at}")).await,
        ["m1", "m2", "m3"]
    );
    assert_eq!(
        ids(&api, &format!("created_at[$gt]={at}")).await,
        ["m4", "m5"]
    );
    assert_eq!(
        ids(&api, &format!("created_at[$gte]={at}")).await,
        ["m3", "m4", "m5"]
    );
    assert_eq!(
        ids(
            &api,
            "created_at[$gt]=2024-01-15T00:00:00Z&created_at[$lt]=2024-04-15T00:00:00Z"
        )
        .await,
        ["m2", "m3", "m4"]
    );
    assert_eq!(
        ids(&api, "created_at[$gte]=2024-03-01T01:00:00%2B01:00").await,
        ["m3", "m4", "m5"],
        "any offset is accepted and compared as an instant"
    );
    assert_eq!(
        ids(&api, "metadata.nested.depth[$gte]=4").await,
        ["m4", "m5"],
        "numbers too"
    );
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_unknown_filter_field_or_operator_is_400(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    five_events(&api).await;
    for (q, path) in [
        ("bogus=1", "bogus"),
        ("organization_id_typo=x", "organization_id_typo"),
        (
            "metadata.booking_id[$regex]=4",
            "metadata.booking_id[$regex]",
        ),
        ("created_at[$between]=x", "created_at[$between]"),
        ("created_at[$gt]=soon", "created_at[$gt]"),
        ("$bogus=1", "$bogus"),
        ("metadata..x=1", "metadata..x"),
    ] {
        let (status, body) = api
            .get(&format!("/v1/consents/events?user_id=u1&{q}"))
            .await;
        assert_bad_field(status, &body, path);
    }
    server.stop().await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn listing_events_of_an_unknown_user_answers_an_empty_page(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    for query in ["user_id=ghost", "organization_user_id=ghost%40example.com"] {
        let (status, body) = api.get(&format!("/v1/consents/events?{query}")).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{query}: {body}");
        assert_eq!(body["total"], 0);
        assert_eq!(body["data"], json!([]));
    }
    server.stop().await;
}
