//! Real parts for the server tests: the `ferry-server` binary, the ONNX Runtime library, an S3-compatible server
//! (s3s-fs), the Azure Blob emulator (Azurite), a GCS emulator (fake-gcs-server), a local HTTP server, and the
//! committed models with scikit-learn's expected predictions.
//!
//! Dependencies are found through environment variables, falling back to where
//! `bash server-image/scripts/setup-test-deps.sh` installs them; a missing one fails the test with that command.

pub mod azurite;
pub mod emulated;
pub mod gcs;
pub mod http_store;
pub mod proxy;
pub mod python;
pub mod s3;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SETUP: &str = "bash server-image/scripts/setup-test-deps.sh";

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("FERRY_CACHE_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/ferry"),
    }
}

fn installed(variable: &str, fallback: PathBuf, what: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .filter(|v| !v.is_empty())
        .map_or(fallback, PathBuf::from);
    assert!(
        path.is_file(),
        "{what} is missing at {} (set {variable} or run `{SETUP}`)",
        path.display()
    );
    path
}

/// `FERRY_ONNXRUNTIME_LIBRARY`, else `$FERRY_CACHE_DIR/onnxruntime/libonnxruntime.so.1.31.1`.
pub fn onnxruntime_library() -> PathBuf {
    installed(
        "FERRY_ONNXRUNTIME_LIBRARY",
        cache_dir().join("onnxruntime/libonnxruntime.so.1.31.1"),
        "the ONNX Runtime library",
    )
}

/// `FERRY_S3S_FS`, else `$FERRY_CACHE_DIR/tools/bin/s3s-fs`.
pub fn s3s_fs() -> PathBuf {
    installed(
        "FERRY_S3S_FS",
        cache_dir().join("tools/bin/s3s-fs"),
        "the S3-compatible test server s3s-fs",
    )
}

/// `FERRY_AZURITE`, else `$FERRY_CACHE_DIR/tools/azurite/node_modules/.bin/azurite-blob`.
pub fn azurite() -> PathBuf {
    installed(
        "FERRY_AZURITE",
        cache_dir().join("tools/azurite/node_modules/.bin/azurite-blob"),
        "the Azure Blob emulator Azurite",
    )
}

/// `FERRY_FAKE_GCS_SERVER`, else `$FERRY_CACHE_DIR/tools/fake-gcs-server/bin/fake-gcs-server`.
pub fn fake_gcs_server() -> PathBuf {
    installed(
        "FERRY_FAKE_GCS_SERVER",
        cache_dir().join("tools/fake-gcs-server/bin/fake-gcs-server"),
        "the GCS emulator fake-gcs-server",
    )
}

/// Starts the server that `command(port)` makes on a free loopback port and waits until it accepts connections.
/// None of these servers can report the port it bound, so a rare collision is retried on another port.
pub fn spawn_on_free_port(name: &str, command: impl Fn(u16) -> Command) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("child status") {
                eprintln!("{name} exited ({status}) on port {port}; retrying");
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{name} did not start");
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

pub fn model_path(file: &str) -> PathBuf {
    testdata().join("models").join(file)
}

pub fn model_bytes(file: &str) -> Vec<u8> {
    std::fs::read(model_path(file)).expect("committed test model")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn file_uri(path: &Path) -> String {
    url::Url::from_file_path(path)
        .expect("absolute path")
        .to_string()
}

/// scikit-learn's predictions for one committed model (see testdata/make_models.py).
#[derive(Debug, Clone)]
pub struct Expected {
    pub name: String,
    pub file: String,
    pub input: String,
    pub rows: Vec<Vec<f64>>,
    pub labels: Vec<i64>,
    pub probabilities: Vec<Vec<f64>>,
}

pub const PROBABILITY_TOLERANCE: f64 = 1e-5;

pub fn expectations() -> Vec<Expected> {
    let text =
        std::fs::read_to_string(testdata().join("expected.json")).expect("testdata/expected.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let numbers = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let mut all: Vec<Expected> = json
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, e)| Expected {
            name: name.clone(),
            file: e["file"]
                .as_str()
                .unwrap()
                .trim_start_matches("models/")
                .to_owned(),
            input: e["input"].as_str().unwrap().to_owned(),
            rows: e["rows"].as_array().unwrap().iter().map(numbers).collect(),
            labels: e["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_i64().unwrap())
                .collect(),
            probabilities: e["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(numbers)
                .collect(),
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(all.len() >= 5, "expected.json holds {} models", all.len());
    all
}

pub fn expectation(name: &str) -> Expected {
    expectations()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no expectation for {name}"))
}

impl Expected {
    /// An OIP request with the given rows (nested data) and an id.
    pub fn request(&self, rows: &[usize], id: &str) -> serde_json::Value {
        let data: Vec<&Vec<f64>> = rows.iter().map(|&r| &self.rows[r]).collect();
        serde_json::json!({
            "id": id,
            "inputs": [{
                "name": self.input,
                "shape": [rows.len(), self.rows[0].len()],
                "datatype": "FP32",
                "data": data,
            }]
        })
    }

    /// Checks a response against scikit-learn for `rows`: labels exactly, probabilities within 1e-5.
    pub fn matches(&self, rows: &[usize], response: &serde_json::Value) -> Result<(), String> {
        let output = |name: &str| {
            response["outputs"]
                .as_array()
                .and_then(|outputs| outputs.iter().find(|o| o["name"] == name))
                .ok_or_else(|| format!("no output {name} in {response}"))
        };
        let labels = output("label")?;
        let probabilities = output("probabilities")?;
        let classes = self.probabilities[0].len();
        if labels["shape"] != serde_json::json!([rows.len()]) || labels["datatype"] != "INT64" {
            return Err(format!("label output {labels}"));
        }
        if probabilities["shape"] != serde_json::json!([rows.len(), classes])
            || probabilities["datatype"] != "FP32"
        {
            return Err(format!("probabilities output {probabilities}"));
        }
        for (i, &row) in rows.iter().enumerate() {
            let label = labels["data"][i].as_i64();
            if label != Some(self.labels[row]) {
                return Err(format!(
                    "{} row {row}: label {label:?}, scikit-learn {}",
                    self.name, self.labels[row]
                ));
            }
            for c in 0..classes {
                let got = probabilities["data"][i * classes + c]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                let want = self.probabilities[row][c];
                if (got - want).abs() > PROBABILITY_TOLERANCE || got.is_nan() {
                    return Err(format!(
                        "{} row {row} class {c}: probability {got}, scikit-learn {want}",
                        self.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Rows on which `a` and `b` predict different probabilities (at least 8), so every answer shows which one
/// answered.
pub fn rows_telling_apart(a: &Expected, b: &Expected) -> Vec<usize> {
    let rows: Vec<usize> = (0..a.rows.len())
        .filter(|&r| {
            a.probabilities[r]
                .iter()
                .zip(&b.probabilities[r])
                .any(|(x, y)| (x - y).abs() > 1e-3)
        })
        .collect();
    assert!(
        rows.len() >= 8,
        "{} and {} differ only on {rows:?}",
        a.name,
        b.name
    );
    rows
}

/// Checks that `ferry_model_info` of model `iris` in the metrics `text` names `serving` (version, sha256) and
/// not version `not_serving`.
pub fn assert_model_info(text: &str, serving: (&str, &str), not_serving: &str) {
    let (version, sha256) = serving;
    assert!(
        text.contains(&format!(
            r#"ferry_model_info{{model="iris",version="{version}",sha256="{sha256}"}} 1"#
        )),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            r#"ferry_model_info{{model="iris",version="{not_serving}""#
        )),
        "{text}"
    );
}

/// A TCP port that was free a moment ago (for servers that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Raw tensor bytes (binary extension, gRPC raw contents) of `datatype` as JSON values, as REST would send them.
pub fn raw_to_json(datatype: &str, raw: &[u8]) -> Vec<serde_json::Value> {
    use serde_json::json;
    fn each<const N: usize>(
        raw: &[u8],
        f: impl Fn([u8; N]) -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        raw.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap()))
            .collect()
    }
    match datatype {
        "FP32" => each(raw, |b| json!(f32::from_le_bytes(b))),
        "FP64" => each(raw, |b| json!(f64::from_le_bytes(b))),
        "INT32" => each(raw, |b| json!(i32::from_le_bytes(b))),
        "INT64" => each(raw, |b| json!(i64::from_le_bytes(b))),
        "BOOL" => raw.iter().map(|&b| json!(b == 1)).collect(),
        "BYTES" => {
            let (mut items, mut rest) = (Vec::new(), raw);
            while !rest.is_empty() {
                let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                items.push(json!(String::from_utf8(rest[4..4 + n].to_vec()).unwrap()));
                rest = &rest[4 + n..];
            }
            items
        }
        other => panic!("datatype {other}"),
    }
}
