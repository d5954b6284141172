//! The proxy engine every role runs, on Pingora's codecs and TLS: the snapshot
//! holder ([`SnapshotHolder`]), the routing decision ([`RouterProxy`]), our HTTP/1.1
//! and HTTP/2 proxy core ([`h1`], `h2`) over our TCP transport ([`conn`]) and
//! upstream pool (`pool`), the DNS cache ([`dns`]), and listeners started and
//! stopped at run time ([`start_http_listener`], [`start_https_listener`] with its
//! SNI certificate resolver [`SniResolver`], [`start_inbound_listener`]).

pub mod acme_challenge;
pub mod conn;
pub mod dns;
pub mod h1;
mod h2;
pub mod holder;
pub mod limits;
pub mod listener;
pub mod mesh;
mod overload;
pub mod passthrough;
mod pool;
pub mod proxy;
pub mod tls;

pub use acme_challenge::{AcmeChallenges, AlpnChallenges, ChallengeTokens};
pub use holder::SnapshotHolder;
pub use limits::Limits;
pub use listener::{
    connect_marked, start_http_listener, start_https_listener, start_inbound_listener,
    start_listener, BoundListener, ListenError, ListenerConfig, ListenerHandle, STOP_GRACE,
};
pub use mesh::{InboundMode, WorkloadCerts, WorkloadMaterial};
pub use proxy::{ListenerRole, RouterProxy, CONNECT_TIMEOUT};
pub use tls::{Accepted, CertificateError, SniResolver};
