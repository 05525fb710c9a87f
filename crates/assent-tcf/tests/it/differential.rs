//! Differential test against the official IAB JavaScript libraries.
//!
//! A seeded random corpus of field sets goes to `tests/differential/oracle.cjs`, which prints,
//! for each, the `@iabgpp/cmpapi` (`TcfEuV2`) encoding of the fields and the
//! `@iabtechlabtcf/core` decoding of our string. Our encoding must equal iabgpp's byte for byte,
//! and iabtcf must read back the fields we wrote.
//!
//! Needs `node` and `npm ci` in `tests/differential`. Without `node_modules` the test prints
//! why and passes, unless the `CI` environment variable is set: then it fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use assent_tcf::{
    Deciseconds, IdSet, LI_FORBIDDEN_PURPOSES, PublisherRestriction, PurposeSet, RestrictionType,
    TcModel, encode,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CORPUS_SIZE: usize = 2500;
const SEED: u64 = 0x7CF2_2026;

fn purposes(rng: &mut StdRng, max: u8) -> PurposeSet {
    let bits: u64 = rng.random();
    let mask = if max == 0 { 0 } else { (1u64 << max) - 1 };
    // Sometimes empty, sometimes full, mostly random.
    match rng.random_range(0..10) {
        0 => PurposeSet::new(),
        1 => PurposeSet::from_bits(mask),
        _ => PurposeSet::from_bits(bits & mask),
    }
}

fn vendors(rng: &mut StdRng) -> IdSet {
    let mut s = IdSet::new();
    match rng.random_range(0..8) {
        0 => {}
        // Sparse, low ids (bitfield territory).
        1 | 2 => {
            for _ in 0..rng.random_range(1..60) {
                s.insert(rng.random_range(1..400));
            }
        }
        // Runs (range territory), sometimes up to high ids.
        3 | 4 => {
            let top = if rng.random_bool(0.2) { 65_000 } else { 3_000 };
            for _ in 0..rng.random_range(1..40) {
                let a = rng.random_range(1..top);
                s.insert_range(a, a.saturating_add(rng.random_range(0..80)));
            }
        }
        // Near the range/bitfield boundary: a single id or a single pair around 29 / 45.
        5 => {
            let id = rng.random_range(20..40);
            s.insert(id);
        }
        6 => {
            let a = rng.random_range(35..55);
            s.insert_range(a, a + 1);
        }
        // Dense.
        _ => {
            let top = rng.random_range(1..1500);
            for id in 1..=top {
                if rng.random_bool(0.8) {
                    s.insert(id);
                }
            }
        }
    }
    s
}

fn letters(rng: &mut StdRng) -> assent_tcf::Alpha2 {
    assent_tcf::Alpha2::new(rng.random_range(b'A'..=b'Z'), rng.random_range(b'A'..=b'Z')).unwrap()
}

/// A random model that both libraries can represent: see the module notes in the report.
fn field_set(rng: &mut StdRng) -> TcModel {
    // iabgpp sets Created and LastUpdated together, so they are equal (as TCF 2.2 wants).
    let date = Deciseconds(rng.random_range(0..(1u64 << 36)));
    // iabtcf refuses CMP ids 0 and 1, even when decoding.
    let mut m = TcModel::new(rng.random_range(2..4096), date, date);
    m.cmp_version = rng.random_range(0..4096);
    m.consent_screen = rng.random_range(0..64);
    m.consent_language = letters(rng);
    m.vendor_list_version = rng.random_range(0..4096);
    m.policy_version = if rng.random_bool(0.8) {
        rng.random_range(4..6)
    } else {
        rng.random_range(0..64)
    };
    m.use_non_standard_texts = rng.random();
    m.special_feature_optins = purposes(rng, 12);
    m.purpose_consents = purposes(rng, 24);
    // iabgpp clears LI for purposes 1 and 3-6 whatever the policy version.
    m.purpose_legitimate_interests =
        PurposeSet::from_bits(purposes(rng, 24).bits() & !LI_FORBIDDEN_PURPOSES.bits());
    m.purpose_one_treatment = rng.random();
    m.publisher_country_code = letters(rng);
    m.vendor_consents = vendors(rng);
    m.vendor_legitimate_interests = vendors(rng);
    // Distinct purposes: iabtcf keys restrictions by (purpose, type) and merges repeats.
    let mut restricted = PurposeSet::new();
    for _ in 0..rng.random_range(0..5) {
        let purpose_id = rng.random_range(1..=24);
        if restricted.contains(purpose_id) {
            continue;
        }
        restricted.insert(purpose_id);
        m.publisher_restrictions.push(PublisherRestriction {
            purpose_id,
            restriction_type: match rng.random_range(0..3) {
                0 => RestrictionType::NotAllowed,
                1 => RestrictionType::RequireConsent,
                _ => RestrictionType::RequireLi,
            },
            vendors: vendors(rng),
        });
    }
    m.vendors_disclosed = vendors(rng);
    m.publisher_consents = purposes(rng, 24);
    m.publisher_legitimate_interests = purposes(rng, 24);
    m.num_custom_purposes = rng.random_range(0..64);
    m.publisher_custom_consents = purposes(rng, m.num_custom_purposes);
    m.publisher_custom_legitimate_interests = purposes(rng, m.num_custom_purposes);
    m
}

/// Restrictions as a comparable value: sorted by purpose, without empty ones (iabtcf only
/// keeps a restriction once a vendor is added to it, so an entry with no vendors vanishes).
fn normalize(mut v: Value) -> Value {
    if let Some(list) = v
        .get_mut("publisher_restrictions")
        .and_then(Value::as_array_mut)
    {
        list.retain(|r| r["vendors"].as_array().is_some_and(|a| !a.is_empty()));
        list.sort_by_key(|r| r["purpose_id"].as_u64());
    }
    v
}

#[test]
fn matches_the_iab_libraries() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let in_ci = std::env::var_os("CI").is_some();
    if !dir.join("node_modules").is_dir() {
        assert!(
            !in_ci,
            "CI is set but {} has no node_modules: run `npm ci` there first",
            dir.display()
        );
        println!(
            "skipping the differential test: run `npm ci` in {} to enable it",
            dir.display()
        );
        return;
    }

    let mut rng = StdRng::seed_from_u64(SEED);
    let corpus: Vec<TcModel> = (0..CORPUS_SIZE).map(|_| field_set(&mut rng)).collect();
    let ours: Vec<String> = corpus
        .iter()
        .map(|m| encode(m).expect("the corpus is valid"))
        .collect();
    let mut input = Vec::new();
    for (m, s) in corpus.iter().zip(&ours) {
        serde_json::to_writer(&mut input, &json!({"fields": m, "ours": s})).unwrap();
        input.push(b'\n');
    }

    let mut child = Command::new("node")
        .arg("oracle.cjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed to run the differential test");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "oracle.cjs failed");
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), corpus.len());

    let mut failures = Vec::new();
    for (i, ((m, s), got)) in corpus.iter().zip(&ours).zip(&lines).enumerate() {
        match got.get("iabgpp").and_then(Value::as_str) {
            Some(theirs) if theirs == s => {}
            Some(theirs) => failures.push(format!(
                "#{i}: encodings differ\n  ours   {s}\n  iabgpp {theirs}\n  fields {}",
                serde_json::to_string(m).unwrap()
            )),
            None => failures.push(format!("#{i}: iabgpp threw {}", got["iabgpp_error"])),
        }
        match got.get("iabtcf") {
            Some(decoded) => {
                let want = normalize(serde_json::to_value(m).unwrap());
                let decoded = normalize(decoded.clone());
                if want != decoded {
                    failures.push(format!(
                        "#{i}: iabtcf decodes {s} differently\n  want {want}\n  got  {decoded}"
                    ));
                }
            }
            None => failures.push(format!("#{i}: iabtcf threw {} on {s}", got["iabtcf_error"])),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        corpus.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "differential: {} field sets, byte-exact with @iabgpp/cmpapi and read back by @iabtechlabtcf/core",
        corpus.len()
    );
}
