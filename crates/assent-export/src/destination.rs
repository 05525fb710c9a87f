//! Where an export's files go: a URL turned into an object store and a prefix.

use crate::ExportError;
use assent_model::export::SUCCESS_FILE;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// An opened destination.
pub struct Destination {
    /// The store the files are written to.
    pub store: Arc<dyn ObjectStore>,
    /// The folder inside the store that the URL names.
    pub prefix: Path,
    /// The URL, as given.
    pub url: String,
}

/// Opens `url`: `file:///absolute/folder` (created if missing); `s3://bucket/prefix` and
/// `gs://bucket/prefix` in builds with the `s3` and `gcs` features, configured from the
/// usual environment variables of each cloud (`AWS_*`, `GOOGLE_*`).
pub fn open_destination(url: &str) -> Result<Destination, ExportError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ExportError::Destination(format!("{url} is not a URL: {e}")))?;
    let bad = |m: String| ExportError::Destination(m);
    match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|()| bad(format!("{url} does not name an absolute local folder")))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad(format!("cannot open {}: {e}", dir.display())))?;
            Ok(Destination {
                store: Arc::new(store),
                prefix: Path::default(),
                url: url.to_owned(),
            })
        }
        "s3" => s3(&parsed, url),
        "gs" => gcs(&parsed, url),
        other => Err(bad(format!(
            "{url}: the scheme {other}:// is not supported (file://, s3://, gs://)"
        ))),
    }
}

#[cfg(feature = "s3")]
fn s3(parsed: &url::Url, url: &str) -> Result<Destination, ExportError> {
    let built = object_store::aws::AmazonS3Builder::from_env()
        .with_url(url)
        .build();
    bucket(parsed, url, built)
}

#[cfg(not(feature = "s3"))]
fn s3(_: &url::Url, url: &str) -> Result<Destination, ExportError> {
    Err(not_built(url, "s3"))
}

#[cfg(feature = "gcs")]
fn gcs(parsed: &url::Url, url: &str) -> Result<Destination, ExportError> {
    let built = object_store::gcp::GoogleCloudStorageBuilder::from_env()
        .with_url(url)
        .build();
    bucket(parsed, url, built)
}

#[cfg(not(feature = "gcs"))]
fn gcs(_: &url::Url, url: &str) -> Result<Destination, ExportError> {
    Err(not_built(url, "gcs"))
}

/// A bucket destination from its built store; the URL's path is the folder in the bucket.
#[cfg(any(feature = "s3", feature = "gcs"))]
fn bucket<S: ObjectStore>(
    parsed: &url::Url,
    url: &str,
    built: object_store::Result<S>,
) -> Result<Destination, ExportError> {
    let store = built.map_err(|e| ExportError::Destination(format!("{url}: {e}")))?;
    Ok(Destination {
        store: Arc::new(store),
        prefix: bucket_prefix(parsed),
        url: url.to_owned(),
    })
}

/// The error for a cloud scheme this build lacks.
#[cfg(not(all(feature = "s3", feature = "gcs")))]
fn not_built(url: &str, feature: &str) -> ExportError {
    let scheme = url.split("://").next().unwrap_or_default();
    ExportError::Destination(format!(
        "{url}: this build of Assent has no {scheme}:// support (build with --features {feature})"
    ))
}

/// The folder a bucket URL names inside its bucket.
#[cfg_attr(not(any(feature = "s3", feature = "gcs")), allow(dead_code))]
fn bucket_prefix(parsed: &url::Url) -> Path {
    Path::from(parsed.path().trim_matches('/'))
}

impl Destination {
    /// Removes what an earlier run left in `folder`, `_SUCCESS` first, so that no reader
    /// takes a half-replaced folder for a finished one.
    pub async fn clear(&self, folder: &Path) -> Result<(), ExportError> {
        let success = folder.clone().join(SUCCESS_FILE);
        match self.store.delete(&success).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(write_error(&success, e)),
        }
        let old: Vec<_> = self
            .store
            .list(Some(folder))
            .try_collect()
            .await
            .map_err(|e| write_error(folder, e))?;
        for meta in old {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(write_error(&meta.location, e)),
            }
        }
        Ok(())
    }

    /// Writes the empty `_SUCCESS` that tells readers the folder is complete.
    pub async fn put_success(&self, folder: &Path) -> Result<(), ExportError> {
        let path = folder.clone().join(SUCCESS_FILE);
        self.store
            .put(&path, PutPayload::new())
            .await
            .map(|_| ())
            .map_err(|e| write_error(&path, e))
    }
}

pub(crate) fn write_error(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: path.to_string(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes_and_relative_paths_are_refused() {
        let msg = |u: &str| match open_destination(u) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{u} accepted"),
        };
        assert!(
            msg("ftp://host/x").contains("not supported"),
            "{}",
            msg("ftp://host/x")
        );
        assert!(msg("not a url").contains("is not a URL"));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_needs_the_feature() {
        let e = open_destination("s3://bucket/exports")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--features s3"), "{e}");
    }

    #[test]
    fn a_bucket_urls_path_is_the_prefix() {
        let parsed = url::Url::parse("s3://bucket/exports/nightly/").unwrap();
        assert_eq!(bucket_prefix(&parsed).as_ref(), "exports/nightly");
        let parsed = url::Url::parse("gs://bucket").unwrap();
        assert_eq!(bucket_prefix(&parsed).as_ref(), "");
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_name_the_bucket() {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_url("s3://consents-bucket/exports")
            .with_region("eu-west-1")
            .build()
            .expect("an s3 store");
        assert!(store.to_string().contains("consents-bucket"), "{store}");
    }

    #[cfg(feature = "gcs")]
    #[test]
    fn gs_urls_name_the_bucket() {
        let store = object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_url("gs://consents-bucket/exports")
            .build()
            .expect("a gcs store");
        assert!(store.to_string().contains("consents-bucket"), "{store}");
    }

    #[tokio::test]
    async fn a_file_destination_is_created_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let url = url::Url::from_file_path(&target).unwrap().to_string();
        let d = open_destination(&url).unwrap();
        assert!(target.is_dir());
        let folder = Path::from("export-id=a/date=2026-01-01");
        d.store
            .put(
                &folder.clone().join("old.json.gz"),
                PutPayload::from_static(b"x"),
            )
            .await
            .unwrap();
        d.put_success(&folder).await.unwrap();
        assert!(target.join("export-id=a/date=2026-01-01/_SUCCESS").exists());
        d.clear(&folder).await.unwrap();
        assert!(!target.join("export-id=a/date=2026-01-01/_SUCCESS").exists());
        assert!(
            !target
                .join("export-id=a/date=2026-01-01/old.json.gz")
                .exists()
        );
    }
}
