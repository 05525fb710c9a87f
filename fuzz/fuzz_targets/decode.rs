//! Feeds arbitrary text to the TC and GPP decoders. Neither may panic, and whatever decodes and
//! re-encodes must decode to the same model.
#![no_main]

use assent_tcf::gpp::{self, Section};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut m) = assent_tcf::decode(s) {
        // AllowedVendors is decoded but deliberately never written.
        m.vendors_allowed.clear();
        if let Ok(again) = assent_tcf::encode(&m) {
            assert_eq!(assent_tcf::decode(&again).as_ref(), Ok(&m), "{s} -> {again}");
        }
    }
    if let Ok(mut g) = gpp::decode(s) {
        for section in &mut g.sections {
            if let Section::TcfEuV2(m) = section {
                m.vendors_allowed.clear();
            }
        }
        if let Ok(again) = gpp::encode(&g) {
            assert_eq!(gpp::decode(&again).as_ref(), Ok(&g), "{s} -> {again}");
        }
    }
});
