//! Errors of the domain: what a request got wrong, and which rule it broke.

use std::collections::BTreeMap;
use std::fmt;

/// Problems found in a request body or query, keyed by the JSON path of the field at fault
/// (`consents.purposes[0].enabled`, or `[3].user` inside a batch).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// An empty set of errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the field at `path` is wrong, and why. The first message for a path wins.
    pub fn add(&mut self, path: impl ToString, message: impl Into<String>) {
        self.0
            .entry(path.to_string())
            .or_insert_with(|| message.into());
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many fields are at fault.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The errors as a map from path to message.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Adds every error of `other` to this set.
    pub fn extend(&mut self, other: FieldErrors) {
        for (path, message) in other.0 {
            self.add(path, message);
        }
    }

    /// A one-line summary naming the first field at fault, for the `message` of a response.
    pub fn summary(&self) -> String {
        match self.0.iter().next() {
            None => "invalid request".to_owned(),
            Some((path, message)) if self.0.len() == 1 => format!("{path}: {message}"),
            Some((path, message)) => {
                format!("{path}: {message} (and {} more)", self.0.len() - 1)
            }
        }
    }

    /// `Ok(())` when empty, otherwise the errors as an invalid-request [`DomainError`].
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DomainError::invalid(self))
        }
    }
}

/// A request that breaks a rule of the domain. Each kind maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainError {
    /// The request is malformed or breaks a validation rule (400).
    Invalid {
        /// A sentence describing the problem.
        message: String,
        /// The fields at fault.
        errors: FieldErrors,
    },
    /// The thing asked for does not exist in the organization (404).
    NotFound(String),
    /// The request contradicts what is stored (409).
    Conflict(String),
}

impl DomainError {
    /// An invalid request described by its field errors.
    pub fn invalid(errors: FieldErrors) -> Self {
        DomainError::Invalid {
            message: errors.summary(),
            errors,
        }
    }

    /// An invalid request with one field at fault.
    pub fn invalid_field(path: impl ToString, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.add(path, message);
        Self::invalid(errors)
    }

    /// An invalid request that no single field explains.
    pub fn bad_request(message: impl Into<String>) -> Self {
        DomainError::Invalid {
            message: message.into(),
            errors: FieldErrors::new(),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainError::Invalid { message, .. } => f.write_str(message),
            DomainError::NotFound(message) | DomainError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DomainError {}
