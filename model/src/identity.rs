//! Workload identity: SPIFFE IDs `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` (Istio's
//! form), and the DNS name derived from one (`<sa>.<ns>.sa.<trust-domain>`, Linkerd's
//! style) that workload certificates also carry, so a TLS client whose only check is
//! the server name (Pingora's rustls connector) verifies the peer's identity in the
//! handshake.

use std::fmt;

/// The default trust domain (`MeshConfig.trustDomain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The service account of a workload that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// A workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a workload identity (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>): {reason}")]
pub struct IdentityError {
    pub value: String,
    pub reason: &'static str,
}

impl Identity {
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Identity {
        Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Parse `spiffe://td/ns/NS/sa/SA`.
    pub fn parse(value: &str) -> Result<Identity, IdentityError> {
        let err = |reason| IdentityError {
            value: value.to_string(),
            reason,
        };
        let rest = value
            .strip_prefix("spiffe://")
            .ok_or_else(|| err("it does not start with spiffe://"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => {
                for p in [td, ns, sa] {
                    if !valid_label(p) {
                        return Err(err(
                            "each part must be lower-case letters, digits, '-' or '.'",
                        ));
                    }
                }
                Ok(Identity::new(*td, *ns, *sa))
            }
            _ => Err(err("the path is not /ns/<namespace>/sa/<service-account>")),
        }
    }

    /// `spiffe://cluster.local/ns/default/sa/todolist`.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// `todolist.default.sa.cluster.local`: the DNS SAN of this identity's
    /// certificates, checked as the server name by mesh clients.
    pub fn dns_name(&self) -> String {
        format!(
            "{}.{}.sa.{}",
            self.service_account, self.namespace, self.trust_domain
        )
    }

    /// AuthorizationPolicy `principals` form: the URI without `spiffe://`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// A DNS-label-like part: non-empty, lower-case ASCII letters, digits, `-`, `.`.
fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_dns_name() {
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/todolist").unwrap();
        assert_eq!(id, Identity::new("cluster.local", "default", "todolist"));
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/default/sa/todolist");
        assert_eq!(id.dns_name(), "todolist.default.sa.cluster.local");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/todolist");
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "spiffe://cluster.local/ns/default",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/ns/A/sa/b",
            "spiffe://cluster.local/ns//sa/b",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
