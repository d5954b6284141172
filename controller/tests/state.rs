//! The last-good rule: what a bad change keeps serving, and what still applies.

use std::path::PathBuf;

use isthmus_controller::source::SourceFile;
use isthmus_controller::ConfigState;
use isthmus_model::Kind;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(name),
        text: text.to_string(),
    }
}

fn vs(name: &str, weight: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}.example.com]\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {{host: a}}\n      weight: {weight}\n    - destination: {{host: b}}\n      weight: 1\n"
    )
}

fn weights(state: &ConfigState, name: &str) -> Vec<Option<i32>> {
    let store = state.store();
    let (_, spec) = store
        .virtual_services()
        .find(|(r, _)| r.name() == name)
        .unwrap_or_else(|| panic!("{name} not served"));
    spec.http[0].route.iter().map(|d| d.weight).collect()
}

#[test]
fn a_bad_resource_keeps_its_last_good_version_and_the_rest_of_the_file_applies() {
    let mut s = ConfigState::default();
    let r = s.apply(vec![file(
        "a.yaml",
        &format!("{}---\n{}", vs("one", "1"), vs("two", "1")),
    )]);
    assert!(
        r.changed() && r.rejected_resources.is_empty(),
        "{:?}",
        r.diagnostics
    );

    // `one` gets a weight that is not a number; `two` changes validly.
    let r = s.apply(vec![file(
        "a.yaml",
        &format!("{}---\n{}", vs("one", "ten"), vs("two", "5")),
    )]);
    assert_eq!(
        r.rejected_resources,
        vec!["VirtualService default/one".to_string()]
    );
    assert!(r
        .diagnostics
        .iter()
        .any(|d| d.field.as_deref() == Some("spec.http[0].route[0].weight")));
    assert_eq!(weights(&s, "one"), vec![Some(1), Some(1)]);
    assert_eq!(weights(&s, "two"), vec![Some(5), Some(1)]);
    // Document order is kept.
    let names: Vec<String> = s
        .store()
        .resources
        .iter()
        .map(|r| r.name().to_string())
        .collect();
    assert_eq!(names, ["one", "two"]);
}

#[test]
fn a_file_that_does_not_parse_is_rejected_whole() {
    let mut s = ConfigState::default();
    s.apply(vec![file("a.yaml", &vs("one", "3"))]);
    let r = s.apply(vec![file("a.yaml", "apiVersion: [unclosed\n  kind: : :\n")]);
    assert_eq!(r.rejected, vec![PathBuf::from("a.yaml")]);
    assert!(!r.changed());
    assert_eq!(weights(&s, "one"), vec![Some(3), Some(1)]);
}

#[test]
fn a_new_invalid_resource_is_not_served_and_removed_files_disappear() {
    let mut s = ConfigState::default();
    s.apply(vec![file("a.yaml", &vs("one", "1"))]);
    // Both weights 0: "total destination weight = 0" is a validation error.
    let bad = vs("two", "0").replace("weight: 1", "weight: 0");
    let r = s.apply(vec![file("a.yaml", &vs("one", "1")), file("b.yaml", &bad)]);
    assert_eq!(
        r.rejected_resources,
        vec!["VirtualService default/two".to_string()]
    );
    assert!(s
        .store()
        .find(Kind::VirtualService, "default", "two")
        .is_none());
    let r = s.apply(vec![]);
    assert_eq!(r.removed.len(), 2);
    assert!(s.store().resources.is_empty());
}

#[test]
fn unchanged_files_are_not_reloaded() {
    let mut s = ConfigState::default();
    s.apply(vec![file("a.yaml", &vs("one", "1"))]);
    let r = s.apply(vec![file("a.yaml", &vs("one", "1"))]);
    assert!(!r.changed() && r.diagnostics.is_empty());
}
