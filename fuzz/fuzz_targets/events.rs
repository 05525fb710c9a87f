//! Feeds arbitrary bytes, as a `POST /consents/events` body, to the JSON reader and the event
//! parser. Nothing may panic; an accepted batch holds 1 to 100 events, and the stored form of
//! each accepted event parses again to the same content.
#![no_main]

use assent_model::OrganizationId;
use assent_model::event::{ParseContext, parse_batch};
use assent_model::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let ctx = ParseContext {
        organization_id: OrganizationId::parse("fuzz").expect("a valid organization"),
        now: Timestamp::from_millis(1_800_000_000_000),
        generate_tcfcs: None,
    };
    let Ok(batch) = parse_batch(&value, &ctx) else {
        return;
    };
    assert!((1..=100).contains(&batch.events.len()));
    for event in &batch.events {
        let stored: Value = serde_json::from_slice(&event.body_json).expect("stored JSON");
        let again = parse_batch(&stored, &ctx).expect("the stored form parses");
        assert_eq!(again.events.len(), 1);
        assert_eq!(again.events[0].body, event.body, "{stored}");
    }
});
