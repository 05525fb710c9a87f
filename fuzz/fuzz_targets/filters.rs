//! Feeds arbitrary bytes, as a query string, to the filter and query parsers of
//! `GET|DELETE /consents/events` and `GET /consents/users`. None may panic.
#![no_main]

use assent_model::query::{EventsQuery, UsersQuery};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let _ = EventsQuery::for_list(&pairs);
    let _ = EventsQuery::for_delete(&pairs);
    let _ = UsersQuery::parse(&pairs);
});
