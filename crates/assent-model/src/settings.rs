//! An organization's settings (Assent): for now, whether strict mode refuses events that name
//! what the purpose registry does not hold.

use crate::error::{DomainError, FieldErrors};
use crate::json::{Fields, Path, check_bounds, type_name};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The settings of an organization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationSettings {
    /// Refuse (400) events naming a purpose, preference, value or purpose channel that is not
    /// in the purpose registry.
    #[serde(default)]
    pub strict_mode: bool,
}

const SETTINGS_FIELDS: &[&str] = &["organization_id", "strict_mode", "updated_at"];

impl OrganizationSettings {
    /// Applies a `PATCH /v1/settings` body of organization `organization_id` to `self`;
    /// fields left out keep their value. `organization_id` and `updated_at` are accepted so
    /// that what `GET` answers can be sent back; `updated_at` is ignored.
    pub fn patched(
        &self,
        body: &Value,
        organization_id: &str,
    ) -> Result<OrganizationSettings, DomainError> {
        let mut errors = FieldErrors::new();
        check_bounds(body, Path::Root, &mut errors);
        errors.clone().into_result()?;
        let Some(f) = Fields::of(body, Path::Root, SETTINGS_FIELDS, &mut errors) else {
            return Err(DomainError::invalid(errors));
        };
        let mut out = self.clone();
        if let Some(o) = f.string("organization_id", &mut errors)
            && o != organization_id
        {
            errors.add(
                "organization_id",
                "must equal the organization_id of the query",
            );
        }
        match f.get("strict_mode") {
            None => {}
            Some(Value::Bool(b)) => out.strict_mode = *b,
            Some(other) => errors.add(
                "strict_mode",
                format!("must be true or false, not {}", type_name(other)),
            ),
        }
        f.string("updated_at", &mut errors);
        f.finish(&mut errors);
        errors.into_result()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_mode_is_switched_and_other_fields_refused() {
        let off = OrganizationSettings::default();
        let on = off.patched(&json!({"strict_mode": true}), "acme").unwrap();
        assert!(on.strict_mode);
        assert_eq!(on.patched(&json!({}), "acme").unwrap(), on);
        for (body, path) in [
            (json!({"strict_mode": "yes"}), "strict_mode"),
            (json!({"strict": true}), "strict"),
            (json!({"organization_id": "other"}), "organization_id"),
            (json!([]), "body"),
        ] {
            let Err(DomainError::Invalid { errors, .. }) = off.patched(&body, "acme") else {
                panic!("{body} accepted")
            };
            assert!(errors.as_map().contains_key(path), "{body}: {errors:?}");
        }
    }
}
