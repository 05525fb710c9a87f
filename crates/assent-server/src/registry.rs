//! Each organization's purpose registry as event writes need it (current versions and strict
//! mode), kept in memory for a moment: every event write reads it, and reading the store each
//! time would slow ingestion.
//!
//! An entry lives at most [`REGISTRY_TTL`]. A change to the registry or to the settings made
//! through this node drops the organization's entry at once, so this node's next event sees
//! it; other nodes sharing a PostgreSQL database see it within [`REGISTRY_TTL`].

use crate::error::ApiError;
use assent_model::OrganizationId;
use assent_model::registry::Registry;
use assent_store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a node trusts what it last read of an organization's registry.
pub const REGISTRY_TTL: Duration = Duration::from_secs(1);

/// Organizations whose registry a node keeps at most; beyond it the memory is cleared.
const MAX_CACHED_ORGANIZATIONS: usize = 10_000;

/// The registries this node read recently.
#[derive(Default)]
pub struct RegistryCache {
    entries: Mutex<HashMap<OrganizationId, (Instant, Arc<Registry>)>>,
    /// Moves on every [`RegistryCache::forget`], so that a read that started before a change
    /// does not put back what the change dropped.
    changes: AtomicU64,
}

impl RegistryCache {
    /// The registry of `org`, from memory when it was read within [`REGISTRY_TTL`].
    pub async fn get(
        &self,
        store: &dyn Store,
        org: &OrganizationId,
    ) -> Result<Arc<Registry>, ApiError> {
        if let Some((read_at, registry)) = self.entries().get(org)
            && read_at.elapsed() < REGISTRY_TTL
        {
            return Ok(registry.clone());
        }
        let changes = self.changes.load(Ordering::Acquire);
        let read_at = Instant::now();
        let strict = store
            .get_settings(org)
            .await?
            .is_some_and(|s| s.value.strict_mode);
        let purposes = store.list_purposes(org).await?;
        let registry = Arc::new(Registry::new(strict, &purposes));
        let mut entries = self.entries();
        if self.changes.load(Ordering::Acquire) == changes {
            if entries.len() >= MAX_CACHED_ORGANIZATIONS {
                entries.clear();
            }
            entries.insert(org.clone(), (read_at, registry.clone()));
        }
        Ok(registry)
    }

    /// Drops what this node read of `org`'s registry, after it changed here.
    pub fn forget(&self, org: &OrganizationId) {
        let mut entries = self.entries();
        self.changes.fetch_add(1, Ordering::AcqRel);
        entries.remove(org);
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<OrganizationId, (Instant, Arc<Registry>)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
