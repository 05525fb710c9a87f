//! The choices a notice makes: its actions' purposes and vendors, and under regulation `tcf`
//! the purposes and vendors its TC string encodes.

use super::NoticeItem;
use crate::consents::{Consents, PurposeChoice, Vendors};
use crate::error::FieldErrors;
use crate::json::Path;
use crate::tcf::PurposeMap;
use assent_tcf::TcModel;
use std::collections::{BTreeMap, HashMap};

/// The IAB purposes that TCF 2.2 lets a vendor process on legitimate interest. For the others
/// (1 and 3 to 6) a clear legitimate-interest bit is no objection, only the absence of a
/// basis, so it sets nothing.
const LI_PURPOSES: &[u8] = &[2, 7, 8, 9, 10, 11];

/// The consents of a notice: first what `string` (a decoded TC string, given only under
/// regulation `tcf`) encodes, then each action of `items` in order, which wins over the
/// string for what it names. Two actions that make opposite choices for the same purpose or
/// vendor (and legal basis) are an error at the later one (`events[3]`).
pub(super) fn consents_of(
    items: &[NoticeItem],
    string: Option<&TcModel>,
    map: &PurposeMap,
    path: Path<'_>,
    errors: &mut FieldErrors,
) -> Consents {
    let mut tally = Tally::default();
    if let Some(model) = string {
        tally.add_string(model, map);
    }
    let mut made: HashMap<(Target, &str, bool), (bool, usize)> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let Some(choice) = item.choice() else {
            continue;
        };
        let li = item.is_legitimate_interest();
        for (target, id) in [
            (Target::Purpose, item.purpose.as_deref()),
            (Target::Vendor, item.vendor.as_deref()),
        ] {
            let Some(id) = id else {
                continue;
            };
            match made.get(&(target, id, li)) {
                Some((earlier, j)) if *earlier != choice => {
                    errors.add(
                        path.index(i),
                        format!(
                            "{} '{id}' is {} here but {} at events[{j}]; one event makes one \
                             choice per {0} and legal basis",
                            target.name(),
                            verb(choice),
                            verb(*earlier),
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    made.insert((target, id, li), (choice, i));
                }
            }
            match target {
                Target::Purpose => tally.set_purpose(id, li, choice),
                Target::Vendor => tally.set_vendor(id, li, choice),
            }
        }
    }
    tally.into_consents()
}

fn verb(choice: bool) -> &'static str {
    if choice { "given" } else { "refused" }
}

/// What an action names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Purpose,
    Vendor,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Purpose => "purpose",
            Target::Vendor => "vendor",
        }
    }
}

/// Choices being gathered: purposes in the order they are first named, vendors by id, each
/// with its consent and legitimate-interest choice.
#[derive(Default)]
struct Tally {
    purposes: Vec<PurposeChoice>,
    vendors: BTreeMap<String, (Option<bool>, Option<bool>)>,
}

impl Tally {
    fn set_purpose(&mut self, id: &str, li: bool, choice: bool) {
        let index = match self.purposes.iter().position(|p| p.id == id) {
            Some(i) => i,
            None => {
                self.purposes.push(PurposeChoice {
                    id: id.to_owned(),
                    ..PurposeChoice::default()
                });
                self.purposes.len() - 1
            }
        };
        let purpose = &mut self.purposes[index];
        if li {
            purpose.enabled_li = Some(choice);
        } else {
            purpose.enabled = Some(choice);
        }
    }

    fn set_vendor(&mut self, id: &str, li: bool, choice: bool) {
        let slot = self.vendors.entry(id.to_owned()).or_default();
        if li {
            slot.1 = Some(choice);
        } else {
            slot.0 = Some(choice);
        }
    }

    /// What a TC string encodes, in the ids of the status:
    /// - every purpose id of the map: `enabled` is its purpose-consent bit; `enabled_li` is
    ///   `true` when its legitimate-interest bit is set, `false` when it is clear for a
    ///   purpose that allows legitimate interest ([`LI_PURPOSES`]);
    /// - every special-feature id of the map: `enabled` is its opt-in bit;
    /// - vendors, as `iab:<n>`: a consent bit is `enabled`, a legitimate-interest bit
    ///   `enabled_li`; a vendor of the DisclosedVendors segment without the bit is `disabled`
    ///   (`disabled_li`).
    fn add_string(&mut self, model: &TcModel, map: &PurposeMap) {
        for (id, n) in map.purposes() {
            self.set_purpose(id, false, model.purpose_consents.contains(n));
            let li = model.purpose_legitimate_interests.contains(n);
            if li || LI_PURPOSES.contains(&n) {
                self.set_purpose(id, true, li);
            }
        }
        for (id, n) in map.special_features() {
            self.set_purpose(id, false, model.special_feature_optins.contains(n));
        }
        for n in model.vendor_consents.iter() {
            self.set_vendor(&format!("iab:{n}"), false, true);
        }
        for n in model.vendor_legitimate_interests.iter() {
            self.set_vendor(&format!("iab:{n}"), true, true);
        }
        for n in model.vendors_disclosed.iter() {
            if !model.vendor_consents.contains(n) {
                self.set_vendor(&format!("iab:{n}"), false, false);
            }
            if !model.vendor_legitimate_interests.contains(n) {
                self.set_vendor(&format!("iab:{n}"), true, false);
            }
        }
    }

    fn into_consents(self) -> Consents {
        let mut vendors = Vendors::default();
        for (id, (consent, li)) in self.vendors {
            match consent {
                Some(true) => vendors.enabled.push(id.clone()),
                Some(false) => vendors.disabled.push(id.clone()),
                None => {}
            }
            match li {
                Some(true) => vendors.enabled_li.push(id),
                Some(false) => vendors.disabled_li.push(id),
                None => {}
            }
        }
        Consents {
            purposes: self.purposes,
            vendors,
            ..Consents::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice::{LegalBasis, NoticeAction};
    use assent_tcf::builder::{Choices, TcfParams, build};
    use chrono::DateTime;

    fn item(action: NoticeAction, purpose: Option<&str>, vendor: Option<&str>) -> NoticeItem {
        NoticeItem {
            action,
            purpose: purpose.map(Into::into),
            vendor: vendor.map(Into::into),
            value: None,
            legal_basis: None,
        }
    }

    fn consents(items: &[NoticeItem], string: Option<&TcModel>) -> (Consents, FieldErrors) {
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        let c = consents_of(
            items,
            string,
            &PurposeMap::default(),
            root.key("events"),
            &mut errors,
        );
        (c, errors)
    }

    #[test]
    fn each_action_sets_the_slot_of_its_legal_basis() {
        use NoticeAction::*;
        let mut li = item(ConsentRefused, Some("ads"), Some("g"));
        li.legal_basis = Some(LegalBasis::LegitimateInterest);
        let mut contract = item(ConsentGiven, Some("billing"), None);
        contract.legal_basis = Some(LegalBasis::Contract);
        let (c, errors) = consents(
            &[
                item(PreferenceShown, Some("shown"), Some("shown-v")),
                item(ClickAgreeToAll, Some("all"), None),
                item(ClickSaveChoices, Some("saved"), None),
                li,
                contract,
            ],
            None,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let purposes: Vec<_> = c
            .purposes
            .iter()
            .map(|p| (p.id.as_str(), p.enabled, p.enabled_li))
            .collect();
        assert_eq!(
            purposes,
            vec![
                ("all", Some(true), None),
                ("ads", None, Some(false)),
                ("billing", Some(true), None)
            ]
        );
        assert_eq!(c.vendors.disabled_li, vec!["g"]);
        assert!(c.vendors.enabled.is_empty() && c.vendors.disabled.is_empty());
    }

    #[test]
    fn opposite_choices_in_one_notice_are_refused_at_the_later_one() {
        use NoticeAction::*;
        let mut refused_li = item(ConsentRefused, Some("p"), None);
        refused_li.legal_basis = Some(LegalBasis::LegitimateInterest);
        let (_, errors) = consents(
            &[
                item(ConsentGiven, Some("p"), None),
                item(ConsentGiven, Some("p"), None),
                refused_li,
                item(ClickDisagreeToAll, Some("p"), None),
            ],
            None,
        );
        assert_eq!(
            errors.as_map().keys().collect::<Vec<_>>(),
            vec!["events[3]"],
            "a repeated choice, or the other basis, is no contradiction"
        );
        assert!(errors.as_map()["events[3]"].contains("refused here but given at events[0]"));
    }

    fn tc(choices: Choices) -> TcModel {
        let params = TcfParams::new(300);
        let model = build(&params, &choices, DateTime::<chrono::Utc>::UNIX_EPOCH).unwrap();
        assent_tcf::decode(&assent_tcf::encode(&model).unwrap()).unwrap()
    }

    #[test]
    fn a_tc_string_sets_mapped_purposes_features_and_vendors_and_actions_win() {
        let model = tc(Choices {
            purpose_consents: vec![1, 3],
            purpose_legitimate_interests: vec![7],
            special_features: vec![2],
            vendor_consents: vec![755],
            vendor_legitimate_interests: vec![28],
            vendors_disclosed: vec![28, 91, 755],
            ..Choices::default()
        });
        let (c, errors) = consents(
            &[item(NoticeAction::ConsentRefused, Some("cookies"), None)],
            Some(&model),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let get = |id: &str| {
            let p = c.purposes.iter().find(|p| p.id == id).unwrap();
            (p.enabled, p.enabled_li)
        };
        assert_eq!(get("cookies"), (Some(false), None), "the action wins");
        assert_eq!(get("select_basic_ads"), (Some(false), Some(false)));
        assert_eq!(get("create_ads_profile"), (Some(true), None));
        assert_eq!(get("measure_ad_performance"), (Some(false), Some(true)));
        assert_eq!(get("device_characteristics"), (Some(true), None));
        assert_eq!(get("geolocation_data"), (Some(false), None));
        assert_eq!(c.vendors.enabled, vec!["iab:755"]);
        assert_eq!(c.vendors.disabled, vec!["iab:28", "iab:91"]);
        assert_eq!(c.vendors.enabled_li, vec!["iab:28"]);
        assert_eq!(c.vendors.disabled_li, vec!["iab:755", "iab:91"]);
    }
}
