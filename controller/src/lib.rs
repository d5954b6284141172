//! isthmus-controller: istiod's job for the local (no cluster) mode. Reads a
//! directory of Istio YAML, keeps the last good version of every file, compiles one
//! snapshot per gateway workload and pushes new versions on every change.

pub mod cert_dir;
pub mod local;
pub mod source;
pub mod state;

pub use local::{secrets_on_top, ExtraSources, GatewayFeed, LocalController};
pub use source::{load_paths, SourceError};
pub use state::ConfigState;
