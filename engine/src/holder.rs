//! The snapshot holder: the one place a proxy reads its current [`Snapshot`] from.
//! One writer stores a new snapshot; readers take an `Arc` without locking, so a
//! request keeps the snapshot it started on while a newer one is swapped in.

use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_model::snapshot::Snapshot;

/// Shared, cheaply cloned handle on the current snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotHolder {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SnapshotHolder {
    pub fn new(initial: Arc<Snapshot>) -> SnapshotHolder {
        SnapshotHolder {
            current: Arc::new(ArcSwap::new(initial)),
        }
    }

    /// The current snapshot. Lock-free; the caller keeps it as long as it needs.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replace the snapshot. Requests already holding the old one finish on it.
    pub fn store(&self, next: Arc<Snapshot>) {
        self.current.store(next);
    }
}

impl Default for SnapshotHolder {
    fn default() -> SnapshotHolder {
        SnapshotHolder::new(Arc::new(Snapshot::default()))
    }
}
