//! assent-tcf: reference vectors (tcf.md §2 and §5.4), error cases, round-trip properties, and
//! the differential test against the IAB JavaScript libraries (`differential` below).

use assent_tcf::gpp::{self, GppString, Section, UsNat, UspFlag, UspV1};
use assent_tcf::{
    Alpha2, Deciseconds, Error, IdSet, PublisherRestriction, PurposeSet, RestrictionType, Segment,
    TcModel, decode, encode,
};
use chrono::{TimeZone, Utc};

mod differential;
mod props;

fn day(y: i32, m: u32, d: u32) -> Deciseconds {
    Deciseconds::from_datetime(Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap())
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Deciseconds {
    Deciseconds::from_datetime(Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap())
}

fn ids(v: &[u16]) -> IdSet {
    v.iter().copied().collect()
}

fn ps(v: &[u8]) -> PurposeSet {
    v.iter().copied().collect()
}

fn lang(s: &str) -> Alpha2 {
    s.parse().unwrap()
}

/// Vector 1 (spec example) as fields, with the given date.
fn spec_example(date: Deciseconds) -> TcModel {
    let mut m = TcModel::new(880, date, date);
    m.cmp_version = 0;
    m.consent_screen = 0;
    m.vendor_list_version = 48;
    m.policy_version = 2;
    m.publisher_country_code = lang("DE");
    m.vendor_consents = ids(&[1, 2, 3, 4]);
    m.vendors_disclosed = ids(&[1, 2, 3, 4, 5, 100, 404]);
    m
}

#[test]
fn vector_1_spec_example() {
    let s = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA";
    let want = spec_example(day(2025, 6, 3));
    assert_eq!(decode(s).unwrap(), want);
    assert_eq!(encode(&want).unwrap(), s);

    let s = "CPSG_8APSG_8ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA";
    let want = spec_example(day(2022, 1, 1));
    assert_eq!(decode(s).unwrap(), want);
    assert_eq!(encode(&want).unwrap(), s);
}

#[test]
fn vector_2_iabtcf_java_core_only() {
    let m = decode("COtybn4PA_zT4KjACBENAPCIAEBAAECAAIAAAAAAAAAA").unwrap();
    assert_eq!(m.created, at(2020, 1, 26, 17, 1));
    assert_eq!(m.last_updated, at(2021, 2, 2, 17, 1));
    assert_eq!((m.cmp_id, m.cmp_version, m.consent_screen), (675, 2, 1));
    assert_eq!(m.consent_language, Alpha2::EN);
    assert_eq!((m.vendor_list_version, m.policy_version), (15, 2));
    assert!(!m.is_service_specific);
    assert!(!m.use_non_standard_texts);
    assert!(m.purpose_one_treatment);
    assert_eq!(m.publisher_country_code, Alpha2::AA);
    assert_eq!(m.special_feature_optins, ps(&[1]));
    assert_eq!(m.purpose_consents, ps(&[2, 10]));
    assert_eq!(m.purpose_legitimate_interests, ps(&[2, 9]));
    assert!(m.vendor_consents.is_empty() && m.vendors_disclosed.is_empty());
    // Not service-specific: decoded, but not encodable.
    assert!(matches!(
        encode(&m),
        Err(Error::Encode {
            field: "is_service_specific",
            ..
        })
    ));
}

#[test]
fn vector_3_disclosed_and_allowed_vendors() {
    let m = decode("COrEAV4OrXx94ACABBENAHCIAD-AAAAAAACAAxAAAAgAIAwgAgAAAAEAgQAAAAAEAYQAQAAAACAAAABAAA.IBAgAAAgAIAwgAgAAAAEAAAACA.QAagAQAgAIAwgA").unwrap();
    assert_eq!((m.cmp_id, m.cmp_version, m.vendor_list_version), (2, 1, 7));
    assert_eq!(m.purpose_consents, ps(&[3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(m.vendor_consents, ids(&[23, 37, 47, 48, 53, 65, 98]));
    assert_eq!(
        m.vendor_legitimate_interests,
        ids(&[37, 47, 48, 53, 65, 98, 129])
    );
    assert_eq!(m.vendors_disclosed, ids(&[23, 37, 47, 48, 53, 65, 98, 129]));
    assert_eq!(m.vendors_allowed, ids(&[12, 23, 37, 47, 48, 53]));
}

#[test]
fn vector_4_range_encoded_li() {
    let m = decode("COv__-wOv__-wC2AAAENAPCgAAAAAAAAAAAAA_wAQA_gEBABAEAAAA").unwrap();
    assert_eq!(m.cmp_id, 182);
    assert!(m.is_service_specific);
    assert_eq!(m.vendor_list_version, 15);
    assert_eq!(m.vendor_consents, ids(&[127]));
    assert_eq!(m.vendor_legitimate_interests, ids(&[128]));
}

#[test]
fn vector_5_range_entries() {
    let m = decode("COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAYFfAV-BVkAGBVYFWAAA").unwrap();
    assert_eq!(m.cmp_id, 746);
    assert_eq!(m.vendor_consents, ids(&[702, 703]));
    assert_eq!(m.vendor_legitimate_interests, ids(&[683, 684]));
    let m = decode("COwBOpCOwBOpCLqAAAENAPCAAAAAAAAAAAAAFfwAQFfgUbABAUaAAA").unwrap();
    assert_eq!(m.vendor_consents, ids(&[703]));
}

fn vector_6_fields() -> TcModel {
    let d = day(2022, 2, 1);
    let mut m = TcModel::new(10, d, d);
    m.vendor_list_version = 0;
    m.policy_version = 5;
    m.purpose_consents = ps(&[1, 3, 4, 5, 6]);
    m.purpose_legitimate_interests = ps(&[2]);
    m.vendor_consents = ids(&[11, 28, 29]);
    m.vendors_disclosed = ids(&[11, 28, 29, 50, 60, 80]);
    m.publisher_consents = ps(&[1, 3, 4, 5, 6]);
    m.publisher_legitimate_interests = ps(&[2, 7]);
    m
}

#[test]
fn vector_6_iabgpp_publisher_tc() {
    let s = "CPTtLAAPTtLAAAKAAAENAAFgALwAAEAAAAAAAOgAgABgAAAA.IAoAAgABgAAEAQAAEAAA.d4AACEAAAAAA";
    let want = vector_6_fields();
    assert_eq!(decode(s).unwrap(), want);
    assert_eq!(encode(&want).unwrap(), s);
}

#[test]
fn empty_segments_have_the_documented_lengths() {
    let d = day(2025, 1, 1);
    let s = encode(&TcModel::new(2, d, d)).unwrap();
    let parts: Vec<&str> = s.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].len(), 44);
    assert_eq!(parts[1], "IAAA");
    assert_eq!(parts[2], "YAAAAAAAAAAA");
    assert!(!s.contains('='));
}

#[test]
fn old_short_publisher_tc_and_padding_are_accepted() {
    // 11-character PublisherTC (no 24-bit padding), and a trailing `=`.
    let m = decode("BPXuQIAPXuQIAAfKABENB-CgAAAAAAAAAAAAAAAA.YAAAAAAAAAA");
    assert!(
        matches!(m, Err(Error::Unsupported(_))),
        "a v1 string: {m:?}"
    );
    let m = decode("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA.YAAAAAAAAAA").unwrap();
    assert_eq!(m.cmp_id, 31);
    let m2 = decode("CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA.YAAAAAAAAAA=").unwrap();
    assert_eq!(m, m2);
}

#[test]
fn restrictions_round_trip_in_insertion_order() {
    let d = day(2024, 5, 1);
    let mut m = TcModel::new(300, d, d);
    m.publisher_restrictions = vec![
        PublisherRestriction {
            purpose_id: 7,
            restriction_type: RestrictionType::RequireLi,
            vendors: ids(&[12, 13, 14, 24, 1000]),
        },
        PublisherRestriction {
            purpose_id: 2,
            restriction_type: RestrictionType::NotAllowed,
            vendors: ids(&[5]),
        },
        PublisherRestriction {
            purpose_id: 2,
            restriction_type: RestrictionType::RequireConsent,
            vendors: IdSet::new(),
        },
    ];
    let s = encode(&m).unwrap();
    assert_eq!(decode(&s).unwrap(), m);
}

#[test]
fn vendor_encoding_choice_follows_iabgpp() {
    // The range encoding is chosen when NumEntries + entries <= MaxVendorId (ties go to it).
    // {1, 3, ..}: build sets at the boundary and check the IsRangeEncoding bit.
    fn is_range(v: &IdSet) -> bool {
        let d = day(2024, 1, 1);
        let mut m = TcModel::new(2, d, d);
        m.vendors_disclosed = v.clone();
        let s = encode(&m).unwrap();
        let dv = s.split('.').nth(1).unwrap();
        // SegmentType(3) MaxVendorId(16) IsRange(1): bit 19 = char 3, bit 1 of 6.
        let c = dv.as_bytes()[3];
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            .bytes()
            .position(|x| x == c)
            .unwrap();
        v & 0b010000 != 0
    }
    // One single id: range needs 12 + 17 = 29 bits.
    assert!(!is_range(&ids(&[28])));
    assert!(is_range(&ids(&[29])));
    // One run: 12 + 33 = 45 bits.
    assert!(!is_range(&ids(&[43, 44])));
    assert!(is_range(&ids(&[44, 45])));
    assert!(!is_range(&IdSet::new()));
}

// ------------------------------------------------------------------------------------------
// GPP vectors (tcf.md §5.4)

fn gpp_tcf_example() -> TcModel {
    let d = at(2022, 4, 20, 22, 0);
    let mut m = TcModel::new(31, d, d);
    m.cmp_version = 640;
    m.consent_screen = 1;
    m.vendor_list_version = 126;
    m.policy_version = 2;
    m.publisher_country_code = lang("DE");
    m
}

#[test]
fn gpp_header_examples() {
    let tcf = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA";
    let g = gpp::decode(&format!("DBABM~{tcf}")).unwrap();
    assert_eq!(g.section_ids(), vec![2]);
    assert_eq!(g.tcfeuv2().unwrap(), &gpp_tcf_example());

    let g = gpp::decode(&format!("DBACNY~{tcf}~1YNN")).unwrap();
    assert_eq!(g.section_ids(), vec![2, 6]);
    assert_eq!(
        g.sections[1],
        Section::UspV1(UspV1 {
            version: 1,
            notice: UspFlag::Yes,
            opt_out_sale: UspFlag::No,
            lspa_covered: UspFlag::No
        })
    );
    // iabgpp pads the header to bytes, then to 6 bits.
    let mut enc = gpp::encode(&g).unwrap();
    assert!(enc.starts_with("DBACNYA~"), "{enc}");
    enc.replace_range(0..7, "DBACNY");
    assert_eq!(gpp::decode(&enc).unwrap(), g);

    let s = "DBABjw~BPXuQIAPXuQIAAfKABENB-CgAAAAAAAAAAAAAAAA.YAAAAAAAAAA~1YNN";
    let g = gpp::decode(s).unwrap();
    assert_eq!(g.section_ids(), vec![5, 6]);
    assert_eq!(
        g.sections[0],
        Section::Unsupported {
            id: 5,
            raw: "BPXuQIAPXuQIAAfKABENB-CgAAAAAAAAAAAAAAAA.YAAAAAAAAAA".into()
        }
    );
    // 32 header bits: already whole bytes, then padded to 36.
    assert_eq!(gpp::encode(&g).unwrap(), s);
    // The compressed header for [2]: `DBABMA`.
    let only_tcf = GppString {
        sections: vec![Section::TcfEuV2(vector_6_fields())],
    };
    assert!(
        gpp::encode(&only_tcf)
            .unwrap()
            .starts_with("DBABMA~CPTtLAAPTtLAA")
    );
}

#[test]
fn gpp_usnat_v2_encode_vector() {
    let u = UsNat {
        version: 2,
        sharing_notice: 1,
        sale_opt_out_notice: 1,
        sharing_opt_out_notice: 1,
        targeted_advertising_opt_out_notice: 1,
        sensitive_data_processing_opt_out_notice: 1,
        sensitive_data_limit_use_notice: 1,
        sale_opt_out: 1,
        sharing_opt_out: 1,
        targeted_advertising_opt_out: 1,
        sensitive_data_processing: vec![2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2],
        known_child_sensitive_data_consents: vec![2, 1, 0],
        personal_data_consents: 1,
        mspa_covered_transaction: 1,
        mspa_opt_out_option_mode: 1,
        mspa_service_provider_mode: 2,
        gpc: Some(true),
    };
    let g = GppString {
        sections: vec![Section::UsNat(u)],
    };
    let s = "DBABLA~CVVVkkkkkpFY.YA";
    assert_eq!(gpp::encode(&g).unwrap(), s);
    assert_eq!(gpp::decode(s).unwrap(), g);
}

#[test]
fn gpp_usnat_defaults() {
    let mut u = UsNat::default();
    let g = |u: &UsNat| GppString {
        sections: vec![Section::UsNat(u.clone())],
    };
    assert_eq!(gpp::encode(&g(&u)).unwrap(), "DBABLA~CAAAAAAAAABA.QA");
    u.gpc = None;
    assert_eq!(gpp::encode(&g(&u)).unwrap(), "DBABLA~CAAAAAAAAABA");
    assert_eq!(gpp::decode("DBABLA~CAAAAAAAAABA").unwrap(), g(&u));
    // All fields default in JSON.
    let j: UsNat = serde_json::from_str("{}").unwrap();
    assert_eq!(j, UsNat::default());
}

#[test]
fn gpp_usnat_v1_and_more_v2_vectors() {
    let Section::UsNat(u) = &gpp::decode("DBABLA~BAAAVVVVUQA.QA").unwrap().sections[0] else {
        panic!()
    };
    assert_eq!(u.version, 1);
    assert_eq!(u.sensitive_data_processing, vec![1; 12]);
    assert_eq!(u.known_child_sensitive_data_consents, vec![1, 1]);
    assert_eq!(u.mspa_covered_transaction, 1);
    assert_eq!(u.gpc, Some(false));
    assert_eq!(
        u.sharing_notice + u.sale_opt_out + u.personal_data_consents,
        0
    );
    // Version 1 is decode-only.
    assert!(matches!(
        gpp::encode(&GppString {
            sections: vec![Section::UsNat(u.clone())]
        }),
        Err(Error::Encode {
            field: "usnat.version",
            ..
        })
    ));

    let s = "DBABLA~CAAAVVVVVVRA.QA";
    let Section::UsNat(u) = &gpp::decode(s).unwrap().sections[0] else {
        panic!()
    };
    assert_eq!(u.version, 2);
    assert_eq!(u.sensitive_data_processing, vec![1; 16]);
    assert_eq!(u.known_child_sensitive_data_consents, vec![1; 3]);
    assert_eq!(u.mspa_covered_transaction, 1);
    assert_eq!(gpp::encode(&gpp::decode(s).unwrap()).unwrap(), s);

    // Version 2 in the field but only 66 bits: the version 1 layout, widened to version 2 with
    // zeros, as iabgpp-es reads it.
    let s = "DBABLA~CAAAAAABEQA.QA";
    let Section::UsNat(u) = &gpp::decode(s).unwrap().sections[0] else {
        panic!()
    };
    assert_eq!(u.version, 2);
    let mut sdp = vec![0; 16];
    sdp[11] = 1;
    assert_eq!(u.sensitive_data_processing, sdp);
    assert_eq!(u.known_child_sensitive_data_consents, vec![0, 1, 0]);
    assert_eq!(u.mspa_covered_transaction, 1);
    assert_eq!(u.personal_data_consents, 0);
}

#[test]
fn gpp_tcfeuv2_with_disclosed_vendors() {
    let s = "DBABMA~CPSG_8APSG_8AAAAAAENAAFgAAAAAAAAAAAAAOAAAABAAAAA.IAOABgAB.YAAAAAAAAAAA";
    let g = gpp::decode(s).unwrap();
    let m = g.tcfeuv2().unwrap();
    assert_eq!(m.vendor_consents, ids(&[28]));
    assert_eq!(m.vendors_disclosed, ids(&[10, 11, 28]));
    assert_eq!(gpp::encode(&g).unwrap(), s);
}

#[test]
fn gpp_json_shape() {
    let g = gpp::decode("DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN").unwrap();
    let j = serde_json::to_value(&g).unwrap();
    assert_eq!(j["sections"][0]["section"], "tcfeuv2");
    assert_eq!(j["sections"][0]["cmp_id"], 31);
    assert_eq!(j["sections"][0]["created"], "2022-04-20T22:00:00Z");
    assert_eq!(j["sections"][1]["section"], "uspv1");
    assert_eq!(j["sections"][1]["notice"], "Y");
    let back: GppString = serde_json::from_value(j).unwrap();
    assert_eq!(back, g);
    let u: GppString = serde_json::from_str(
        r#"{"sections":[{"section":"unsupported","id":8,"raw":"BAAAAABA.QA"}]}"#,
    )
    .unwrap();
    assert_eq!(gpp::encode(&u).unwrap(), "DBABBg~BAAAAABA.QA");
    assert_eq!(gpp::decode("DBABBg~BAAAAABA.QA").unwrap(), u);
}

#[test]
fn tc_json_shape() {
    let m = vector_6_fields();
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["created"], "2022-02-01T00:00:00Z");
    assert_eq!(j["vendor_consents"], serde_json::json!([11, 28, 29]));
    assert_eq!(j["purpose_legitimate_interests"], serde_json::json!([2]));
    assert_eq!(j["consent_language"], "EN");
    assert_eq!(serde_json::from_value::<TcModel>(j).unwrap(), m);
    // Minimal input: required fields only.
    let m: TcModel = serde_json::from_str(
        r#"{"created":"2022-02-01T00:00:00Z","last_updated":"2022-02-01T00:00:00Z","cmp_id":10}"#,
    )
    .unwrap();
    assert_eq!(m.policy_version, 5);
    assert!(m.is_service_specific);
    assert!(serde_json::from_str::<TcModel>(r#"{"cmp_id":10}"#).is_err());
    assert!(
        serde_json::from_str::<TcModel>(r#"{"created":0,"last_updated":0,"cmp_id":10,"typo":1}"#)
            .is_err()
    );
}

// ------------------------------------------------------------------------------------------
// Errors

const CORE_1: &str = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA";

#[test]
fn error_bad_base64() {
    let e = decode("CQSbk4AQSbk4ANwAAAENAw+gAAAAAAAAAAYgACPAAAAA").unwrap_err();
    assert_eq!(
        e,
        Error::InvalidBase64 {
            segment: Segment::Core,
            position: 22,
            character: '+'
        }
    );
    let e = decode(&format!("{CORE_1}.IDKQA4AAgAK$GQAygAAA")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidBase64 {
                position: 11,
                character: '$',
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("position 11"));
}

#[test]
fn error_truncated() {
    // The core cut inside the vendor consents.
    let e = decode(&CORE_1[..30]).unwrap_err();
    match &e {
        Error::Truncated {
            segment: Segment::Core,
            field,
            bit,
            ..
        } => {
            assert_eq!(*field, "PurposesLITransparency");
            assert_eq!(*bit, 176);
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains("truncated: PurposesLITransparency at bit 176 needs 24 bits, only 4 remain"),
        "{e}"
    );
    let e = decode("CQSbk4AQSbk4AN").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                field: "CmpId",
                bit: 78,
                ..
            }
        ),
        "{e}"
    );
    let e = decode(&format!("{CORE_1}.YAAAAAAA")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                segment: Segment::PublisherTc,
                field: "PubPurposesLITransparency",
                bit: 27,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(decode(""), Err(Error::Empty { .. })));
    assert!(matches!(
        decode(&format!("{CORE_1}..YAAAAAAAAAAA")),
        Err(Error::Empty { .. })
    ));
}

/// Builds a DisclosedVendors segment from a bit string.
fn segment(bits: &str) -> String {
    let mut bits = bits.to_string();
    while !bits.len().is_multiple_of(6) {
        bits.push('0');
    }
    bits.as_bytes()
        .chunks(6)
        .map(|c| {
            let v = u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap();
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[v as usize],
            )
        })
        .collect()
}

#[test]
fn error_bitfield_shorter_than_max_vendor_id() {
    // DisclosedVendors: type 001, MaxVendorId 100, bitfield, but only 20 bits follow.
    let dv = segment(&format!("001{:016b}0{}", 100, "1".repeat(20)));
    let e = decode(&format!("{CORE_1}.{dv}")).unwrap_err();
    match e {
        Error::Truncated {
            segment: Segment::DisclosedVendors,
            field: "VendorsDisclosed",
            bit: 20,
            needed: 100,
            ..
        } => {}
        other => panic!("{other}"),
    }
    // The same with 100 bits decodes.
    let dv = segment(&format!("001{:016b}0{}", 100, "1".repeat(100)));
    assert_eq!(
        decode(&format!("{CORE_1}.{dv}"))
            .unwrap()
            .vendors_disclosed
            .len(),
        100
    );
}

#[test]
fn error_range_start_after_end() {
    // Range encoding, 1 entry, a range 9..5.
    let dv = segment(&format!("001{:016b}1{:012b}1{:016b}{:016b}", 9, 1, 9, 5));
    let e = decode(&format!("{CORE_1}.{dv}")).unwrap_err();
    match &e {
        Error::InvalidField {
            segment: Segment::DisclosedVendors,
            field: "VendorsDisclosed",
            bit: 32,
            reason,
        } => assert!(reason.contains("start 9 is after its end 5"), "{reason}"),
        other => panic!("{other}"),
    }
    // Vendor 0.
    let dv = segment(&format!("001{:016b}1{:012b}0{:016b}", 9, 1, 0));
    assert!(matches!(
        decode(&format!("{CORE_1}.{dv}")),
        Err(Error::InvalidField {
            field: "VendorsDisclosed",
            ..
        })
    ));
}

#[test]
fn error_segment_types_and_versions() {
    // Segment type 0 and 5.
    let e = decode(&format!("{CORE_1}.AAAA")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidField {
                field: "SegmentType",
                ..
            }
        ),
        "{e}"
    );
    let e = decode(&format!("{CORE_1}.oAAA")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidField {
                field: "SegmentType",
                ..
            }
        ),
        "{e}"
    );
    // Two DisclosedVendors segments.
    assert!(matches!(
        decode(&format!("{CORE_1}.IAAA.IAAA")),
        Err(Error::Unsupported(_))
    ));
    // A GPP string and a v1 string.
    assert!(matches!(decode("DBABMA"), Err(Error::Unsupported(_))));
    assert!(matches!(
        decode("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"),
        Err(Error::Unsupported(_))
    ));
    // Version 4.
    assert!(matches!(
        decode("EQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA"),
        Err(Error::InvalidField {
            field: "Version",
            ..
        })
    ));
    // Language letter out of A-Z: ConsentLanguage bits 108..120 = all ones.
    let mut bits = String::new();
    for c in CORE_1.bytes() {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            .bytes()
            .position(|x| x == c)
            .unwrap();
        bits.push_str(&format!("{v:06b}"));
    }
    bits.replace_range(108..120, "111111000000");
    let e = decode(&segment(&bits)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidField {
                field: "ConsentLanguage",
                bit: 108,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn error_encode_validation() {
    let d = day(2025, 1, 1);
    let base = TcModel::new(2, d, d);
    let check = |f: &dyn Fn(&mut TcModel), field: &str| {
        let mut m = base.clone();
        f(&mut m);
        match encode(&m) {
            Err(Error::Encode { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    };
    check(&|m| m.is_service_specific = false, "is_service_specific");
    check(&|m| m.cmp_id = 4096, "cmp_id");
    check(&|m| m.consent_screen = 64, "consent_screen");
    check(&|m| m.created = Deciseconds(1 << 36), "created");
    check(&|m| m.purpose_consents.insert(25), "purpose_consents");
    check(
        &|m| m.special_feature_optins.insert(13),
        "special_feature_optins",
    );
    check(
        &|m| m.purpose_legitimate_interests.insert(3),
        "purpose_legitimate_interests",
    );
    check(
        &|m| {
            m.vendor_consents.insert(0);
        },
        "vendor_consents",
    );
    check(
        &|m| {
            m.num_custom_purposes = 2;
            m.publisher_custom_consents.insert(3);
        },
        "publisher_custom_consents",
    );
    check(
        &|m| {
            m.publisher_restrictions.push(PublisherRestriction {
                purpose_id: 0,
                restriction_type: RestrictionType::NotAllowed,
                vendors: IdSet::new(),
            })
        },
        "publisher_restrictions.purpose_id",
    );
    // Policy version 2 allows LI on purpose 3 (older strings).
    let mut m = base.clone();
    m.policy_version = 2;
    m.purpose_legitimate_interests.insert(3);
    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
    // AllowedVendors are not written.
    let mut m = base.clone();
    m.vendors_allowed.insert(5);
    let back = decode(&encode(&m).unwrap()).unwrap();
    assert!(back.vendors_allowed.is_empty());
}

#[test]
fn gpp_errors() {
    let e = gpp::decode("DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA").unwrap_err();
    assert!(matches!(e, Error::GppStructure(_)), "{e}");
    let e = gpp::decode("DBABM~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YNN").unwrap_err();
    assert!(matches!(e, Error::GppStructure(_)), "{e}");
    let e = gpp::decode("CBABM~x").unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let e = gpp::decode("DBACNY~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA~1YN").unwrap_err();
    match &e {
        Error::GppSection {
            id: 6,
            name: "uspv1",
            source,
        } => {
            assert!(matches!(
                **source,
                Error::InvalidField {
                    segment: Segment::UspV1,
                    ..
                }
            ))
        }
        other => panic!("{other}"),
    }
    let e = gpp::decode("DBABLA~CVVVkkkkkpFY.gA").unwrap_err();
    assert!(e.to_string().contains("SubsectionType"), "{e}");
    let e = gpp::decode("DBABLA~DVVVkkkkkpFY").unwrap_err();
    assert!(
        e.to_string()
            .contains("usnat core segment: invalid Version"),
        "{e}"
    );
    let e = gpp::decode("DBABMA~CPSG_8APSG_8A").unwrap_err();
    assert!(
        matches!(&e, Error::GppSection { id: 2, source, .. } if matches!(**source, Error::Truncated { segment: Segment::Core, .. })),
        "{e}"
    );
    // Encoding: ids out of order, usnat values out of range.
    let g = GppString {
        sections: vec![
            Section::UspV1(UspV1 {
                version: 1,
                notice: UspFlag::Yes,
                opt_out_sale: UspFlag::No,
                lspa_covered: UspFlag::NotApplicable,
            }),
            Section::TcfEuV2(vector_6_fields()),
        ],
    };
    assert!(matches!(
        gpp::encode(&g),
        Err(Error::Encode {
            field: "sections",
            ..
        })
    ));
    let u = UsNat {
        mspa_covered_transaction: 0,
        ..UsNat::default()
    };
    assert!(matches!(
        gpp::encode(&GppString {
            sections: vec![Section::UsNat(u)]
        }),
        Err(Error::Encode {
            field: "usnat.mspa_covered_transaction",
            ..
        })
    ));
    let u = UsNat {
        sharing_opt_out: 3,
        ..UsNat::default()
    };
    assert!(matches!(
        gpp::encode(&GppString {
            sections: vec![Section::UsNat(u)]
        }),
        Err(Error::Encode {
            field: "usnat.sharing_opt_out",
            ..
        })
    ));
}

#[test]
fn builder_matches_api_defaults() {
    use assent_tcf::builder::{Choices, TcfParams, build};
    let params: TcfParams = serde_json::from_str(r#"{"cmp_id":300,"publisher_cc":"fr"}"#).unwrap();
    assert_eq!(params, {
        let mut p = TcfParams::new(300);
        p.publisher_cc = lang("FR");
        p
    });
    let choices = Choices {
        purpose_consents: vec![1, 2, 2, 10],
        purpose_legitimate_interests: vec![1, 2, 3, 7],
        special_features: vec![1],
        vendor_consents: vec![755, 28],
        vendor_legitimate_interests: vec![28, 91],
        vendors_disclosed: vec![4],
        publisher_consents: vec![1],
        publisher_legitimate_interests: vec![],
    };
    let updated = Utc.with_ymd_and_hms(2025, 6, 3, 14, 30, 12).unwrap();
    let m = build(&params, &choices, updated).unwrap();
    assert_eq!(m.created, day(2025, 6, 3));
    assert_eq!(m.last_updated, day(2025, 6, 3));
    assert_eq!(
        (m.cmp_version, m.consent_screen, m.policy_version),
        (1, 1, 5)
    );
    assert_eq!(m.purpose_consents, ps(&[1, 2, 10]));
    assert_eq!(m.purpose_legitimate_interests, ps(&[2, 7]));
    assert_eq!(m.vendors_disclosed, ids(&[4, 28, 91, 755]));
    assert_eq!(decode(&encode(&m).unwrap()).unwrap(), m);
    let bad = Choices {
        purpose_consents: vec![25],
        ..Choices::default()
    };
    assert!(matches!(
        build(&params, &bad, updated),
        Err(Error::Encode {
            field: "purpose_consents",
            ..
        })
    ));
    assert!(serde_json::from_str::<TcfParams>(r#"{"cmp_id":300,"cmp":1}"#).is_err());
}

// ------------------------------------------------------------------------------------------
// Inputs cargo fuzz found (crates/assent-tcf/FUZZING.md).

/// What the fuzz target checks: no panic, and what decodes and re-encodes decodes the same.
fn fuzz_invariants(s: &str) {
    if let Ok(mut m) = decode(s) {
        m.vendors_allowed.clear();
        if let Ok(again) = encode(&m) {
            assert_eq!(decode(&again), Ok(m));
        }
    }
    if let Ok(mut g) = gpp::decode(s) {
        for section in &mut g.sections {
            if let Section::TcfEuV2(m) = section {
                m.vendors_allowed.clear();
            }
        }
        if let Ok(again) = gpp::encode(&g) {
            assert_eq!(gpp::decode(&again), Ok(g));
        }
    }
}

#[test]
fn fuzz_regressions() {
    // A segment longer than the stack buffer whose bit length is not a multiple of 8: the heap
    // buffer was one byte short.
    fuzz_invariants(include_str!("regressions/long-segment-buffer.txt"));
    for n in [
        127, 128, 129, 130, 1023, 1024, 1025, 1026, 1027, 1029, 1030, 4001,
    ] {
        let mut t = CORE_1.to_string();
        while t.len() < n {
            t.push('A');
        }
        let m = decode(&t).unwrap();
        assert_eq!(m.cmp_id, 880);
        assert!(decode(&format!("{CORE_1}.I{}", "A".repeat(n))).is_ok());
    }
}
