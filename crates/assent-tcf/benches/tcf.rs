//! Decode and encode throughput of TC strings: a typical 100-vendor string and a 1,000-vendor
//! string (results in BENCH.md).

use std::hint::black_box;

use assent_tcf::{
    Deciseconds, IdSet, PublisherRestriction, RestrictionType, TcModel, decode, encode,
};
use criterion::{Criterion, Throughput, criterion_main};

/// A deterministic model: `n` consented vendors spread over ids up to about 1.3 × `n` + 300
/// (as GVL ids are), LI for two thirds of them, every one disclosed, one restriction.
fn model(n: usize) -> TcModel {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let top = (n * 13 / 10 + 300) as u64;
    let mut consents = IdSet::new();
    while consents.len() < n {
        consents.insert((next() % top) as u16 + 1);
    }
    let li: IdSet = consents.iter().filter(|_| next() % 3 != 0).collect();
    let d = Deciseconds(17_489_088_000);
    let mut m = TcModel::new(300, d, d);
    m.cmp_version = 1;
    m.consent_screen = 1;
    m.vendor_list_version = 120;
    m.purpose_consents = [1, 2, 3, 4, 7, 9, 10].into();
    m.purpose_legitimate_interests = [2, 7, 8, 9, 10, 11].into();
    m.special_feature_optins = [1].into();
    m.vendors_disclosed = consents.clone();
    m.vendor_consents = consents;
    m.vendor_legitimate_interests = li;
    m.publisher_restrictions = vec![PublisherRestriction {
        purpose_id: 2,
        restriction_type: RestrictionType::RequireConsent,
        vendors: [10u16, 11, 12, 40].into(),
    }];
    m
}

/// Where the benchmark leaves its strings, for `tests/differential/bench.cjs` to time the IAB
/// library on the same ones.
const STRINGS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/tcf-bench-strings.txt"
);

fn bench(c: &mut Criterion) {
    let mut strings = String::new();
    for n in [100, 1000] {
        let m = model(n);
        let s = encode(&m).expect("valid model");
        assert_eq!(decode(&s).expect("decodes"), m);
        strings.push_str(&format!("{n} {s}\n"));
        let _ = std::fs::write(STRINGS_FILE, &strings);
        let mut g = c.benchmark_group(format!("{n}_vendors_{}_chars", s.len()));
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode", |b| b.iter(|| decode(black_box(&s)).unwrap()));
        g.bench_function("encode", |b| b.iter(|| encode(black_box(&m)).unwrap()));
        g.finish();
    }
}

mod harness {
    //! The generated group function has no doc comment of its own.
    #![allow(missing_docs)]
    use super::bench;
    criterion::criterion_group!(benches, bench);
}

criterion_main!(harness::benches);
