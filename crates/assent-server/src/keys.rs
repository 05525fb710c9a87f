//! API keys: making them, and hashing and checking their secrets with argon2id.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use assent_model::{OrganizationId, Timestamp};
use assent_store::ApiKey;
use rand::Rng;
use rand::distr::Alphanumeric;

/// A new API key with its secret in clear, which is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The key as stored (with the secret's hash).
    pub record: ApiKey,
    /// The secret, to give to the caller.
    pub secret: String,
}

fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Makes a new key for `organization` with a fresh random secret.
pub fn issue(organization: OrganizationId, name: Option<String>) -> IssuedKey {
    let secret = random_string(40);
    let now = Timestamp::now();
    IssuedKey {
        record: ApiKey {
            id: uuid::Uuid::now_v7().to_string(),
            organization_id: organization,
            key: format!("ak_{}", random_string(24)),
            name,
            enabled: true,
            secret_hash: hash_secret(&secret),
            created_at: now,
            updated_at: now,
        },
        secret,
    }
}

/// The argon2id hash of a secret, as a PHC string with its own random salt.
pub fn hash_secret(secret: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// True when `secret` matches `hash` (compared in constant time by argon2).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash of no real secret, checked when a key does not exist so that a wrong key takes as
/// long to refuse as a wrong secret.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&random_string(40)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_against_their_hash_only() {
        let hash = hash_secret("right");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("right", &hash));
        assert!(!verify_secret("wrong", &hash));
    }
}
