//! Feeds arbitrary bytes, as a `POST /consents/events` body, to the JSON reader and the event
//! parser, in both shapes (Consents API and CMP notice). Nothing may panic; an accepted batch
//! holds 1 to 100 events, and the stored form of each accepted event parses again to the same
//! content (as a request body for the Consents API shape, as a stored body for a notice).
#![no_main]

use assent_model::OrganizationId;
use assent_model::event::{EventBody, ParseContext, parse_batch};
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
        purpose_map: Default::default(),
    };
    let Ok(batch) = parse_batch(&value, &ctx) else {
        return;
    };
    assert!((1..=100).contains(&batch.events.len()));
    for event in &batch.events {
        if event.body.notice.is_some() {
            // A notice event is stored in the Consents API shape plus what only the notice
            // shape says; the stored form reads back whole, but is no request body.
            let back: EventBody = serde_json::from_slice(&event.body_json).expect("stored JSON");
            assert_eq!(back, event.body);
            continue;
        }
        let stored: Value = serde_json::from_slice(&event.body_json).expect("stored JSON");
        let again = parse_batch(&stored, &ctx).expect("the stored form parses");
        assert_eq!(again.events.len(), 1);
        assert_eq!(again.events[0].body, event.body, "{stored}");
    }
});
