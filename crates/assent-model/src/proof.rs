//! Proofs: files that show how a consent was given (a signed form, a recorded call, an email).
//!
//! A proof arrives as a data URI (`data:application/pdf;base64,…`). Its type is read from its
//! bytes, never only from the declared mime type, and it is stored under its content address:
//! the SHA-256 of its bytes in hex, a dot, and the extension of its type. The same file sent
//! twice is stored once.

use crate::error::DomainError;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Cursor;

/// Most bytes of a proof once encoded as a data URI (API.md §5: 15 MB).
pub const MAX_PROOF_ENCODED_BYTES: usize = 15 * 1000 * 1000;

/// The types of file a proof may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofKind {
    /// A PDF document.
    Pdf,
    /// A PNG image.
    Png,
    /// A JPEG image.
    Jpeg,
    /// A GIF image.
    Gif,
    /// A Word 97-2003 document (an OLE compound file).
    Doc,
    /// A Word document (Office Open XML).
    Docx,
    /// An Outlook message (an OLE compound file).
    Msg,
}

impl ProofKind {
    /// Every kind, for messages and tests.
    pub const ALL: [ProofKind; 7] = [
        ProofKind::Pdf,
        ProofKind::Png,
        ProofKind::Jpeg,
        ProofKind::Gif,
        ProofKind::Doc,
        ProofKind::Docx,
        ProofKind::Msg,
    ];

    /// The file extension, which ends the proof's id.
    pub fn extension(self) -> &'static str {
        match self {
            ProofKind::Pdf => "pdf",
            ProofKind::Png => "png",
            ProofKind::Jpeg => "jpg",
            ProofKind::Gif => "gif",
            ProofKind::Doc => "doc",
            ProofKind::Docx => "docx",
            ProofKind::Msg => "msg",
        }
    }

    /// The mime type, used when the proof is given back as a data URI.
    pub fn mime(self) -> &'static str {
        match self {
            ProofKind::Pdf => "application/pdf",
            ProofKind::Png => "image/png",
            ProofKind::Jpeg => "image/jpeg",
            ProofKind::Gif => "image/gif",
            ProofKind::Doc => "application/msword",
            ProofKind::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            ProofKind::Msg => "application/vnd.ms-outlook",
        }
    }

    /// The kind a stored id ends with.
    pub fn of_extension(ext: &str) -> Option<ProofKind> {
        ProofKind::ALL.into_iter().find(|k| k.extension() == ext)
    }

    /// The kind of a file, read from its bytes (magic numbers, and for compound files the
    /// class of their root storage).
    pub fn detect(bytes: &[u8]) -> Option<ProofKind> {
        if infer::doc::is_docx(bytes) {
            return Some(ProofKind::Docx);
        }
        if infer::doc::is_doc(bytes) {
            return Some(ProofKind::Doc);
        }
        if is_outlook_message(bytes) {
            return Some(ProofKind::Msg);
        }
        if infer::archive::is_pdf(bytes) {
            return Some(ProofKind::Pdf);
        }
        if infer::image::is_png(bytes) {
            return Some(ProofKind::Png);
        }
        if infer::image::is_jpeg(bytes) {
            return Some(ProofKind::Jpeg);
        }
        if infer::image::is_gif(bytes) {
            return Some(ProofKind::Gif);
        }
        None
    }
}

/// The class id of an Outlook message's root storage (MS-OXMSG).
const OUTLOOK_MESSAGE_CLSID: &str = "00020d0b-0000-0000-c000-000000000046";

/// True when `bytes` are an OLE compound file holding an Outlook message: either its root
/// says so, or it has the property stream every message has.
fn is_outlook_message(bytes: &[u8]) -> bool {
    const OLE_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    if !bytes.starts_with(&OLE_MAGIC) {
        return false;
    }
    cfb::CompoundFile::open(Cursor::new(bytes)).is_ok_and(|file| {
        file.root_entry().clsid().to_string() == OUTLOOK_MESSAGE_CLSID
            || file.is_stream("/__properties_version1.0")
    })
}

/// A proof file, checked and addressed by its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    /// `<sha256 hex>.<extension>`.
    pub id: String,
    /// The type, read from the bytes.
    pub kind: ProofKind,
    /// The file.
    pub bytes: Vec<u8>,
}

impl ProofFile {
    /// Reads a `data:<mime>;base64,<bytes>` URI. `field` names the field at fault in errors.
    pub fn from_data_uri(uri: &str, field: &str) -> Result<ProofFile, DomainError> {
        let invalid = |message: String| DomainError::invalid_field(field, message);
        if uri.len() > MAX_PROOF_ENCODED_BYTES {
            return Err(invalid(format!(
                "is {} bytes long; a proof may be at most {MAX_PROOF_ENCODED_BYTES} bytes once encoded",
                uri.len()
            )));
        }
        let rest = uri
            .strip_prefix("data:")
            .ok_or_else(|| invalid("must be a data URI: data:<mime>;base64,<bytes>".into()))?;
        let (header, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("must be a data URI: data:<mime>;base64,<bytes>".into()))?;
        if !header.to_ascii_lowercase().ends_with(";base64") {
            return Err(invalid(
                "must be base64-encoded (data:<mime>;base64,…)".into(),
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| invalid(format!("is not valid base64: {e}")))?;
        let kind = ProofKind::detect(&bytes).ok_or_else(|| {
            invalid(
                "is not a PDF, PNG, JPEG, GIF, DOC, DOCX or MSG file (its content says so, \
                 whatever its declared type)"
                    .into(),
            )
        })?;
        Ok(ProofFile::new(kind, bytes))
    }

    /// A proof of `kind` with its content address.
    pub fn new(kind: ProofKind, bytes: Vec<u8>) -> ProofFile {
        let digest = Sha256::digest(&bytes);
        let mut id = String::with_capacity(64 + 5);
        for b in digest {
            id.push_str(&format!("{b:02x}"));
        }
        id.push('.');
        id.push_str(kind.extension());
        ProofFile { id, kind, bytes }
    }

    /// The proof as a data URI, as `GET /consents/proofs/{id}` gives it back.
    pub fn data_uri(&self) -> String {
        format!(
            "data:{};base64,{}",
            self.kind.mime(),
            base64::engine::general_purpose::STANDARD.encode(&self.bytes)
        )
    }
}

/// True when `id` has the shape of a proof id: 64 lowercase hex digits, a dot, a known
/// extension.
pub fn is_proof_id(id: &str) -> bool {
    id.split_once('.').is_some_and(|(hash, ext)| {
        hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && ProofKind::of_extension(ext).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
    ];

    fn uri(mime: &str, bytes: &[u8]) -> String {
        format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn the_type_comes_from_the_bytes_not_the_declared_mime() {
        let proof = ProofFile::from_data_uri(&uri("application/pdf", PNG), "file").unwrap();
        assert_eq!(proof.kind, ProofKind::Png);
        assert!(proof.id.ends_with(".png"));
        assert!(is_proof_id(&proof.id));
    }

    #[test]
    fn unknown_content_is_refused() {
        let err = ProofFile::from_data_uri(&uri("application/pdf", b"hello"), "file");
        assert!(matches!(err, Err(DomainError::Invalid { .. })));
    }

    #[test]
    fn the_id_is_the_content_address() {
        let a = ProofFile::new(ProofKind::Pdf, b"%PDF-1.4 one".to_vec());
        let b = ProofFile::new(ProofKind::Pdf, b"%PDF-1.4 one".to_vec());
        let c = ProofFile::new(ProofKind::Pdf, b"%PDF-1.4 two".to_vec());
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(ProofFile::from_data_uri(&a.data_uri(), "file").unwrap(), a);
    }

    #[test]
    fn malformed_uris_name_the_problem() {
        for bad in ["nope", "data:image/png,abc", "data:image/png;base64,@@@"] {
            let Err(DomainError::Invalid { errors, .. }) = ProofFile::from_data_uri(bad, "file")
            else {
                panic!("{bad} accepted");
            };
            assert!(errors.as_map().contains_key("file"), "{bad}");
        }
    }
}
