//! `ferry-server golden`: writes a golden set (`contract::ValidationFile`) from a model and requests.
//!
//! A training pipeline runs it once on the model it has just exported: every request (Open Inference Protocol,
//! JSON tensors) is decoded and run exactly as the server would, and the outputs become the expected answers. The
//! file then goes next to the model, and every later load of that model (or of a version meant to answer the
//! same) must reproduce it before it serves (`FERRY_VALIDATION_URI`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::contract::{
    self, env, ExpectedOutput, ExpectedOutputs, Tolerance, ValidationCase, ValidationFile,
    DEFAULT_ABSOLUTE_TOLERANCE, DEFAULT_RELATIVE_TOLERANCE,
};
use crate::fetch::{Fetcher, Progress};
use crate::model::StoreSettings;
use crate::oip;
use crate::runtime::onnx::{OnnxRuntime, PoolSettings};
use crate::runtime::{Model, Runtime};
use crate::validation::Golden;

#[derive(clap::Args, Debug, Clone)]
pub struct GoldenArgs {
    /// The model: a path, or a file://, http(s)://, s3://, gs:// or az:// URI of an .onnx file (stores are
    /// configured as for serving: FERRY_S3_ENDPOINT, AWS_*, ...).
    #[arg(long)]
    pub model: String,
    /// A JSON file holding one Open Inference Protocol request or an array of them; each becomes a case, named by
    /// its `id` or `case-N`.
    #[arg(long)]
    pub requests: PathBuf,
    /// Where to write the validation file.
    #[arg(long)]
    pub out: PathBuf,
    /// Absolute tolerance for float outputs.
    #[arg(long, default_value_t = DEFAULT_ABSOLUTE_TOLERANCE)]
    pub absolute: f64,
    /// Relative tolerance for float outputs (times |expected|).
    #[arg(long, default_value_t = DEFAULT_RELATIVE_TOLERANCE)]
    pub relative: f64,
    /// Share of cases a model must reproduce, 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub min_pass_rate: f64,
    #[arg(long, env = env::ONNXRUNTIME_LIBRARY, value_name = env::ONNXRUNTIME_LIBRARY, default_value = contract::DEFAULT_ONNXRUNTIME_LIBRARY)]
    pub onnxruntime_library: PathBuf,
}

/// Runs the subcommand: 0 when the file is written, 1 otherwise (the reason on stderr).
pub fn main(args: GoldenArgs, store: StoreSettings) -> ExitCode {
    match run(&args, store) {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("ferry-server golden: {message}");
            ExitCode::from(contract::exit_code::MODEL_FAILED)
        }
    }
}

fn run(args: &GoldenArgs, store: StoreSettings) -> Result<String, String> {
    let tolerance = Tolerance {
        absolute: args.absolute,
        relative: args.relative,
    };
    let requests = read_requests(&args.requests)?;
    let runtime = OnnxRuntime::new(
        &args.onnxruntime_library,
        PoolSettings {
            sessions: Some(1),
            intra_op_threads: None,
        },
    )
    .map_err(|f| f.message)?;
    let work =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let (path, _download) = local_model(&args.model, store, work.path())?;
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let model = runtime
        .load(&path, size)
        .map_err(|f| format!("{}: {f}", args.model))?;

    let started = Instant::now();
    let cases = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| case(&*model, i, request))
        .collect::<Result<Vec<_>, String>>()?;
    let file = ValidationFile {
        tolerance,
        min_pass_rate: args.min_pass_rate,
        cases,
    };
    // The file must pass on the model it came from (and be a valid golden set at all).
    let out = args.out.display().to_string();
    let golden = Golden::from_file(file.clone(), &out).map_err(|f| f.message)?;
    let report = golden.run(&*model).map_err(|f| f.message)?;
    if report.view.passed != report.view.cases {
        return Err(format!(
            "the model does not reproduce its own answers ({} of {} cases; worst: {}); is it deterministic?",
            report.view.passed,
            report.view.cases,
            report.view.worst.unwrap_or_default()
        ));
    }
    let mut text = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
    text.push(b'\n');
    std::fs::write(&args.out, &text).map_err(|e| format!("cannot write {out}: {e}"))?;
    Ok(format!(
        "wrote {} cases ({} bytes) to {out} in {:.3}s",
        golden.len(),
        text.len(),
        started.elapsed().as_secs_f64()
    ))
}

fn read_requests(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let requests = match value {
        Value::Array(items) => items,
        request @ Value::Object(_) => vec![request],
        _ => {
            return Err(format!(
                "{} holds neither a request nor an array of requests",
                path.display()
            ))
        }
    };
    if requests.is_empty() {
        return Err(format!("{} holds no requests", path.display()));
    }
    Ok(requests)
}

/// A path as given, or the download of a URI (kept until the returned guard drops).
fn local_model(
    model: &str,
    store: StoreSettings,
    work: &Path,
) -> Result<(PathBuf, Option<crate::fetch::Downloaded>), String> {
    let uri = match url::Url::parse(model) {
        Ok(uri) if contract::capabilities::URI_SCHEMES.contains(&uri.scheme()) => uri,
        _ => return Ok((PathBuf::from(model), None)),
    };
    if uri.scheme() == "file" {
        let path = uri
            .to_file_path()
            .map_err(|()| format!("{model} is not a local path"))?;
        return Ok((path, None));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fetcher = Fetcher {
        store,
        work_dir: work.to_path_buf(),
        max_bytes: contract::DEFAULT_MAX_MODEL_BYTES,
        timeout: Duration::from_secs(contract::DEFAULT_DOWNLOAD_TIMEOUT_SECONDS),
        concurrency: contract::DEFAULT_DOWNLOAD_CONCURRENCY,
        part_bytes: contract::DEFAULT_DOWNLOAD_PART_BYTES,
    };
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let progress = Progress::new(Default::default());
    let downloaded = tokio
        .block_on(fetcher.fetch(&uri, &progress))
        .map_err(|f| f.to_string())?;
    Ok((downloaded.path.to_path_buf(), Some(downloaded)))
}

/// Runs request `i` as the server would and records every output it returns (those it names, if it names any).
fn case(model: &dyn Model, i: usize, request: Value) -> Result<ValidationCase, String> {
    let name = request
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("case-{i}"), str::to_owned);
    let bytes = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let decoded =
        oip::decode(&bytes, model.signature()).map_err(|e| format!("request {i} ({name}): {e}"))?;
    let selected = decoded.outputs;
    let outputs = model
        .infer(decoded.inputs)
        .map_err(|e| format!("request {i} ({name}): {e}"))?;
    let outputs = outputs
        .into_iter()
        .filter(|t| {
            selected
                .as_ref()
                .is_none_or(|s| s.iter().any(|o| o.name == t.name))
        })
        .map(|t| {
            Ok(ExpectedOutput {
                datatype: t.data.datatype().as_str().to_owned(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                // Through text, so FP32 elements keep their shortest FP32 form (0.1, not 0.10000000149011612).
                data: serde_json::to_string(&t.data)
                    .and_then(|text| serde_json::from_str(&text))
                    .map_err(|e| e.to_string())?,
                name: t.name,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ValidationCase {
        name,
        request,
        expected: ExpectedOutputs { outputs },
    })
}
