//! Replays the kept fuzzing inputs (`fuzz/regressions/<target>/`) through the functions the fuzz targets call:
//! every crash a fuzzer found must now return an answer (an error is fine), and every `seed-*` (a valid request,
//! from `fuzz/make_seeds.py`) must decode.

use std::path::Path;

use ferry_server::fuzzing;
use ferry_server::oip::Decoded;

fn replay(target: &str, decode: fn(&[u8]) -> Result<Decoded, String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let seeds = files
        .iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .count();
    assert!(seeds >= 2, "{}: only {seeds} seeds", dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| decode(&data))
            .unwrap_or_else(|_| panic!("{target}/{name} panics"));
        if name.starts_with("seed-") {
            let decoded = result.unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
            assert_eq!(decoded.inputs.len(), fuzzing::signature().inputs.len());
        }
    }
}

#[test]
fn json_request_corpus_decodes_without_a_panic() {
    replay("json_request", fuzzing::json_request);
}

#[test]
fn binary_request_corpus_decodes_without_a_panic() {
    replay("binary_request", fuzzing::binary_request);
}

#[test]
fn grpc_request_corpus_decodes_without_a_panic() {
    replay("grpc_request", fuzzing::grpc_request);
}
