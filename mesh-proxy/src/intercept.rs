//! Traffic interception as in a pod (`isthmus proxy init`, istio-init's job): the
//! iptables `nat` rules that REDIRECT the workload's inbound TCP to the sidecar's
//! inbound capture port (15006) and its outbound TCP to the outbound capture port
//! (15001), except the proxy's own traffic (marked with `SO_MARK`, Istio's 1337),
//! loopback, and the excluded inbound ports. The chains carry Istio's names, so a
//! reader who knows istio-iptables finds their way; [`rules`] is pure (tested), and
//! [`apply`]/[`remove`] run the real `iptables`.

use std::process::Command;

/// What to intercept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptOptions {
    pub inbound_capture_port: u16,
    pub outbound_capture_port: u16,
    /// The mark of the proxy's own sockets: never redirected.
    pub proxy_mark: u32,
    /// Inbound ports left alone (the proxy's own admin/health ports, ssh...).
    pub exclude_inbound_ports: Vec<u16>,
}

impl Default for InterceptOptions {
    fn default() -> InterceptOptions {
        InterceptOptions {
            inbound_capture_port: crate::sidecar::INBOUND_CAPTURE_PORT,
            outbound_capture_port: crate::sidecar::OUTBOUND_CAPTURE_PORT,
            proxy_mark: crate::sidecar::PROXY_MARK,
            exclude_inbound_ports: vec![15020, 15021, 15090],
        }
    }
}

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("cannot run iptables ({0}); is it installed (apt-get install iptables)?")]
    Spawn(std::io::Error),
    #[error("`iptables {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_REDIRECT",
];

/// The `iptables` argument lists, in order, that set up interception.
pub fn rules(o: &InterceptOptions) -> Vec<Vec<String>> {
    let nat = |rest: &str| -> Vec<String> {
        let mut v = vec!["-t".to_string(), "nat".to_string()];
        v.extend(rest.split_whitespace().map(str::to_string));
        v
    };
    let mut out: Vec<Vec<String>> = CHAINS.iter().map(|c| nat(&format!("-N {c}"))).collect();
    // Inbound: everything TCP to the inbound capture port, but the excluded ports.
    for p in &o.exclude_inbound_ports {
        out.push(nat(&format!(
            "-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"
        )));
    }
    out.push(nat("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"));
    out.push(nat(&format!(
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.inbound_capture_port
    )));
    out.push(nat("-A PREROUTING -p tcp -j ISTIO_INBOUND"));
    // Outbound: the proxy's own calls to this workload's own address (over lo) go
    // to its inbound, as any peer's; its other traffic and loopback pass; the rest
    // is redirected. (The inbound reaches the app on 127.0.0.1, which passes.)
    out.push(nat(&format!(
        "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.0/8 -m mark --mark {} -j ISTIO_IN_REDIRECT",
        o.proxy_mark
    )));
    out.push(nat(&format!(
        "-A ISTIO_OUTPUT -m mark --mark {} -j RETURN",
        o.proxy_mark
    )));
    out.push(nat("-A ISTIO_OUTPUT -o lo -j RETURN"));
    out.push(nat("-A ISTIO_OUTPUT -d 127.0.0.0/8 -j RETURN"));
    out.push(nat("-A ISTIO_OUTPUT -p tcp -j ISTIO_REDIRECT"));
    out.push(nat(&format!(
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        o.outbound_capture_port
    )));
    out.push(nat("-A OUTPUT -p tcp -j ISTIO_OUTPUT"));
    out
}

/// The argument lists that undo [`rules`] (errors ignored by [`remove`]).
pub fn cleanup_rules() -> Vec<Vec<String>> {
    let nat = |rest: &str| -> Vec<String> {
        let mut v = vec!["-t".to_string(), "nat".to_string()];
        v.extend(rest.split_whitespace().map(str::to_string));
        v
    };
    let mut out = vec![
        nat("-D PREROUTING -p tcp -j ISTIO_INBOUND"),
        nat("-D OUTPUT -p tcp -j ISTIO_OUTPUT"),
    ];
    for c in CHAINS {
        out.push(nat(&format!("-F {c}")));
    }
    for c in CHAINS {
        out.push(nat(&format!("-X {c}")));
    }
    out
}

fn iptables(args: &[String]) -> Result<(), InterceptError> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(InterceptError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InterceptError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Install the rules (after removing earlier ones, so that it can run twice).
/// Returns the commands run, for the log.
pub fn apply(o: &InterceptOptions) -> Result<Vec<String>, InterceptError> {
    remove();
    let mut done = Vec::new();
    for r in rules(o) {
        iptables(&r)?;
        done.push(format!("iptables {}", r.join(" ")));
    }
    Ok(done)
}

/// Remove the rules, if present.
pub fn remove() {
    for r in cleanup_rules() {
        let _ = iptables(&r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_redirect_both_ways_and_spare_the_proxy() {
        let r: Vec<String> = rules(&InterceptOptions::default())
            .into_iter()
            .map(|r| r.join(" "))
            .collect();
        let has = |s: &str| r.iter().any(|x| x == s);
        assert!(has(
            "-t nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"
        ));
        assert!(has(
            "-t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"
        ));
        assert!(has("-t nat -A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN"));
        assert!(has(
            "-t nat -A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN"
        ));
        // The mark check comes before the redirect.
        let pos = |s: &str| r.iter().position(|x| x == s);
        assert!(
            pos("-t nat -A ISTIO_OUTPUT -m mark --mark 1337 -j RETURN")
                < pos("-t nat -A ISTIO_OUTPUT -p tcp -j ISTIO_REDIRECT")
        );
    }
}
