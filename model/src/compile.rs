//! Compilation of a Store into per-gateway snapshots. PLACEHOLDER.
