//! Standard Webhooks 1.0 signing.
//!
//! A secret is shown to users as `whsec_` followed by the standard base64 of its key bytes. A
//! message is signed by HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`, and the signature is
//! sent as `v1,<base64>` in the `webhook-signature` header, beside `webhook-id` and
//! `webhook-timestamp`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of the textual form of a webhook secret.
const PREFIX: &str = "whsec_";

/// Number of random bytes in a generated secret.
const GENERATED_LEN: usize = 32;

/// Header carrying the message id, the same for every attempt of one delivery.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time, in seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the `v1,<base64>` signature.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The key that signs webhook payloads for one destination.
///
/// Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl WebhookSecret {
    /// Creates a new secret of 32 random bytes, and returns it with its `whsec_…` text, the
    /// form to show the user once and to store.
    pub fn generate() -> (WebhookSecret, String) {
        let key: [u8; GENERATED_LEN] = rand::random();
        let secret = WebhookSecret { key: key.to_vec() };
        let text = secret.to_whsec();
        (secret, text)
    }

    /// Reads a secret from its `whsec_<base64>` text.
    pub fn parse(s: &str) -> Result<WebhookSecret, String> {
        let Some(encoded) = s.trim().strip_prefix(PREFIX) else {
            return Err("a webhook secret must start with whsec_".to_owned());
        };
        let key = STANDARD.decode(encoded).map_err(|_| {
            "a webhook secret must be whsec_ followed by standard base64".to_owned()
        })?;
        if key.is_empty() {
            return Err("a webhook secret must not be empty after whsec_".to_owned());
        }
        Ok(WebhookSecret { key })
    }

    /// The `whsec_<base64>` text of this secret, as [`WebhookSecret::parse`] reads it.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// Signs one message: returns the `webhook-signature` header value
    /// `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_round_trips_through_its_text() {
        let (secret, text) = WebhookSecret::generate();
        assert!(text.starts_with("whsec_"));
        assert_eq!(secret.key.len(), 32);
        assert_eq!(WebhookSecret::parse(&text).unwrap(), secret);
        assert_eq!(secret.to_whsec(), text);
        let (other, _) = WebhookSecret::generate();
        assert_ne!(other, secret, "two generated secrets must differ");
    }

    #[test]
    fn parse_rejects_malformed_text() {
        let no_prefix = WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err();
        assert!(no_prefix.contains("whsec_"), "{no_prefix}");
        let bad_base64 = WebhookSecret::parse("whsec_not base64!").unwrap_err();
        assert!(bad_base64.contains("base64"), "{bad_base64}");
        let empty = WebhookSecret::parse("whsec_").unwrap_err();
        assert!(empty.contains("empty"), "{empty}");
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let (secret, text) = WebhookSecret::generate();
        let debug = format!("{secret:?}");
        assert!(
            !debug.contains(text.trim_start_matches("whsec_")),
            "{debug}"
        );
        assert!(debug.contains("redacted"));
    }

    #[test]
    fn signature_matches_the_specification_example() {
        // The example of the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signature_equals_the_standardwebhooks_crate_signature() {
        let text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ours = WebhookSecret::parse(text).unwrap();
        let theirs = standardwebhooks::Webhook::new(text).unwrap();
        for (msg_id, timestamp, body) in [
            (
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                &br#"{"test": 2432232314}"#[..],
            ),
            ("msg_1", 0, &b""[..]),
            ("a.b.c", -1, "caf\u{e9} \u{2713}".as_bytes()),
        ] {
            assert_eq!(
                ours.sign(msg_id, timestamp, body),
                theirs.sign(msg_id, timestamp, body).unwrap()
            );
        }
    }

    #[test]
    fn signature_verifies_with_the_standardwebhooks_crate() {
        let (secret, text) = WebhookSecret::generate();
        let body = br#"{"type":"consent.changed","data":{"user":"alice@example.com"}}"#;
        let msg_id = "msg_0190d7a4-8f3e-7c1a-9b2d-4e5f6a7b8c9d";
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signature = secret.sign(msg_id, timestamp, body);

        let mut headers = axum::http::HeaderMap::new();
        headers.insert(HEADER_ID, msg_id.parse().unwrap());
        headers.insert(HEADER_TIMESTAMP, timestamp.to_string().parse().unwrap());
        headers.insert(HEADER_SIGNATURE, signature.parse().unwrap());

        let verifier = standardwebhooks::Webhook::new(&text).unwrap();
        verifier.verify(body, &headers).unwrap();

        // A changed body must not verify.
        assert!(verifier.verify(b"{}", &headers).is_err());
        // Nor a signature made with another secret.
        let (other, _) = WebhookSecret::generate();
        headers.insert(
            HEADER_SIGNATURE,
            other.sign(msg_id, timestamp, body).parse().unwrap(),
        );
        assert!(verifier.verify(body, &headers).is_err());
    }
}
