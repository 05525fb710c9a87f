//! Helpers to read untrusted JSON strictly, collecting every problem with the path of the field
//! at fault instead of stopping at the first.

use crate::error::FieldErrors;
use crate::ids::check_identifier;
use crate::limits::{MAX_JSON_DEPTH, MAX_METADATA_BYTES, MAX_STRING_BYTES};
use serde_json::{Map, Value};

/// Where a value sits in a request body (`consents.purposes[0].enabled`, `[3].user`). Built on
/// the stack as parsing descends, without allocating; written out only when an error needs it.
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    /// The body itself.
    Root,
    /// A field of an object.
    Key(&'a Path<'a>, &'a str),
    /// An element of an array.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    /// The path of field `key` of the value at this path.
    pub fn key<'b>(&'b self, key: &'b str) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Key(self, key)
    }

    /// The path of element `i` of the array at this path.
    pub fn index<'b>(&'b self, i: usize) -> Path<'b>
    where
        'a: 'b,
    {
        Path::Index(self, i)
    }

    /// The path as reported for the value itself: the root of a body is `body`.
    fn shown(&self) -> String {
        match self {
            Path::Root => "body".to_owned(),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// The JSON type of a value, as said in messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the bounds that hold for a whole body: nesting depth and string sizes.
pub fn check_bounds(value: &Value, path: Path<'_>, errors: &mut FieldErrors) {
    walk_bounds(value, path, 1, errors);
}

fn walk_bounds(value: &Value, path: Path<'_>, depth: usize, errors: &mut FieldErrors) {
    if depth > MAX_JSON_DEPTH {
        errors.add(
            path.shown(),
            format!("is nested too deeply; the limit is {MAX_JSON_DEPTH} levels"),
        );
        return;
    }
    match value {
        // Proof files (data URIs under `proofs`) are bounded by the body size and the proof
        // limit instead.
        Value::String(s) if s.len() > MAX_STRING_BYTES && !is_proof_item(&path) => {
            errors.add(
                path.shown(),
                format!("is {} bytes long; the limit is {MAX_STRING_BYTES}", s.len()),
            );
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_bounds(item, path.index(i), depth + 1, errors);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                if key.len() > MAX_STRING_BYTES {
                    errors.add(path.shown(), "has a key longer than the string limit");
                    continue;
                }
                walk_bounds(item, path.key(key), depth + 1, errors);
            }
        }
        _ => {}
    }
}

/// True when `path` is an item of a `proofs` array (`proofs[0]`, `[3].proofs[1]`).
fn is_proof_item(path: &Path<'_>) -> bool {
    matches!(path, Path::Index(parent, _) if matches!(parent, Path::Key(_, "proofs")))
}

/// The size of a metadata object written as compact JSON, the measure of its limit.
pub fn metadata_size(map: &Map<String, Value>) -> usize {
    /// Counts the bytes written to it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, map) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// A JSON object being read field by field. Fields that are never read are reported as unknown
/// by [`Fields::finish`].
pub struct Fields<'a, 'p> {
    map: &'a Map<String, Value>,
    path: Path<'p>,
    allowed: &'static [&'static str],
}

impl<'a, 'p> Fields<'a, 'p> {
    /// Starts reading `value` as an object whose fields are `allowed`; records an error and
    /// returns `None` if it is not an object.
    pub fn of(
        value: &'a Value,
        path: Path<'p>,
        allowed: &'static [&'static str],
        errors: &mut FieldErrors,
    ) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Fields { map, path, allowed }),
            other => {
                errors.add(
                    path.shown(),
                    format!("must be an object, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The path of this object.
    pub fn path(&self) -> Path<'p> {
        self.path
    }

    /// The path of one of its fields.
    pub fn child<'s>(&'s self, key: &'s str) -> Path<'s> {
        self.path.key(key)
    }

    /// The raw value of a field, if present.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// Reports every field not in the allowed list.
    pub fn finish(self, errors: &mut FieldErrors) {
        for key in self.map.keys() {
            if !self.allowed.contains(&key.as_str()) {
                errors.add(
                    self.child(key),
                    format!(
                        "is not a known field; expected one of: {}",
                        self.allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// A string field; `null` counts as absent.
    pub fn string(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a str> {
        match self.map.get(key)? {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => {
                errors.add(
                    self.child(key),
                    format!("must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An identifier field (1–255 characters, no control characters); `null` counts as absent.
    pub fn identifier(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a str> {
        let s = self.string(key, errors)?;
        match check_identifier(s) {
            Ok(()) => Some(s),
            Err(message) => {
                errors.add(self.child(key), message);
                None
            }
        }
    }

    /// A boolean field where `null` means "no choice".
    pub fn choice(&self, key: &str, errors: &mut FieldErrors) -> Option<bool> {
        match self.map.get(key)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                errors.add(
                    self.child(key),
                    format!("must be a boolean or null, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A free-form `metadata` object, bounded in size; `null` counts as absent.
    pub fn metadata(&self, key: &str, errors: &mut FieldErrors) -> Option<Map<String, Value>> {
        match self.map.get(key)? {
            Value::Null => None,
            Value::Object(map) => {
                let size = metadata_size(map);
                if size > MAX_METADATA_BYTES {
                    errors.add(
                        self.child(key),
                        format!("is {size} bytes; the limit is {MAX_METADATA_BYTES}"),
                    );
                    return None;
                }
                Some(map.clone())
            }
            other => {
                errors.add(
                    self.child(key),
                    format!("must be an object, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array field; `null` counts as absent.
    pub fn array(&self, key: &str, errors: &mut FieldErrors) -> Option<&'a Vec<Value>> {
        match self.map.get(key)? {
            Value::Null => None,
            Value::Array(items) => Some(items),
            other => {
                errors.add(
                    self.child(key),
                    format!("must be an array, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An array of identifiers without duplicates.
    pub fn identifier_list(&self, key: &str, errors: &mut FieldErrors) -> Vec<String> {
        let Some(items) = self.array(key, errors) else {
            return Vec::new();
        };
        let path = self.child(key);
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => match check_identifier(s) {
                    Ok(()) if out.contains(s) => {
                        errors.add(path.index(i), format!("'{s}' is listed twice"));
                    }
                    Ok(()) => out.push(s.clone()),
                    Err(message) => errors.add(path.index(i), message),
                },
                other => errors.add(
                    path.index(i),
                    format!("must be a string, not {}", type_name(other)),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let v = json!({"id": "a", "enabld": true});
        let mut errors = FieldErrors::new();
        let root = Path::Root;
        let consents = root.key("consents");
        let purposes = consents.key("purposes");
        let path = purposes.index(0);
        let f = Fields::of(&v, path, &["id", "enabled"], &mut errors).unwrap();
        f.finish(&mut errors);
        assert!(errors.as_map().contains_key("consents.purposes[0].enabld"));
    }

    #[test]
    fn depth_is_bounded() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!({ "a": v });
        }
        let mut errors = FieldErrors::new();
        check_bounds(&v, Path::Root, &mut errors);
        assert_eq!(errors.len(), 1);
    }
}
