//! The committed CRDs are exactly what the Rust types generate.

use std::collections::BTreeSet;

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = ferry::crd::files().expect("CRDs serialize to YAML");
    for file in &generated {
        let path = dir.join(&file.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == file.yaml,
            "{} differs from what the Rust types generate; regenerate it with `cargo run -- crd --output-dir crds --output-dir charts/ferry/crds`",
            path.display()
        );
    }
    let expected: BTreeSet<String> = generated.into_iter().map(|f| f.file_name).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("crds/ is readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present, expected,
        "crds/ holds files the types do not generate; remove them or regenerate with `cargo run -- crd --output-dir crds --output-dir charts/ferry/crds`"
    );
}
