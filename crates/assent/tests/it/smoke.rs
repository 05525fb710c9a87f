//! The shortest path a newcomer takes: a key, a session, an event, the user's status.

use crate::common::Backend;
use crate::common::{TestServer, purpose_enabled};
use rstest::rstest;
use serde_json::json;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_sets_the_users_status(#[case] backend: Backend) {
    let Some(server) = TestServer::start_on(backend).await else {
        return;
    };
    let api = server.client().await;
    api.event(json!({
        "user": {"organization_user_id": "alice@example.com"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": true}]}
    }))
    .await;
    let user = api.user_by_ouid("alice@example.com").await;
    assert_eq!(purpose_enabled(&user, "newsletter"), Some(true));
    server.stop().await;
}
