//! A real pebble (Let's Encrypt's RFC 8555 test CA) with pebble-challtestsrv as its
//! DNS (every name resolves to 127.0.0.1), on free loopback ports, for ACME tests.
//! Debian's pebble package ships without pebble's test certificates, so a P-256 CA
//! and a leaf for localhost/127.0.0.1 are made here with `openssl`. HTTP-01 is
//! validated on the port the test names (the gateway's HTTP listener), TLS-ALPN-01
//! on another one ([`Pebble::start_ports`]: the gateway's HTTPS listener). The
//! issuing root changes at every start: [`Pebble::issuing_root`] fetches it;
//! [`verify_chain`] checks an issued chain against it with `openssl verify`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_ports, run, wait_for_port, Proc};

/// A running pebble and its DNS; both are killed on drop.
pub struct Pebble {
    dir: tempfile::TempDir,
    /// pebble (its log goes to stdout); `None` while stopped.
    proc: Option<Proc>,
    /// Orders accepted by earlier runs (before a restart).
    past_orders: usize,
    _dns: Proc,
    dns_port: u16,
    /// The ACME server (`https://ADDR/dir`).
    pub listen: SocketAddr,
    /// The management interface (`/roots/0`).
    pub management: SocketAddr,
}

/// `name` as found on `PATH`, if it is there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A P-256 CA (`ca.pem`) and a server certificate for localhost and 127.0.0.1
/// signed by it (`cert.pem`, `key.pem`) in `dir`.
pub fn make_server_pki(dir: &Path) {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=isthmus pebble test CA",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.pem")));
    run(Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=localhost"])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("leaf.csr")));
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write leaf.ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-set_serial", "1"])
        .arg("-in")
        .arg(dir.join("leaf.csr"))
        .arg("-CA")
        .arg(dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-extfile")
        .arg(dir.join("leaf.ext"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
}

impl Pebble {
    /// Start pebble validating HTTP-01 on 127.0.0.1:`http_port`, and wait until its
    /// directory answers. `None`, with a message on stderr, when pebble is not
    /// installed (`apt-get install pebble`; `scripts/deps.sh` does it).
    pub fn start(http_port: u16) -> Option<Pebble> {
        Pebble::start_with(http_port, None)
    }

    /// [`Pebble::start`] with certificates valid for `validity` (pebble's default is
    /// five years).
    pub fn start_with(http_port: u16, validity: Option<Duration>) -> Option<Pebble> {
        Pebble::launch(http_port, None, validity)
    }

    /// Start pebble validating HTTP-01 on 127.0.0.1:`http_port` and TLS-ALPN-01 on
    /// 127.0.0.1:`tls_port` (see [`Pebble::start`]).
    pub fn start_ports(http_port: u16, tls_port: u16) -> Option<Pebble> {
        Pebble::launch(http_port, Some(tls_port), None)
    }

    fn launch(http_port: u16, tls_port: Option<u16>, validity: Option<Duration>) -> Option<Pebble> {
        let (Some(pebble), Some(dns)) =
            (find_program("pebble"), find_program("pebble-challtestsrv"))
        else {
            eprintln!(
                "SKIPPED: pebble or pebble-challtestsrv is not installed (apt-get install pebble, or scripts/deps.sh)"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        make_server_pki(dir.path());
        let ports = free_ports(5);
        let (listen, management, dns_port, dns_mgmt) = (ports[0], ports[1], ports[2], ports[3]);
        let tls_port = tls_port.unwrap_or(ports[4]);
        let mut config = pebble_config(
            listen,
            management,
            &dir.path().join("cert.pem"),
            &dir.path().join("key.pem"),
            http_port,
            tls_port,
        );
        if let Some(v) = validity {
            config = config.replace(
                "\"tlsPort\"",
                &format!(
                    "\"certificateValidityPeriod\": {},\n    \"tlsPort\"",
                    v.as_secs().max(1)
                ),
            );
        }
        std::fs::write(dir.path().join("pebble.json"), config).expect("write pebble.json");

        let dns_proc = Proc::spawn(
            Command::new(dns)
                .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
        );
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], dns_port)),
            Duration::from_secs(20),
        );
        let mut p = Pebble {
            proc: Some(spawn_pebble(&pebble, dir.path(), dns_port)),
            dir,
            past_orders: 0,
            _dns: dns_proc,
            dns_port,
            listen: SocketAddr::from(([127, 0, 0, 1], listen)),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
        };
        p.wait_ready();
        Some(p)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get(&self.directory_url()).is_none() {
            let running = self.proc.as_mut().is_some_and(|p| p.is_running());
            assert!(
                running && Instant::now() < deadline,
                "pebble's directory did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop pebble. It keeps accounts, orders and roots in memory only: they are gone.
    pub fn stop(&mut self) {
        self.past_orders = self.orders();
        // Dropping the process kills it.
        self.proc = None;
    }

    /// Start pebble again (after [`Pebble::stop`], or stopping it now) on the same
    /// ports and configuration: a new issuing root, no accounts.
    pub fn restart(&mut self) {
        self.stop();
        let pebble = find_program("pebble").expect("pebble was found at start");
        self.proc = Some(spawn_pebble(&pebble, self.dir.path(), self.dns_port));
        self.wait_ready();
    }

    /// `https://127.0.0.1:PORT/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The CA of pebble's own HTTPS certificate (to trust for the directory).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// [`Pebble::ca_path`]'s PEM, base64 (an Issuer's `spec.acme.caBundle`).
    pub fn ca_bundle_base64(&self) -> String {
        let out = Command::new("openssl")
            .args(["base64", "-A", "-in"])
            .arg(self.ca_path())
            .output()
            .expect("run openssl base64");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The root that issues certificates in this run (management `/roots/0`), PEM.
    pub fn issuing_root(&self) -> String {
        let url = format!("https://{}/roots/0", self.management);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pem) = self.get(&url).filter(|b| b.contains("BEGIN CERTIFICATE")) {
                return pem;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Write the issuing root to a file in pebble's temporary directory.
    pub fn issuing_root_file(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, self.issuing_root()).expect("write issuing root");
        path
    }

    /// Orders pebble has accepted so far, over restarts (its `Added order` lines).
    pub fn orders(&mut self) -> usize {
        let now = self.proc.as_mut().map_or(0, |p| {
            p.output()
                .iter()
                .filter(|l| l.contains("Added order"))
                .count()
        });
        self.past_orders + now
    }

    /// The body of a 200 answer from `url` (trusting [`Pebble::ca_path`]).
    fn get(&self, url: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-s", "-f", "--max-time", "5", "--cacert"])
            .arg(self.ca_path())
            .arg(url)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// pebble with the configuration in `dir`, resolving names through `dns_port`.
fn spawn_pebble(pebble: &Path, dir: &Path, dns_port: u16) -> Proc {
    Proc::spawn(
        Command::new(pebble)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .args(["-strict=false"])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0"),
    )
}

/// pebble's JSON configuration.
fn pebble_config(
    listen: u16,
    management: u16,
    cert: &Path,
    key: &Path,
    http_port: u16,
    tls_port: u16,
) -> String {
    format!(
        r#"{{
  "pebble": {{
    "listenAddress": "127.0.0.1:{listen}",
    "managementListenAddress": "127.0.0.1:{management}",
    "certificate": "{cert}",
    "privateKey": "{key}",
    "httpPort": {http_port},
    "tlsPort": {tls_port},
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }}
}}
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

/// Check `chain_pem` (leaf first, then intermediates, as an ACME CA returns it) with
/// `openssl verify` against `root` (e.g. [`Pebble::issuing_root_file`]); `Err` with
/// openssl's output when it does not verify.
pub fn verify_chain(root: &Path, chain_pem: &str) -> Result<(), String> {
    let blocks: Vec<&str> = chain_pem
        .split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .collect();
    let Some((leaf, rest)) = blocks.split_first() else {
        return Err("no certificate in the chain".into());
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (leaf_path, rest_path) = (dir.path().join("leaf.pem"), dir.path().join("rest.pem"));
    std::fs::write(&leaf_path, leaf).map_err(|e| e.to_string())?;
    std::fs::write(&rest_path, rest.concat()).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-CAfile"]).arg(root);
    if !rest.is_empty() {
        cmd.arg("-untrusted").arg(&rest_path);
    }
    let out = cmd.arg(&leaf_path).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
