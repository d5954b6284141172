//! The local controller: the YAML directory as the config source, one snapshot per
//! gateway workload, pushed through `watch` channels (the in-process equivalent of
//! istiod's push). Changes are picked up by inotify (`notify`), with a slow poll as a
//! safety net for events the watcher can miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use isthmus_model::compile::{compile_gateway, gateway_workloads, GatewayWorkload};
use isthmus_model::{Level, Snapshot, Store};
use tokio::sync::{mpsc, watch};

use crate::source::{read_paths, SourceError};
use crate::state::{ApplyReport, ConfigState};

/// What a gateway receives: its identity and the stream of snapshots for it.
#[derive(Debug, Clone)]
pub struct GatewayFeed {
    pub workload: GatewayWorkload,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// Owns the configuration state and the push side of every gateway feed.
pub struct LocalController {
    dir: PathBuf,
    state: ConfigState,
    feeds: Vec<(GatewayWorkload, watch::Sender<Arc<Snapshot>>)>,
    version: u64,
}

/// How often the directory is re-read even without a file-system event.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Events arriving within this window are handled as one change.
const DEBOUNCE: Duration = Duration::from_millis(40);

impl LocalController {
    /// Load `dir` and compile the first snapshots. Files with errors are reported in
    /// the returned report and not served; the gateway workloads are those of the
    /// Gateways found now (the default ingress gateway when there are none).
    pub fn open(dir: &Path) -> Result<(Self, Vec<GatewayFeed>, ApplyReport), SourceError> {
        let mut state = ConfigState::default();
        let report = state.apply(read_paths(&[dir.to_path_buf()])?);
        let store = state.store();
        let mut workloads = gateway_workloads(&store);
        if workloads.is_empty() {
            workloads.push(GatewayWorkload::default());
        }
        let mut ctl = LocalController {
            dir: dir.to_path_buf(),
            state,
            feeds: Vec::new(),
            version: 1,
        };
        let mut feeds = Vec::new();
        for w in workloads {
            let snap = ctl.compile(&store, &w);
            let (tx, rx) = watch::channel(Arc::new(snap));
            feeds.push(GatewayFeed {
                workload: w.clone(),
                snapshots: rx,
            });
            ctl.feeds.push((w, tx));
        }
        Ok((ctl, feeds, report))
    }

    /// The resources currently in effect.
    pub fn store(&self) -> Store {
        self.state.store()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    fn compile(&self, store: &Store, w: &GatewayWorkload) -> Snapshot {
        let (mut snap, diags) = compile_gateway(store, w);
        for d in diags {
            match d.level {
                Level::Error => tracing::error!("{d}"),
                Level::Warning => tracing::warn!("{d}"),
                Level::Info => tracing::debug!("{d}"),
            }
        }
        snap.version = self.version;
        snap
    }

    /// Re-read the directory; when something changed, compile and push new snapshots.
    pub fn reload(&mut self) -> Result<ApplyReport, SourceError> {
        let files = read_paths(std::slice::from_ref(&self.dir))?;
        let report = self.state.apply(files);
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
        if report.changed() {
            self.version += 1;
            let store = self.state.store();
            for (w, tx) in &self.feeds {
                let snap = self.compile(&store, w);
                tx.send_replace(Arc::new(snap));
            }
            tracing::info!(version = self.version, "configuration applied");
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
                if let Err(e) = w.watch(&self.dir, notify::RecursiveMode::Recursive) {
                    tracing::warn!("cannot watch {}: {e}; polling only", self.dir.display());
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
