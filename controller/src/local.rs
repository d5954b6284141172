//! The local controller: the YAML directory as the config source, one snapshot per
//! gateway workload, pushed through `watch` channels (the in-process equivalent of
//! istiod's push). Changes are picked up by inotify (`notify`), with a slow poll as a
//! safety net for events the watcher can miss. Two optional directories add Secrets
//! ([`ExtraSources`]), read and watched the same way:
//!
//! - the certificate directory (`up --cert-dir`): PEM files made elsewhere, as
//!   Secrets ([`crate::cert_dir`] has the naming rule);
//! - the Secrets the gateway issued itself over ACME (the state directory's
//!   `secrets/`): only its Secrets are taken.
//!
//! When several sources hold a Secret of the same namespace/name, the most specific
//! one wins: config directory < certificate directory < issued Secrets. A certificate
//! file is meant for this gateway, where a config-directory Secret may be a shared
//! placeholder; an issued Secret is what a cert-manager Certificate asked for (as
//! cert-manager overwrites a Certificate's Secret; the others serve until then).
//! Every change that applies is handed to the [`Publisher`], which compiles and
//! pushes per proxy; this module only reads and merges.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use isthmus_model::mesh::MeshOptions;
use isthmus_model::{Kind, Level, Resource, Store};
use tokio::sync::{mpsc, watch};

use crate::cert_dir::{CertDir, CertDirReport};
use crate::publisher::{ProxySet, Publisher, Versioned};
use crate::source::{read_paths, read_paths_skipping, SourceError};
use crate::state::{ApplyReport, ConfigState};

/// The directories a [`LocalController`] reads besides the config directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtraSources<'a> {
    /// Secrets the gateway issued itself (`STATE/secrets`); read once it exists.
    pub issued: Option<&'a Path>,
    /// PEM certificates and keys ([`crate::cert_dir`]); must exist.
    pub cert_dir: Option<&'a Path>,
    /// The state directory (`up --state-dir`): never read as configuration, also
    /// when it sits inside the config directory (its status files are YAML too).
    pub state_dir: Option<&'a Path>,
}

/// Owns the configuration state and the push side of every gateway feed.
pub struct LocalController {
    dir: PathBuf,
    /// Directories below `dir` that are not configuration (state, issued, certs).
    skip: Vec<PathBuf>,
    state: ConfigState,
    /// The directory of issued Secrets and its state.
    issued: Option<(PathBuf, ConfigState)>,
    /// The certificate directory and its Secrets.
    certs: Option<CertDir>,
    publisher: Publisher,
}

/// How often the directory is re-read even without a file-system event.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Events arriving within this window are handled as one change.
const DEBOUNCE: Duration = Duration::from_millis(40);

impl LocalController {
    /// Load `dir` and publish the first version. Files with errors are reported in
    /// the returned report and not served.
    pub fn open(dir: &Path) -> Result<(Self, ApplyReport), SourceError> {
        LocalController::open_with(dir, None)
    }

    /// [`LocalController::open`], plus the directory of issued Secrets `issued_dir`
    /// (read once it exists). Its findings are added to the returned report.
    pub fn open_with(
        dir: &Path,
        issued_dir: Option<&Path>,
    ) -> Result<(Self, ApplyReport), SourceError> {
        let extra = ExtraSources {
            issued: issued_dir,
            cert_dir: None,
            state_dir: None,
        };
        LocalController::open_sources(dir, extra, MeshOptions::default())
    }

    /// [`LocalController::open`], plus the directories of `extra`, with the mesh run
    /// as `mesh` says. The findings of the issued Secrets are added to the returned
    /// report; the certificate directory's problems are logged.
    pub fn open_sources(
        dir: &Path,
        extra: ExtraSources<'_>,
        mesh: MeshOptions,
    ) -> Result<(Self, ApplyReport), SourceError> {
        let skip: Vec<PathBuf> = [extra.state_dir, extra.issued, extra.cert_dir]
            .into_iter()
            .flatten()
            .map(Path::to_path_buf)
            .collect();
        let mut state = ConfigState::default();
        let mut report = state.apply(read_paths_skipping(&[dir.to_path_buf()], &skip)?);
        let issued = match extra.issued {
            Some(d) => {
                let mut issued = ConfigState::default();
                let r = issued.apply(read_issued(d)?);
                merge_report(&mut report, r);
                Some((d.to_path_buf(), issued))
            }
            None => None,
        };
        let certs = match extra.cert_dir {
            Some(d) => {
                let mut certs = CertDir::new(d);
                log_cert_dir(&certs.reload()?);
                Some(certs)
            }
            None => None,
        };
        let store = merged_store(&state, certs.as_ref(), issued.as_ref().map(|(_, s)| s));
        let ctl = LocalController {
            dir: dir.to_path_buf(),
            skip,
            state,
            issued,
            certs,
            publisher: Publisher::new(store, mesh),
        };
        Ok((ctl, report))
    }

    /// The resources currently in effect.
    pub fn store(&self) -> Store {
        merged_store(
            &self.state,
            self.certs.as_ref(),
            self.issued.as_ref().map(|(_, s)| s),
        )
    }

    /// The resources in effect, now and after every applied change.
    pub fn stores(&self) -> watch::Receiver<Arc<Store>> {
        self.publisher.stores()
    }

    /// The resources in effect with their version, now and after every change.
    pub fn versioned(&self) -> watch::Receiver<Arc<Versioned>> {
        self.publisher.versioned()
    }

    /// The proxies the configuration asks for, now and after every change.
    pub fn proxies(&self) -> watch::Receiver<Arc<ProxySet>> {
        self.publisher.proxies()
    }

    pub fn version(&self) -> u64 {
        self.publisher.version()
    }

    /// Re-read the directory; when something changed, compile and push new snapshots.
    pub fn reload(&mut self) -> Result<ApplyReport, SourceError> {
        let files = read_paths_skipping(std::slice::from_ref(&self.dir), &self.skip)?;
        let issued_files = match &self.issued {
            Some((d, _)) => Some(read_issued(d)?),
            None => None,
        };
        let mut report = self.state.apply(files);
        if let (Some((_, issued)), Some(files)) = (&mut self.issued, issued_files) {
            let r = issued.apply(files);
            merge_report(&mut report, r);
        }
        // The certificate directory apart: while it cannot be read, its last good
        // Secrets keep serving and the rest of the configuration still applies.
        let mut certs_changed = false;
        if let Some(certs) = &mut self.certs {
            match certs.reload() {
                Ok(r) => {
                    log_cert_dir(&r);
                    certs_changed = !r.changed.is_empty();
                }
                Err(e) => tracing::error!(
                    "reading the certificate directory {}: {e}; its last good certificates keep serving",
                    certs.dir().display()
                ),
            }
        }
        for d in &report.diagnostics {
            match d.level {
                Level::Error => tracing::error!("{d}"),
                Level::Warning => tracing::warn!("{d}"),
                Level::Info => tracing::debug!("{d}"),
            }
        }
        for p in &report.rejected {
            tracing::error!(
                "rejected change to {}: the last good version keeps serving",
                p.display()
            );
        }
        for r in &report.rejected_resources {
            tracing::error!("rejected change to {r}: its last good version keeps serving");
        }
        if report.changed() || certs_changed {
            let store = self.store();
            self.publisher.publish(store);
            tracing::info!(version = self.version(), "configuration applied");
        }
        Ok(report)
    }

    /// Watch the directory until the process ends, reloading on every change.
    pub async fn watch(mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watcher = {
            let tx = tx.clone();
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                // Our own reads produce access events: reacting to them would reload
                // in a loop. Only changes count.
                if ev.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })
        };
        let _watcher = match watcher {
            Ok(mut w) => {
                use notify::Watcher;
                let dirs = std::iter::once(self.dir.as_path())
                    .chain(self.issued.iter().map(|(d, _)| d.as_path()))
                    .chain(self.certs.iter().map(CertDir::dir));
                for dir in dirs {
                    // A directory inside the config directory is watched with it (an
                    // issued-Secrets one also before it exists).
                    if dir != self.dir && dir.starts_with(&self.dir) {
                        continue;
                    }
                    if let Err(e) = w.watch(dir, notify::RecursiveMode::Recursive) {
                        tracing::warn!("cannot watch {}: {e}; polling only", dir.display());
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!("no file watcher ({e}); polling only");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    if ev.is_none() { return; }
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            if let Err(e) = self.reload() {
                tracing::error!(
                    "reading {}: {e}; the last good configuration keeps serving",
                    self.dir.display()
                );
            }
        }
    }
}

/// The files of the issued-Secrets directory; none while it does not exist.
fn read_issued(dir: &Path) -> Result<Vec<crate::source::SourceFile>, SourceError> {
    if dir.exists() {
        read_paths(&[dir.to_path_buf()])
    } else {
        Ok(Vec::new())
    }
}

/// Add the report of the issued-Secrets directory to the config directory's.
fn merge_report(into: &mut ApplyReport, r: ApplyReport) {
    into.accepted.extend(r.accepted);
    into.rejected.extend(r.rejected);
    into.rejected_resources.extend(r.rejected_resources);
    into.removed.extend(r.removed);
    into.diagnostics.extend(r.diagnostics);
}

/// Log what the certificate directory reported.
fn log_cert_dir(r: &CertDirReport) {
    for e in &r.errors {
        tracing::error!("{e}");
    }
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    for c in &r.changed {
        tracing::info!("{c} loaded from the certificate directory");
    }
}

/// The configuration with the Secrets of the other sources first, most specific
/// first: issued, then the certificate directory's. A Secret of a less specific
/// source with the namespace/name of one already taken is left out. Anything but
/// Secrets in the issued directory is ignored.
fn merged_store(
    config: &ConfigState,
    certs: Option<&CertDir>,
    issued: Option<&ConfigState>,
) -> Store {
    let issued = issued.map(|s| s.store().resources).unwrap_or_default();
    let from_dir = certs.map(CertDir::secrets).unwrap_or_default();
    let secrets = issued.into_iter().chain(from_dir).collect();
    Store::new(secrets_on_top(secrets, config.store().resources))
}

/// `config` with `secrets` (most specific first) in front: the first Secret of a
/// namespace/name wins, config Secrets with a name already taken are left out, and
/// anything but Secrets in `secrets` is ignored.
pub fn secrets_on_top(secrets: Vec<Resource>, config: Vec<Resource>) -> Vec<Resource> {
    let same = |a: &Resource, b: &Resource| a.namespace() == b.namespace() && a.name() == b.name();
    let mut on_top: Vec<Resource> = Vec::new();
    for r in secrets {
        if r.kind == Kind::Secret && !on_top.iter().any(|s| same(s, &r)) {
            on_top.push(r);
        }
    }
    let rest: Vec<Resource> = config
        .into_iter()
        .filter(|r| r.kind != Kind::Secret || !on_top.iter().any(|s| same(s, r)))
        .collect();
    on_top.extend(rest);
    on_top
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_model::Spec;

    fn secret(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\nstringData: {{tls.crt: {value}}}\n"
        )
    }

    fn crt_of(store: &Store, name: &str) -> Vec<String> {
        store
            .secrets()
            .filter(|(r, _)| r.name() == name)
            .filter_map(|(_, s)| s.get("tls.crt"))
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

    #[test]
    fn issued_secrets_replace_config_secrets_of_the_same_name() {
        let config = tempfile::tempdir().expect("tempdir");
        let issued = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            config.path().join("secrets.yaml"),
            secret("a", "static") + "---\n" + &secret("b", "static-b"),
        )
        .expect("write");
        let (mut ctl, report) =
            LocalController::open_with(config.path(), Some(issued.path())).expect("open");
        assert!(report.rejected.is_empty(), "{report:?}");
        let stores = ctl.stores();
        assert_eq!(crt_of(&stores.borrow(), "a"), ["static"]);

        // Issued later: replaces the static one (and only Secrets are taken).
        std::fs::write(
            issued.path().join("istio-system.a.yaml"),
            secret("a", "issued")
                + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: stray}\n",
        )
        .expect("write");
        let report = ctl.reload().expect("reload");
        assert!(report.changed());
        let store = stores.borrow().clone();
        assert_eq!(crt_of(&store, "a"), ["issued"]);
        assert_eq!(crt_of(&store, "b"), ["static-b"]);
        assert!(store.namespaces().next().is_none());
        assert!(matches!(
            store
                .find(Kind::Secret, "istio-system", "a")
                .map(|r| &r.spec),
            Some(Spec::Secret(_))
        ));

        // Removed again: the static one is back.
        std::fs::remove_file(issued.path().join("istio-system.a.yaml")).expect("rm");
        ctl.reload().expect("reload");
        assert_eq!(crt_of(&stores.borrow(), "a"), ["static"]);
        assert_eq!(crt_of(&ctl.store(), "a"), ["static"]);
    }

    #[test]
    fn the_cert_dir_sits_between_the_config_dir_and_issued_secrets() {
        let config = tempfile::tempdir().expect("tempdir");
        let issued = tempfile::tempdir().expect("tempdir");
        let certs = tempfile::tempdir().expect("tempdir");
        let pem = |f: &str| {
            std::fs::read_to_string(format!(
                "{}/../testdata/pem/{f}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("read testdata")
        };
        std::fs::write(
            config.path().join("secrets.yaml"),
            secret("a", "static") + "---\n" + &secret("b", "static-b"),
        )
        .expect("write");
        std::fs::write(certs.path().join("a.crt"), pem("ec-a.crt")).expect("write");
        std::fs::write(certs.path().join("a.key"), pem("ec-a.key")).expect("write");
        let extra = ExtraSources {
            issued: Some(issued.path()),
            cert_dir: Some(certs.path()),
            state_dir: None,
        };
        let (mut ctl, _) =
            LocalController::open_sources(config.path(), extra, MeshOptions::default())
                .expect("open");
        let stores = ctl.stores();
        assert_eq!(crt_of(&stores.borrow(), "a"), [pem("ec-a.crt")]);
        assert_eq!(crt_of(&stores.borrow(), "b"), ["static-b"]);

        std::fs::write(
            issued.path().join("istio-system.a.yaml"),
            secret("a", "issued"),
        )
        .expect("write");
        ctl.reload().expect("reload");
        assert_eq!(crt_of(&stores.borrow(), "a"), ["issued"]);

        // The cert dir's pair again once the issued one goes; the static one after it.
        std::fs::remove_file(issued.path().join("istio-system.a.yaml")).expect("rm");
        ctl.reload().expect("reload");
        assert_eq!(crt_of(&stores.borrow(), "a"), [pem("ec-a.crt")]);
        let version = ctl.version();
        ctl.reload().expect("reload");
        assert_eq!(ctl.version(), version, "nothing changed, nothing pushed");
        std::fs::remove_file(certs.path().join("a.crt")).expect("rm");
        std::fs::remove_file(certs.path().join("a.key")).expect("rm");
        ctl.reload().expect("reload");
        assert_eq!(crt_of(&stores.borrow(), "a"), ["static"]);
    }

    #[test]
    fn a_missing_cert_dir_is_an_error_when_opening() {
        let config = tempfile::tempdir().expect("tempdir");
        let missing = config.path().join("no-such-certs");
        let extra = ExtraSources {
            issued: None,
            cert_dir: Some(&missing),
            state_dir: None,
        };
        let e = LocalController::open_sources(config.path(), extra, MeshOptions::default())
            .err()
            .expect("refused");
        assert!(e.to_string().contains("no-such-certs"), "{e}");
    }

    #[test]
    fn a_state_dir_inside_the_config_dir_is_not_configuration() {
        let config = tempfile::tempdir().expect("tempdir");
        let state = config.path().join("state");
        std::fs::create_dir_all(state.join("secrets")).expect("mkdir");
        std::fs::create_dir_all(state.join("status")).expect("mkdir");
        std::fs::write(config.path().join("secrets.yaml"), secret("a", "static")).expect("write");
        // A status file (a Certificate) and an issued Secret below the state dir.
        std::fs::write(
            state.join("status").join("istio-system.a.yaml"),
            "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: a, namespace: istio-system}\nspec: {secretName: a, issuerRef: {name: le}}\n",
        )
        .expect("write");
        std::fs::write(
            state.join("secrets").join("istio-system.a.yaml"),
            secret("a", "issued"),
        )
        .expect("write");
        let secrets = state.join("secrets");
        let extra = ExtraSources {
            issued: Some(&secrets),
            cert_dir: None,
            state_dir: Some(&state),
        };
        let (mut ctl, _) =
            LocalController::open_sources(config.path(), extra, MeshOptions::default())
                .expect("open");
        let kinds = |ctl: &LocalController| -> Vec<(Kind, String)> {
            ctl.store()
                .resources
                .iter()
                .map(|r| (r.kind, r.name().to_string()))
                .collect()
        };
        // The issued Secret once (as issued), no Certificate from the status file.
        assert_eq!(kinds(&ctl), [(Kind::Secret, "a".to_string())]);
        assert_eq!(crt_of(&ctl.stores().borrow(), "a"), ["issued"]);
        let version = ctl.version();
        std::fs::write(
            state.join("status").join("istio-system.b.yaml"),
            "not: [yaml",
        )
        .expect("write");
        ctl.reload().expect("reload");
        assert_eq!(
            ctl.version(),
            version,
            "a state file change is not a config change"
        );
    }
}
