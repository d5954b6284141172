//! isthmus-model: the pure core of isthmus. Istio resource types, YAML loading with
//! file:line positions, validation and `analyze` findings with Istio's IST codes, and
//! compilation of resources into immutable per-proxy [`snapshot::Snapshot`]s with
//! their routing. No I/O: callers hand in bytes and get values back.

pub mod analyze;
pub mod certs;
pub mod compile;
pub mod der;
pub mod diag;
pub mod host;
pub mod identity;
pub mod load;
pub mod mesh;
pub mod pem;
pub mod position;
pub mod push;
pub mod resources;
pub mod snapshot;
pub mod validate;

pub use diag::{Diagnostic, Level};
pub use resources::{Kind, Origin, Resource, Spec, Store};
pub use snapshot::Snapshot;
