//! isthmus-controller: istiod's job. Sources (the YAML directory, the certificate
//! directory, issued Secrets) keep the last good version of every resource
//! ([`local`], [`state`]); the [`publisher`] compiles one snapshot per proxy (a
//! dynamic set of gateways and sidecars) on every change; the mesh CA ([`ca`]) signs
//! workload certificates; the push server ([`push`]) serves proxies in other
//! processes.

pub mod ca;
pub mod cert_dir;
pub mod local;
pub mod publisher;
pub mod push;
pub mod source;
pub mod state;

pub use local::{secrets_on_top, ExtraSources, LocalController};
pub use publisher::{ProxyFeed, ProxyKind, ProxySet, Publisher, Versioned};
pub use source::{load_paths, SourceError};
pub use state::ConfigState;
