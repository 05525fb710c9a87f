// Oracle for assent-tcf's differential test (tests/it/differential.rs).
//
// Reads JSON lines on stdin, each {"fields": <assent-tcf TcModel JSON>, "ours": "<TC string>"},
// and prints one JSON line per input:
//   {"iabgpp": "<@iabgpp/cmpapi TcfEuV2 encoding of fields>",
//    "iabtcf": <fields of @iabtechlabtcf/core TCString.decode(ours), in assent-tcf's names>}
// or {"error": "..."} when a library throws. Needs no network and no GVL: TcfEuV2 encodes
// without one and TCString.decode needs none.
'use strict';

const readline = require('node:readline');
const { TcfEuV2, RangeEntry } = require('@iabgpp/cmpapi');
const { TCString } = require('@iabtechlabtcf/core');

const RESTRICTION_TYPES = ['not_allowed', 'require_consent', 'require_li', 'undefined'];

function bools(ids, n) {
  const out = new Array(n).fill(false);
  for (const id of ids || []) out[id - 1] = true;
  return out;
}

function dateOf(value) {
  // assent-tcf writes RFC 3339 strings; Date parses them.
  return new Date(value);
}

function iabgppEncode(f) {
  const s = new TcfEuV2();
  const set = (name, value) => s.setFieldValue(name, value);
  set('CmpId', f.cmp_id);
  set('CmpVersion', f.cmp_version);
  set('ConsentScreen', f.consent_screen);
  set('ConsentLanguage', f.consent_language);
  set('VendorListVersion', f.vendor_list_version);
  set('PolicyVersion', f.policy_version);
  set('IsServiceSpecific', f.is_service_specific);
  set('UseNonStandardStacks', f.use_non_standard_texts);
  set('SpecialFeatureOptins', bools(f.special_feature_optins, 12));
  set('PurposeConsents', bools(f.purpose_consents, 24));
  set('PurposeLegitimateInterests', bools(f.purpose_legitimate_interests, 24));
  set('PurposeOneTreatment', f.purpose_one_treatment);
  set('PublisherCountryCode', f.publisher_country_code);
  set('VendorConsents', f.vendor_consents);
  set('VendorLegitimateInterests', f.vendor_legitimate_interests);
  set(
    'PublisherRestrictions',
    f.publisher_restrictions.map(
      (r) => new RangeEntry(r.purpose_id, RESTRICTION_TYPES.indexOf(r.restriction_type), r.vendors),
    ),
  );
  set('VendorsDisclosed', f.vendors_disclosed);
  set('PublisherConsents', bools(f.publisher_consents, 24));
  set('PublisherLegitimateInterests', bools(f.publisher_legitimate_interests, 24));
  // The custom bitfields take their length from NumCustomPurposes when set.
  set('NumCustomPurposes', f.num_custom_purposes);
  set('PublisherCustomConsents', bools(f.publisher_custom_consents, f.num_custom_purposes));
  set(
    'PublisherCustomLegitimateInterests',
    bools(f.publisher_custom_legitimate_interests, f.num_custom_purposes),
  );
  // Any other setFieldValue resets both dates to today, so the dates go last. Setting one
  // sets both.
  set('LastUpdated', dateOf(f.last_updated));
  set('Created', dateOf(f.created));
  return s.encode();
}

function ids(vector) {
  const out = [];
  vector.forEach((on, id) => {
    if (on) out.push(id);
  });
  return out;
}

function rfc3339(date) {
  // 2025-06-03T00:00:00.000Z -> 2025-06-03T00:00:00Z: assent-tcf writes a fraction only when
  // the tenths are not zero (2025-06-03T00:00:00.100Z).
  return date.toISOString().replace(/\.000Z$/, 'Z');
}

function iabtcfDecode(str) {
  const m = TCString.decode(str);
  const pr = m.publisherRestrictions;
  return {
    created: rfc3339(m.created),
    last_updated: rfc3339(m.lastUpdated),
    cmp_id: m.cmpId,
    cmp_version: m.cmpVersion,
    consent_screen: m.consentScreen,
    consent_language: m.consentLanguage,
    vendor_list_version: m.vendorListVersion,
    policy_version: m.policyVersion,
    is_service_specific: m.isServiceSpecific,
    use_non_standard_texts: m.useNonStandardTexts,
    special_feature_optins: ids(m.specialFeatureOptins),
    purpose_consents: ids(m.purposeConsents),
    purpose_legitimate_interests: ids(m.purposeLegitimateInterests),
    purpose_one_treatment: m.purposeOneTreatment,
    publisher_country_code: m.publisherCountryCode,
    vendor_consents: ids(m.vendorConsents),
    vendor_legitimate_interests: ids(m.vendorLegitimateInterests),
    publisher_restrictions: pr.getRestrictions().map((r) => ({
      purpose_id: r.purposeId,
      restriction_type: RESTRICTION_TYPES[r.restrictionType],
      vendors: pr.getVendors(r).slice().sort((a, b) => a - b),
    })),
    vendors_disclosed: ids(m.vendorsDisclosed),
    vendors_allowed: ids(m.vendorsAllowed),
    publisher_consents: ids(m.publisherConsents),
    publisher_legitimate_interests: ids(m.publisherLegitimateInterests),
    num_custom_purposes: m.numCustomPurposes,
    publisher_custom_consents: ids(m.publisherCustomConsents),
    publisher_custom_legitimate_interests: ids(m.publisherCustomLegitimateInterests),
  };
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
rl.on('line', (line) => {
  if (!line.trim()) return;
  const { fields, ours } = JSON.parse(line);
  const result = {};
  try {
    result.iabgpp = iabgppEncode(fields);
  } catch (e) {
    result.iabgpp_error = String(e && e.message ? e.message : e);
  }
  try {
    result.iabtcf = iabtcfDecode(ours);
  } catch (e) {
    result.iabtcf_error = String(e && e.message ? e.message : e);
  }
  out.push(JSON.stringify(result));
});
rl.on('close', () => {
  process.stdout.write(out.join('\n') + '\n');
});
