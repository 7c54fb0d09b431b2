//! `crds/` holds exactly what `bulkhead crd` prints.

use std::process::Command;

#[test]
fn crds_directory_matches_the_rust_types() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead")).arg("crd").output().expect("bulkhead crd runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stored = std::fs::read_to_string(root.join("crds/bulkhead.dev_tenants.yaml")).expect("crds/ file");
    assert!(
        printed == stored,
        "crds/bulkhead.dev_tenants.yaml is stale: run `cargo run -- crd > crds/bulkhead.dev_tenants.yaml`"
    );
    for chart_copy in ["charts/bulkhead/crds/bulkhead.dev_tenants.yaml"] {
        if let Ok(copy) = std::fs::read_to_string(root.join(chart_copy)) {
            assert!(copy == stored, "{chart_copy} differs from crds/: copy it again");
        }
    }
}

#[test]
fn plan_prints_every_object_of_an_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["plan", "-f"])
        .arg(root.join("examples/acme-insurance.yaml"))
        .output()
        .expect("bulkhead plan runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("name: acme-payments"));
    assert!(text.contains("name: bulkhead-default-deny"));
    assert!(text.contains("name: bulkhead-profile-admin-noexec"));

    let bad =
        Command::new(env!("CARGO_BIN_EXE_bulkhead")).args(["plan", "-f", "/nonexistent/tenant.yaml"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read /nonexistent/tenant.yaml"));
}
