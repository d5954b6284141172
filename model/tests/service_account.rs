//! `ServiceAccount` documents load (their fields sit at the top level, as a
//! Secret's) instead of being skipped, and a WorkloadEntry's `serviceAccount` is its
//! identity's last part.

use isthmus_model::load::load_str;
use isthmus_model::mesh::{mesh_workloads, MeshOptions};
use isthmus_model::{Kind, Store};

#[test]
fn service_accounts_load_and_name_workload_identities() {
    let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: todolist, namespace: shop}\nautomountServiceAccountToken: false\nimagePullSecrets: [{name: registry}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: shop}\nspec: {address: 127.0.0.1, ports: {http: 8000}, serviceAccount: todolist}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b, namespace: shop}\nspec: {address: 127.0.0.2, ports: {http: 8000}}\n";
    let loaded = load_str("sa.yaml", text);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let store = Store::new(loaded.resources);
    let sa: Vec<_> = store.service_accounts().collect();
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].0.kind, Kind::ServiceAccount);
    assert_eq!(sa[0].1.automount_service_account_token, Some(false));
    let ids: Vec<String> = mesh_workloads(&store, &MeshOptions::default())
        .into_iter()
        .map(|w| w.identity.uri())
        .collect();
    assert_eq!(
        ids,
        [
            "spiffe://cluster.local/ns/shop/sa/todolist",
            "spiffe://cluster.local/ns/shop/sa/default"
        ]
    );
}
