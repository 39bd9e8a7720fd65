//! The Python runtime's test inputs: the interpreter with the pinned frameworks, the committed models made by
//! those frameworks (testdata/python/make_models.py) and what each framework's own `predict` answered.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::server::ServerBuilder;
use super::{cache_dir, file_uri, SETUP};

/// `FERRY_TEST_PYTHON`, else `$FERRY_CACHE_DIR/venv-python/bin/python` (the runtime's packages, pinned).
pub fn interpreter() -> PathBuf {
    let path = std::env::var_os("FERRY_TEST_PYTHON")
        .filter(|v| !v.is_empty())
        .map_or_else(|| cache_dir().join("venv-python/bin/python"), PathBuf::from);
    assert!(
        path.is_file(),
        "the Python runtime's interpreter is missing at {} (set FERRY_TEST_PYTHON or run `{SETUP}`)",
        path.display()
    );
    path
}

pub fn model_path(file: &str) -> PathBuf {
    super::testdata().join("python/models").join(file)
}

/// A server for a committed Python-framework model, two workers, both runtimes configured.
pub fn builder(file: &str, format: &str) -> ServerBuilder {
    builder_for(&model_path(file), format)
}

pub fn builder_for(path: &Path, format: &str) -> ServerBuilder {
    ServerBuilder::new("model", &file_uri(path), "1")
        .env("FERRY_MODEL_FORMAT", format)
        .env("FERRY_PYTHON", interpreter().to_str().unwrap())
        .env("FERRY_PYTHON_WORKERS", "2")
}

/// One model's expectation: its rows and each output as the framework returned it.
#[derive(Debug, Clone)]
pub struct PyExpected {
    pub name: String,
    pub file: String,
    pub format: String,
    pub input: String,
    pub datatype: String,
    pub rows: Vec<Vec<f64>>,
    /// name -> (datatype, shape, flat data)
    pub outputs: Vec<(String, String, Vec<usize>, Vec<Value>)>,
}

pub fn expected_file() -> Value {
    let text = std::fs::read_to_string(super::testdata().join("python/expected.json"))
        .expect("testdata/python/expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

pub fn expectations() -> Vec<PyExpected> {
    let json = expected_file();
    let mut all: Vec<PyExpected> = json["models"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, e)| PyExpected {
            name: name.clone(),
            file: e["file"].as_str().unwrap().to_owned(),
            format: e["format"].as_str().unwrap().to_owned(),
            input: e["input"].as_str().unwrap().to_owned(),
            datatype: e["datatype"].as_str().unwrap().to_owned(),
            rows: e["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect()
                })
                .collect(),
            outputs: e["outputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, o)| {
                    (
                        name.clone(),
                        o["datatype"].as_str().unwrap().to_owned(),
                        o["shape"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|d| d.as_u64().unwrap() as usize)
                            .collect(),
                        o["data"].as_array().unwrap().clone(),
                    )
                })
                .collect(),
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(all.len() >= 10, "expected.json holds {} models", all.len());
    all
}

pub fn expectation(name: &str) -> PyExpected {
    expectations()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no expectation for {name}"))
}

/// Relative tolerance for floating-point outputs: the worker runs the framework's own predict on the same
/// numbers, so only the FP32 request path may round.
pub const TOLERANCE: f64 = 1e-6;

impl PyExpected {
    pub fn request(&self, rows: &[usize], id: &str) -> Value {
        let data: Vec<f64> = rows.iter().flat_map(|&r| self.rows[r].clone()).collect();
        json!({
            "id": id,
            "inputs": [{
                "name": self.input,
                "shape": [rows.len(), self.rows[0].len()],
                "datatype": self.datatype,
                "data": data,
            }]
        })
    }

    /// The request's elements as raw little-endian bytes of the model's datatype.
    pub fn raw(&self, rows: &[usize]) -> Vec<u8> {
        let values = rows.iter().flat_map(|&r| self.rows[r].clone());
        match self.datatype.as_str() {
            "FP32" => values.flat_map(|v| (v as f32).to_le_bytes()).collect(),
            _ => values.flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Checks every output of a response (JSON data) for `rows` against the framework's answers.
    pub fn matches(&self, rows: &[usize], response: &Value) -> Result<(), String> {
        for (name, datatype, shape, data) in &self.outputs {
            let output = response["outputs"]
                .as_array()
                .and_then(|outputs| outputs.iter().find(|o| o["name"] == name.as_str()))
                .ok_or_else(|| format!("{}: no output {name} in {response}", self.name))?;
            let per_row: usize = shape[1..].iter().product();
            let mut want_shape = vec![rows.len()];
            want_shape.extend_from_slice(&shape[1..]);
            if output["shape"] != json!(want_shape) {
                return Err(format!(
                    "{}: output {name} shape {}, want {want_shape:?}",
                    self.name, output["shape"]
                ));
            }
            let got_type = output["datatype"].as_str().unwrap_or("");
            let compatible = got_type == datatype || (datatype == "INT64" && got_type == "INT64");
            if !compatible {
                return Err(format!(
                    "{}: output {name} datatype {got_type}, the framework's {datatype}",
                    self.name
                ));
            }
            for (i, &row) in rows.iter().enumerate() {
                for k in 0..per_row {
                    let got = &output["data"][i * per_row + k];
                    let want = &data[row * per_row + k];
                    let equal = match (got.as_f64(), want.as_f64()) {
                        (Some(g), Some(w)) => (g - w).abs() <= TOLERANCE * w.abs().max(1.0),
                        _ => got == want,
                    };
                    if !equal {
                        return Err(format!(
                            "{} row {row} output {name}[{k}]: ferry-server {got}, the framework {want}",
                            self.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes a .tar.gz at `path` holding `files` (name, contents) at its root.
pub fn write_archive(path: &Path, files: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *contents).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
}

/// A protocol-2 pickle that runs `os.system(command)` when unpickled.
pub fn system_pickle(command: &str) -> Vec<u8> {
    let mut bytes = b"\x80\x02cos\nsystem\n".to_vec();
    bytes.push(b'X');
    bytes.extend_from_slice(&(command.len() as u32).to_le_bytes());
    bytes.extend_from_slice(command.as_bytes());
    bytes.extend_from_slice(b"\x85R.");
    bytes
}

/// A custom model whose `load` kills its own worker process.
pub fn dying_model(dir: &Path) -> PathBuf {
    let archive = dir.join("dies.tar.gz");
    write_archive(
        &archive,
        &[
            (
                "model.py",
                b"import os, signal\nclass Model:\n    def load(self, path):\n        os.kill(os.getpid(), signal.SIGKILL)\n",
            ),
            (
                "signature.json",
                br#"{"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 1]}],
                     "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1]}]}"#,
            ),
        ],
    );
    archive
}
