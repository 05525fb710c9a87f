//! Filters of list and delete routes: `field=value`, `field[$in]=a&field[$in]=b`, `$nin`, `$ne`,
//! ranges `$lt|$lte|$gt|$gte` on dates and numbers, and dotted paths into nested objects
//! (`metadata.booking_id=42`). A path that crosses an array matches if any element matches.

use crate::error::DomainError;
use crate::time::Timestamp;
use serde_json::Value;
use std::cmp::Ordering;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal to one of the values (`field=v`, repeated `field=v` or `field[$in]=v`).
    In,
    /// Equal to none of the values (`$ne`, `$nin`).
    NotIn,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
}

/// One condition on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The dotted path, split.
    pub path: Vec<String>,
    /// The operator.
    pub op: Op,
    /// The operands, as written in the query.
    pub values: Vec<String>,
}

/// All conditions of a query; a document matches when it meets every one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    conditions: Vec<Condition>,
}

impl Filter {
    /// Parses filter parameters. `roots` are the fields that may be filtered on; a root listed
    /// with a trailing `.` (like `metadata.`) accepts any nested path below it.
    pub fn parse(pairs: &[(String, String)], roots: &[&str]) -> Result<Filter, DomainError> {
        let mut filter = Filter::default();
        for (key, value) in pairs {
            let (field, op) = split_operator(key)?;
            check_root(field, roots)?;
            let path: Vec<String> = field.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(DomainError::invalid_field(key, "is not a valid field path"));
            }
            if matches!(op, Op::Lt | Op::Lte | Op::Gt | Op::Gte) && !is_ordered_operand(value) {
                return Err(DomainError::invalid_field(
                    key,
                    "must be a number or an RFC 3339 date-time",
                ));
            }
            match filter
                .conditions
                .iter_mut()
                .find(|c| c.path == path && c.op == op && matches!(op, Op::In | Op::NotIn))
            {
                Some(existing) => existing.values.push(value.clone()),
                None => filter.conditions.push(Condition {
                    path,
                    op,
                    values: vec![value.clone()],
                }),
            }
        }
        Ok(filter)
    }

    /// True when no condition is set.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// True when some condition is on the top-level field `field`.
    pub fn mentions(&self, field: &str) -> bool {
        self.conditions.iter().any(|c| c.path[0] == field)
    }

    /// Adds `field=value` unless the filter already says something about `field`.
    pub fn default_to(&mut self, field: &str, value: &str) {
        if !self.mentions(field) {
            self.conditions.push(Condition {
                path: vec![field.to_owned()],
                op: Op::In,
                values: vec![value.to_owned()],
            });
        }
    }

    /// The conditions.
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// True when `doc` meets every condition.
    pub fn matches(&self, doc: &Value) -> bool {
        self.conditions.iter().all(|c| c.matches(doc))
    }
}

impl Condition {
    /// True when `doc` meets this condition.
    pub fn matches(&self, doc: &Value) -> bool {
        let mut found = Vec::new();
        collect(doc, &self.path, &mut found);
        match self.op {
            Op::In => found
                .iter()
                .any(|v| self.values.iter().any(|q| equals(v, q))),
            Op::NotIn => !found
                .iter()
                .any(|v| self.values.iter().any(|q| equals(v, q))),
            Op::Lt | Op::Lte | Op::Gt | Op::Gte => found.iter().any(|v| {
                compare(v, &self.values[0]).is_some_and(|o| match self.op {
                    Op::Lt => o == Ordering::Less,
                    Op::Lte => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    _ => o != Ordering::Less,
                })
            }),
        }
    }
}

fn split_operator(key: &str) -> Result<(&str, Op), DomainError> {
    let Some(open) = key.find('[') else {
        return Ok((key, Op::In));
    };
    let (field, rest) = key.split_at(open);
    let op = match rest {
        "[$in]" => Op::In,
        "[$nin]" | "[$ne]" => Op::NotIn,
        "[$lt]" => Op::Lt,
        "[$lte]" => Op::Lte,
        "[$gt]" => Op::Gt,
        "[$gte]" => Op::Gte,
        _ => {
            return Err(DomainError::invalid_field(
                key,
                "unknown filter operator; use $in, $nin, $ne, $lt, $lte, $gt or $gte",
            ));
        }
    };
    Ok((field, op))
}

fn check_root(field: &str, roots: &[&str]) -> Result<(), DomainError> {
    let ok = roots.iter().any(|root| match root.strip_suffix('.') {
        Some(prefix) => field == prefix || field.starts_with(root),
        None => field == *root,
    });
    if ok {
        Ok(())
    } else {
        let names: Vec<&str> = roots.iter().map(|r| r.trim_end_matches('.')).collect();
        Err(DomainError::invalid_field(
            field,
            format!(
                "cannot be filtered on; filterable fields: {}",
                names.join(", ")
            ),
        ))
    }
}

fn is_ordered_operand(s: &str) -> bool {
    s.parse::<f64>().is_ok_and(f64::is_finite) || Timestamp::parse(s).is_ok()
}

fn collect<'a>(value: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match (value, path.split_first()) {
        (Value::Array(items), _) => {
            for item in items {
                collect(item, path, out);
            }
        }
        (_, None) => out.push(value),
        (Value::Object(map), Some((key, rest))) => {
            if let Some(child) = map.get(key) {
                collect(child, rest, out);
            }
        }
        _ => {}
    }
}

fn equals(value: &Value, q: &str) -> bool {
    match value {
        Value::String(s) => {
            s == q || matches!((Timestamp::parse(s), Timestamp::parse(q)), (Ok(a), Ok(b)) if a == b)
        }
        Value::Number(n) => q.parse::<f64>().ok() == n.as_f64(),
        Value::Bool(b) => q == if *b { "true" } else { "false" },
        Value::Null => q == "null",
        _ => false,
    }
}

fn compare(value: &Value, q: &str) -> Option<Ordering> {
    match value {
        Value::Number(n) => n.as_f64()?.partial_cmp(&q.parse::<f64>().ok()?),
        Value::String(s) => {
            let a = Timestamp::parse(s).ok()?;
            let b = Timestamp::parse(q).ok()?;
            Some(a.cmp(&b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ROOTS: &[&str] = &["status", "created_at", "metadata.", "consents."];

    fn filter(pairs: &[(&str, &str)]) -> Result<Filter, DomainError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Filter::parse(&pairs, ROOTS)
    }

    #[test]
    fn nested_metadata_matches_numbers_and_strings() {
        let f = filter(&[("metadata.booking_id", "42")]).unwrap();
        assert!(f.matches(&json!({"metadata": {"booking_id": 42}})));
        assert!(f.matches(&json!({"metadata": {"booking_id": "42"}})));
        assert!(!f.matches(&json!({"metadata": {"booking_id": 43}})));
    }

    #[test]
    fn in_and_nin() {
        let f = filter(&[("status[$in]", "a"), ("status[$in]", "b")]).unwrap();
        assert!(f.matches(&json!({"status": "b"})));
        let f = filter(&[("status[$nin]", "a"), ("status[$ne]", "b")]).unwrap();
        assert!(!f.matches(&json!({"status": "b"})));
        assert!(f.matches(&json!({"status": "c"})));
    }

    #[test]
    fn date_ranges_compare_instants() {
        let f = filter(&[("created_at[$gte]", "2024-01-01T00:00:00Z")]).unwrap();
        assert!(f.matches(&json!({"created_at": "2024-01-01T01:00:00.000Z"})));
        assert!(!f.matches(&json!({"created_at": "2023-12-31T23:00:00.000Z"})));
    }

    #[test]
    fn arrays_match_any_element() {
        let f = filter(&[("consents.purposes.id", "news")]).unwrap();
        assert!(f.matches(&json!({"consents": {"purposes": [{"id": "a"}, {"id": "news"}]}})));
    }

    #[test]
    fn bad_filters_are_rejected() {
        assert!(filter(&[("nope", "1")]).is_err());
        assert!(filter(&[("status[$regex]", "1")]).is_err());
        assert!(filter(&[("created_at[$gt]", "soon")]).is_err());
        assert!(filter(&[("metadata..x", "1")]).is_err());
    }
}
