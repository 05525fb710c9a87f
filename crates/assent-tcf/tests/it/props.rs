//! Properties: decode(encode(x)) == x for random valid models, and the decoders never panic.

use assent_tcf::gpp::{self, GppString, Section, UsNat, UspFlag, UspV1};
use assent_tcf::{
    Alpha2, Deciseconds, IdSet, PublisherRestriction, PurposeSet, RestrictionType, TcModel, decode,
    encode,
};
use proptest::prelude::*;

fn purposes(max: u8) -> impl Strategy<Value = PurposeSet> {
    let mask = if max == 64 {
        u64::MAX
    } else {
        (1u64 << max) - 1
    };
    any::<u64>().prop_map(move |b| PurposeSet::from_bits(b & mask))
}

/// Vendor sets of several shapes: sparse, dense runs, up to high ids.
pub fn vendor_set() -> impl Strategy<Value = IdSet> {
    prop_oneof![
        Just(IdSet::new()),
        prop::collection::vec(1u16..200, 0..40).prop_map(|v| v.into_iter().collect()),
        prop::collection::vec(1u16..=65535, 0..20).prop_map(|v| v.into_iter().collect()),
        prop::collection::vec((1u16..3000, 0u16..60), 0..30).prop_map(|runs| {
            let mut s = IdSet::new();
            for (a, len) in runs {
                s.insert_range(a, a.saturating_add(len));
            }
            s
        }),
    ]
}

fn alpha2() -> impl Strategy<Value = Alpha2> {
    (b'A'..=b'Z', b'A'..=b'Z').prop_map(|(a, b)| Alpha2::new(a, b).unwrap())
}

fn restriction() -> impl Strategy<Value = PublisherRestriction> {
    (1u8..=24, 0u8..4, vendor_set()).prop_map(|(purpose_id, t, vendors)| PublisherRestriction {
        purpose_id,
        restriction_type: match t {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLi,
            _ => RestrictionType::Undefined,
        },
        vendors,
    })
}

/// Any model [`encode`] accepts (and that survives the trip: no AllowedVendors).
pub fn tc_model() -> impl Strategy<Value = TcModel> {
    let core = (
        (0u64..(1 << 36), 0u64..(1 << 36)),
        (
            0u16..4096,
            0u16..4096,
            0u8..64,
            alpha2(),
            0u16..4096,
            0u8..64,
        ),
        (
            any::<bool>(),
            purposes(12),
            purposes(24),
            purposes(24),
            any::<bool>(),
            alpha2(),
        ),
    );
    let vendors = (
        vendor_set(),
        vendor_set(),
        prop::collection::vec(restriction(), 0..4),
        vendor_set(),
    );
    let publisher = (
        purposes(24),
        purposes(24),
        0u8..64,
        any::<u64>(),
        any::<u64>(),
    );
    (core, vendors, publisher).prop_map(
        |(
            ((created, updated), (cmp_id, cmp_version, screen, lang, vlv, policy), flags),
            (vc, vli, restrictions, disclosed),
            (pc, pli, ncustom, cc, cli),
        )| {
            let (unst, sf, p, mut pl, p1t, cc_country) = flags;
            if policy >= 4 {
                pl = PurposeSet::from_bits(pl.bits() & !assent_tcf::LI_FORBIDDEN_PURPOSES.bits());
            }
            let custom_mask = if ncustom == 0 {
                0
            } else {
                (1u64 << ncustom) - 1
            };
            let mut m = TcModel::new(cmp_id, Deciseconds(created), Deciseconds(updated));
            m.cmp_version = cmp_version;
            m.consent_screen = screen;
            m.consent_language = lang;
            m.vendor_list_version = vlv;
            m.policy_version = policy;
            m.use_non_standard_texts = unst;
            m.special_feature_optins = sf;
            m.purpose_consents = p;
            m.purpose_legitimate_interests = pl;
            m.purpose_one_treatment = p1t;
            m.publisher_country_code = cc_country;
            m.vendor_consents = vc;
            m.vendor_legitimate_interests = vli;
            m.publisher_restrictions = restrictions;
            m.vendors_disclosed = disclosed;
            m.publisher_consents = pc;
            m.publisher_legitimate_interests = pli;
            m.num_custom_purposes = ncustom;
            m.publisher_custom_consents = PurposeSet::from_bits(cc & custom_mask);
            m.publisher_custom_legitimate_interests = PurposeSet::from_bits(cli & custom_mask);
            m
        },
    )
}

fn usp_flag() -> impl Strategy<Value = UspFlag> {
    prop_oneof![
        Just(UspFlag::Yes),
        Just(UspFlag::No),
        Just(UspFlag::NotApplicable)
    ]
}

fn usnat() -> impl Strategy<Value = UsNat> {
    (
        prop::collection::vec(0u8..3, 9),
        prop::collection::vec(0u8..3, 16),
        prop::collection::vec(0u8..3, 3),
        (0u8..3, 1u8..3, 0u8..3, 0u8..3),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(a, sdp, kc, (pdc, mct, oom, spm), gpc)| UsNat {
            version: 2,
            sharing_notice: a[0],
            sale_opt_out_notice: a[1],
            sharing_opt_out_notice: a[2],
            targeted_advertising_opt_out_notice: a[3],
            sensitive_data_processing_opt_out_notice: a[4],
            sensitive_data_limit_use_notice: a[5],
            sale_opt_out: a[6],
            sharing_opt_out: a[7],
            targeted_advertising_opt_out: a[8],
            sensitive_data_processing: sdp,
            known_child_sensitive_data_consents: kc,
            personal_data_consents: pdc,
            mspa_covered_transaction: mct,
            mspa_opt_out_option_mode: oom,
            mspa_service_provider_mode: spm,
            gpc,
        })
}

fn gpp_string() -> impl Strategy<Value = GppString> {
    let unsupported = prop::collection::btree_map(
        prop_oneof![1u16..2, 3u16..6, 8u16..40, 40u16..3000],
        "[A-Za-z0-9_-]{1,12}(\\.[A-Za-z0-9_-]{1,8})?",
        0..4,
    );
    (
        prop::option::of(tc_model()),
        prop::option::of((usp_flag(), usp_flag(), usp_flag())),
        prop::option::of(usnat()),
        unsupported,
    )
        .prop_map(|(tcf, usp, nat, other)| {
            let mut sections: Vec<Section> = other
                .into_iter()
                .map(|(id, raw)| Section::Unsupported { id, raw })
                .collect();
            if let Some(m) = tcf {
                sections.push(Section::TcfEuV2(m));
            }
            if let Some((notice, opt_out_sale, lspa_covered)) = usp {
                sections.push(Section::UspV1(UspV1 {
                    version: 1,
                    notice,
                    opt_out_sale,
                    lspa_covered,
                }));
            }
            if let Some(u) = nat {
                sections.push(Section::UsNat(u));
            }
            sections.sort_by_key(Section::id);
            GppString { sections }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tc_round_trip(m in tc_model()) {
        let s = encode(&m).unwrap();
        prop_assert!(!s.contains('='));
        for seg in s.split('.') {
            prop_assert_eq!(seg.len() % 4, 0, "24-bit padding: {}", seg);
        }
        prop_assert_eq!(decode(&s).unwrap(), m.clone());
        // Through JSON too, as the CLI does.
        let j = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(serde_json::from_str::<TcModel>(&j).unwrap(), m);
    }

    #[test]
    fn gpp_round_trip(g in gpp_string()) {
        let s = gpp::encode(&g).unwrap();
        prop_assert_eq!(gpp::decode(&s).unwrap(), g.clone());
        let j = serde_json::to_string(&g).unwrap();
        prop_assert_eq!(serde_json::from_str::<GppString>(&j).unwrap(), g);
    }

    #[test]
    fn decoders_never_panic_on_strings(s in "\\PC{0,200}") {
        let _ = decode(&s);
        let _ = gpp::decode(&s);
    }

    #[test]
    fn decoders_never_panic_on_base64ish(s in "[A-Za-z0-9_.~=-]{0,400}") {
        let _ = decode(&s);
        let _ = gpp::decode(&s);
    }

    #[test]
    fn decoders_never_panic_on_mutated_strings(m in tc_model(), flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..64), 1..6), cut in any::<prop::sample::Index>()) {
        let s = encode(&m).unwrap();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut b = s.into_bytes();
        for (i, v) in flips {
            let i = i.index(b.len());
            if b[i] != b'.' {
                b[i] = alphabet[v as usize];
            }
        }
        let mut t = String::from_utf8(b).unwrap();
        let _ = decode(&t);
        let _ = gpp::decode(&format!("DBABMA~{t}"));
        t.truncate(cut.index(t.len() + 1));
        let _ = decode(&t);
        let _ = gpp::decode(&format!("DBABMA~{t}"));
    }

    #[test]
    fn decoders_never_panic_on_random_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let s = String::from_utf8_lossy(&b);
        let _ = decode(&s);
        let _ = gpp::decode(&s);
    }
}
