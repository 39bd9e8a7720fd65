//! The golden set: requests the model must answer as expected before it reports ready.
//!
//! A validation file (`contract::ValidationFile`, JSON) holds cases, each an Open Inference Protocol request exactly
//! as a client sends it and the outputs expected for it. After the warm-up, every case is decoded by the same code
//! as a REST request (`oip::decode`) and run on the loaded model; floats pass within
//! `absolute + relative * |want|`, integers, `BOOL` and `BYTES` must match exactly, and a missing output, another
//! datatype or another shape fails the case. The load goes on only if at least `min_pass_rate` of the cases pass.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::Value;

use crate::contract::{Reason, Tolerance, ValidationFile, ValidationView};
use crate::failure::Failure;
use crate::oip;
use crate::runtime::{DataType, InferError, Model, Tensor, TensorData};

/// A validation file checked and ready to run: each request serialized once, each expected output converted.
#[derive(Debug)]
pub struct Golden {
    pub tolerance: Tolerance,
    pub min_pass_rate: f64,
    cases: Vec<Case>,
}

#[derive(Debug)]
struct Case {
    name: String,
    request: Vec<u8>,
    expected: Vec<Expected>,
}

#[derive(Debug)]
struct Expected {
    name: String,
    datatype: DataType,
    shape: Vec<usize>,
    data: TensorData,
}

fn invalid(message: String) -> Failure {
    Failure::new(Reason::InvalidValidationFile, message)
}

impl Golden {
    /// Reads a validation file; anything that is not a usable golden set is `InvalidValidationFile`.
    pub fn parse(bytes: &[u8], uri: &str) -> Result<Golden, Failure> {
        let file: ValidationFile = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("validation file {uri} is not a golden set: {e}")))?;
        Golden::from_file(file, uri)
    }

    pub fn from_file(file: ValidationFile, uri: &str) -> Result<Golden, Failure> {
        let t = file.tolerance;
        if !(t.absolute.is_finite()
            && t.absolute >= 0.0
            && t.relative.is_finite()
            && t.relative >= 0.0)
        {
            return Err(invalid(format!(
                "validation file {uri}: tolerances must be finite and not negative (absolute {}, relative {})",
                t.absolute, t.relative
            )));
        }
        if !(0.0..=1.0).contains(&file.min_pass_rate) {
            return Err(invalid(format!(
                "validation file {uri}: min_pass_rate {} is not between 0 and 1",
                file.min_pass_rate
            )));
        }
        if file.cases.is_empty() {
            return Err(invalid(format!("validation file {uri} has no cases")));
        }
        let cases = file
            .cases
            .into_iter()
            .map(|case| {
                let expected = case
                    .expected
                    .outputs
                    .iter()
                    .map(|o| {
                        expected_output(o).map_err(|e| {
                            invalid(format!("validation file {uri}: case {}: {e}", case.name))
                        })
                    })
                    .collect::<Result<Vec<_>, Failure>>()?;
                if expected.is_empty() {
                    return Err(invalid(format!(
                        "validation file {uri}: case {} expects no outputs",
                        case.name
                    )));
                }
                Ok(Case {
                    request: serde_json::to_vec(&case.request)
                        .map_err(|e| invalid(e.to_string()))?,
                    name: case.name,
                    expected,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        Ok(Golden {
            tolerance: file.tolerance,
            min_pass_rate: file.min_pass_rate,
            cases,
        })
    }

    pub fn len(&self) -> usize {
        self.cases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// Cases that must pass: `min_pass_rate` of them, rounded up.
    pub fn required(&self) -> u64 {
        let exact = self.min_pass_rate * self.cases.len() as f64;
        (exact - 1e-9).ceil().max(0.0) as u64
    }

    /// Runs every case on `model`, on as many threads as the model has sessions. A case whose request the model
    /// refuses (unknown input, wrong shape, ...) is `InvalidValidationFile` naming the case.
    pub fn run(&self, model: &dyn Model) -> Result<Report, Failure> {
        let started = Instant::now();
        let threads = model.concurrency().clamp(1, 8).min(self.cases.len());
        let chunk = self.cases.len().div_ceil(threads);
        let results: Vec<Result<CaseResult, Failure>> = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .cases
                .chunks(chunk)
                .map(|cases| {
                    scope.spawn(move || {
                        cases
                            .iter()
                            .map(|case| self.check(model, case))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        vec![Err(invalid("a validation thread panicked".to_owned()))]
                    })
                })
                .collect()
        });
        let mut passed = 0u64;
        let mut max_error: Option<f64> = None;
        let mut worst: Option<(f64, String)> = None;
        for result in results {
            let result = result?;
            passed += u64::from(result.passed);
            if let Some(e) = result.max_error {
                max_error = Some(max_error.map_or(e, |m: f64| m.max(e)));
            }
            if let Some((score, text)) = result.worst {
                if worst.as_ref().is_none_or(|(best, _)| score > *best) {
                    worst = Some((score, text));
                }
            }
        }
        Ok(Report {
            view: ValidationView {
                cases: self.cases.len() as u64,
                passed,
                max_error,
                worst: worst.map(|(_, text)| text),
                seconds: started.elapsed().as_secs_f64(),
            },
            required: self.required(),
            min_pass_rate: self.min_pass_rate,
        })
    }

    fn check(&self, model: &dyn Model, case: &Case) -> Result<CaseResult, Failure> {
        let refused = |why: String| {
            invalid(format!(
                "validation case {}: the model refuses its request: {why}",
                case.name
            ))
        };
        let decoded = oip::decode(&case.request, model.signature()).map_err(refused)?;
        let outputs = match model.infer(decoded.inputs) {
            Ok(outputs) => outputs,
            Err(InferError::BadInput(why)) => return Err(refused(why)),
            Err(InferError::Internal(why)) => {
                return Ok(CaseResult::failed(format!(
                    "case {}: inference failed: {why}",
                    case.name
                )))
            }
        };
        let mut result = CaseResult {
            passed: true,
            max_error: None,
            worst: None,
        };
        for expected in &case.expected {
            compare(&case.name, expected, &outputs, self.tolerance, &mut result);
        }
        Ok(result)
    }
}

/// The outcome of a run: the view for `/status`, and whether enough cases passed.
#[derive(Debug, Clone)]
pub struct Report {
    pub view: ValidationView,
    pub required: u64,
    pub min_pass_rate: f64,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.view.passed >= self.required
    }

    /// `ValidationFailed` with the counts and the worst case, when too few cases passed.
    pub fn verdict(&self) -> Result<(), Failure> {
        if self.passed() {
            return Ok(());
        }
        let percent = (self.min_pass_rate * 100.0 * 1000.0).round() / 1000.0;
        let mut message = format!(
            "{} of {} cases passed (required {percent}%)",
            self.view.passed, self.view.cases
        );
        if let Some(worst) = &self.view.worst {
            let _ = write!(message, "; worst: {worst}");
        }
        Err(Failure::new(Reason::ValidationFailed, message))
    }
}

#[derive(Debug)]
struct CaseResult {
    passed: bool,
    max_error: Option<f64>,
    /// How far beyond its tolerance the worst element is (1: exactly at it; infinite: a structural failure or an
    /// exact type that differs), and its description.
    worst: Option<(f64, String)>,
}

impl CaseResult {
    fn failed(why: String) -> CaseResult {
        CaseResult {
            passed: false,
            max_error: None,
            worst: Some((f64::INFINITY, why)),
        }
    }

    fn note(&mut self, score: f64, text: impl FnOnce() -> String) {
        if score > self.worst.as_ref().map_or(0.0, |(s, _)| *s) {
            self.worst = Some((score, text()));
        }
    }

    fn structural(&mut self, text: String) {
        self.passed = false;
        if self.worst.as_ref().is_none_or(|(s, _)| s.is_finite()) {
            self.worst = Some((f64::INFINITY, text));
        }
    }
}

fn compare(
    case: &str,
    expected: &Expected,
    outputs: &[Tensor],
    tolerance: Tolerance,
    result: &mut CaseResult,
) {
    let name = &expected.name;
    let Some(got) = outputs.iter().find(|t| &t.name == name) else {
        result.structural(format!(
            "case {case}, output {name}: missing from the model's outputs"
        ));
        return;
    };
    if got.data.datatype() != expected.datatype {
        result.structural(format!(
            "case {case}, output {name}: datatype {}, want {}",
            got.data.datatype().as_str(),
            expected.datatype.as_str()
        ));
        return;
    }
    if got.shape != expected.shape {
        result.structural(format!(
            "case {case}, output {name}: shape {:?}, want {:?}",
            got.shape, expected.shape
        ));
        return;
    }
    let describe =
        |i: usize, got: &dyn std::fmt::Display, want: &dyn std::fmt::Display, error: &str| {
            format!("case {case}, output {name}, element {i}: got {got}, want {want} ({error})")
        };
    match (&got.data, &expected.data) {
        (TensorData::Fp32(g), TensorData::Fp32(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                float(f64::from(g), f64::from(w), tolerance, result, |e| {
                    describe(i, &g, &w, &format!("error {e:.3e}"))
                });
            }
        }
        (TensorData::Fp64(g), TensorData::Fp64(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                float(g, w, tolerance, result, |e| {
                    describe(i, &g, &w, &format!("error {e:.3e}"))
                });
            }
        }
        (TensorData::Int32(g), TensorData::Int32(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                integer(i64::from(g), i64::from(w), result, |e| {
                    describe(i, &g, &w, &format!("error {e}, integers must match"))
                });
            }
        }
        (TensorData::Int64(g), TensorData::Int64(w)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                integer(g, w, result, |e| {
                    describe(i, &g, &w, &format!("error {e}, integers must match"))
                });
            }
        }
        (TensorData::Bool(g), TensorData::Bool(w)) => {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                if g != w {
                    result.passed = false;
                    result.note(f64::INFINITY, || describe(i, g, w, "must match exactly"));
                }
            }
        }
        (TensorData::Bytes(g), TensorData::Bytes(w)) => {
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                if g != w {
                    result.passed = false;
                    result.note(f64::INFINITY, || {
                        describe(
                            i,
                            &format!("{g:?}"),
                            &format!("{w:?}"),
                            "must match exactly",
                        )
                    });
                }
            }
        }
        _ => unreachable!("datatypes are compared above"),
    }
}

fn float(
    got: f64,
    want: f64,
    tolerance: Tolerance,
    result: &mut CaseResult,
    text: impl FnOnce(f64) -> String,
) {
    let error = if got.is_nan() && want.is_nan() || got == want {
        0.0
    } else {
        (got - want).abs()
    };
    let error = if error.is_nan() { f64::INFINITY } else { error };
    let allowed = tolerance.absolute + tolerance.relative * want.abs();
    result.max_error = Some(result.max_error.map_or(error, |m| m.max(error)));
    if error > allowed || (allowed.is_nan() && error > 0.0) {
        result.passed = false;
    }
    let score = if error == 0.0 {
        0.0
    } else if allowed > 0.0 {
        error / allowed
    } else {
        f64::INFINITY
    };
    result.note(score, || text(error));
}

fn integer(got: i64, want: i64, result: &mut CaseResult, text: impl FnOnce(u64) -> String) {
    let error = got.abs_diff(want);
    result.max_error = Some(
        result
            .max_error
            .map_or(error as f64, |m| m.max(error as f64)),
    );
    if error != 0 {
        result.passed = false;
        result.note(f64::INFINITY, || text(error));
    }
}

/// Checks an expected output against its own datatype and shape and converts its data.
fn expected_output(output: &crate::contract::ExpectedOutput) -> Result<Expected, String> {
    let name = &output.name;
    let datatype = DataType::from_name(&output.datatype).ok_or_else(|| {
        format!(
            "output {name}: datatype {:?} is not one of {}",
            output.datatype,
            crate::contract::capabilities::DATATYPES.join(", ")
        )
    })?;
    let shape = output
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                format!(
                    "output {name}: shape {:?} has a negative dimension",
                    output.shape
                )
            })
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("output {name}: shape {:?} is too large", output.shape))?;
    let mut elements = Vec::new();
    flatten(&output.data, &mut elements);
    if elements.len() != count {
        return Err(format!(
            "output {name}: shape {:?} needs {count} elements, data has {}",
            output.shape,
            elements.len()
        ));
    }
    let bad = |i: usize, v: &Value| {
        format!(
            "output {name}: element {i} ({v}) is not a {}",
            datatype.as_str()
        )
    };
    fn each<T>(
        elements: &[&Value],
        f: impl Fn(&Value) -> Option<T>,
        bad: impl Fn(usize, &Value) -> String,
    ) -> Result<Vec<T>, String> {
        elements
            .iter()
            .enumerate()
            .map(|(i, v)| f(v).ok_or_else(|| bad(i, v)))
            .collect()
    }
    // A NaN output is written as null (JSON has no NaN); it expects NaN.
    let float = |v: &Value| {
        if v.is_null() {
            Some(f64::NAN)
        } else {
            v.as_f64()
        }
    };
    let data = match datatype {
        DataType::Fp32 => TensorData::Fp32(each(&elements, |v| float(v).map(|f| f as f32), bad)?),
        DataType::Fp64 => TensorData::Fp64(each(&elements, float, bad)?),
        DataType::Int32 => TensorData::Int32(each(
            &elements,
            |v| v.as_i64().and_then(|i| i32::try_from(i).ok()),
            bad,
        )?),
        DataType::Int64 => TensorData::Int64(each(&elements, Value::as_i64, bad)?),
        DataType::Bool => TensorData::Bool(each(&elements, Value::as_bool, bad)?),
        DataType::Bytes => {
            TensorData::Bytes(each(&elements, |v| v.as_str().map(str::to_owned), bad)?)
        }
    };
    Ok(Expected {
        name: name.clone(),
        datatype,
        shape,
        data,
    })
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Signature, TensorSpec};
    use serde_json::json;

    /// y = 2x on FP32 [-1, 2], and the label `x0 > 0` as INT64 [-1] and as BYTES ("pos"/"neg").
    struct Doubler;

    impl Model for Doubler {
        fn signature(&self) -> &Signature {
            static SIGNATURE: std::sync::OnceLock<Signature> = std::sync::OnceLock::new();
            SIGNATURE.get_or_init(|| Signature {
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    datatype: DataType::Fp32,
                    shape: vec![-1, 2],
                }],
                outputs: vec![
                    TensorSpec {
                        name: "y".into(),
                        datatype: DataType::Fp32,
                        shape: vec![-1, 2],
                    },
                    TensorSpec {
                        name: "label".into(),
                        datatype: DataType::Int64,
                        shape: vec![-1],
                    },
                    TensorSpec {
                        name: "word".into(),
                        datatype: DataType::Bytes,
                        shape: vec![-1],
                    },
                ],
            })
        }
        fn concurrency(&self) -> usize {
            2
        }
        fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
            let TensorData::Fp32(x) = &inputs[0].data else {
                unreachable!()
            };
            if x.contains(&13.0) {
                return Err(InferError::Internal("unlucky".into()));
            }
            let rows = inputs[0].shape[0];
            let labels: Vec<i64> = x.chunks(2).map(|r| i64::from(r[0] > 0.0)).collect();
            Ok(vec![
                Tensor {
                    name: "y".into(),
                    shape: inputs[0].shape.clone(),
                    data: TensorData::Fp32(x.iter().map(|v| v * 2.0).collect()),
                },
                Tensor {
                    name: "label".into(),
                    shape: vec![rows],
                    data: TensorData::Int64(labels.clone()),
                },
                Tensor {
                    name: "word".into(),
                    shape: vec![rows],
                    data: TensorData::Bytes(
                        labels
                            .iter()
                            .map(|&l| if l == 1 { "pos" } else { "neg" }.to_owned())
                            .collect(),
                    ),
                },
            ])
        }
        fn warm_up(&self) -> Result<(), InferError> {
            Ok(())
        }
        fn platform(&self) -> &'static str {
            "test"
        }
    }

    fn case(name: &str, x: [f32; 2], y: [f64; 2], label: i64, word: &str) -> Value {
        json!({
            "name": name,
            "request": {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [x]}]},
            "expected": {"outputs": [
                {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [y]},
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [label]},
                {"name": "word", "datatype": "BYTES", "shape": [1], "data": [word]},
            ]}
        })
    }

    fn golden(cases: Vec<Value>, extra: Value) -> Result<Golden, Failure> {
        let mut file = json!({"cases": cases});
        file.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Golden::parse(file.to_string().as_bytes(), "file:///golden.json")
    }

    #[test]
    fn exact_answers_pass_with_no_error() {
        let g = golden(
            vec![
                case("a", [1.0, 2.0], [2.0, 4.0], 1, "pos"),
                case("b", [-1.0, 0.5], [-2.0, 1.0], 0, "neg"),
            ],
            json!({}),
        )
        .unwrap();
        let report = g.run(&Doubler).unwrap();
        assert_eq!((report.view.cases, report.view.passed), (2, 2));
        assert_eq!(report.view.max_error, Some(0.0));
        assert_eq!(report.view.worst, None);
        report.verdict().unwrap();
    }

    #[test]
    fn floats_pass_within_absolute_plus_relative_and_fail_beyond() {
        // want 100: allowed 0.001 + 0.0001 * 100 = 0.011.
        let tolerance = json!({"tolerance": {"absolute": 0.001, "relative": 0.0001}});
        let within = golden(
            vec![case("in", [50.0, 1.0], [100.01, 2.0], 1, "pos")],
            tolerance.clone(),
        )
        .unwrap();
        let report = within.run(&Doubler).unwrap();
        assert_eq!(report.view.passed, 1);
        assert!(
            report.view.worst.as_deref().unwrap().contains("element 0"),
            "{report:?}"
        );
        let beyond = golden(
            vec![case("out", [50.0, 1.0], [100.02, 2.0], 1, "pos")],
            tolerance,
        )
        .unwrap();
        let report = beyond.run(&Doubler).unwrap();
        assert_eq!(report.view.passed, 0);
        let failure = report.verdict().unwrap_err();
        assert_eq!(failure.reason, Reason::ValidationFailed);
        assert!(
            failure.message.starts_with("0 of 1 cases passed (required 100%); worst: case out, output y, element 0: got 100, want 100.02 (error"),
            "{failure}"
        );
    }

    #[test]
    fn integers_and_strings_must_match_exactly_and_the_pass_rate_decides() {
        let cases = vec![
            case("good", [1.0, 2.0], [2.0, 4.0], 1, "pos"),
            case("bad-label", [1.0, 2.0], [2.0, 4.0], 0, "pos"),
            case("bad-word", [1.0, 2.0], [2.0, 4.0], 1, "neg"),
            case("good-2", [-1.0, 2.0], [-2.0, 4.0], 0, "neg"),
        ];
        let strict = golden(cases.clone(), json!({})).unwrap();
        let report = strict.run(&Doubler).unwrap();
        assert_eq!((report.view.passed, report.required), (2, 4));
        let message = report.verdict().unwrap_err().message;
        assert!(message.starts_with("2 of 4 cases passed (required 100%); worst: case bad-label, output label, element 0: got 1, want 0"), "{message}");
        assert_eq!(report.view.max_error, Some(1.0));
        let half = golden(cases.clone(), json!({"min_pass_rate": 0.5})).unwrap();
        half.run(&Doubler).unwrap().verdict().unwrap();
        let most = golden(cases, json!({"min_pass_rate": 0.75})).unwrap();
        let message = most.run(&Doubler).unwrap().verdict().unwrap_err().message;
        assert!(
            message.starts_with("2 of 4 cases passed (required 75%)"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_output_another_shape_or_a_failed_inference_fails_the_case() {
        let mut missing = case("missing", [1.0, 2.0], [2.0, 4.0], 1, "pos");
        missing["expected"]["outputs"][0]["name"] = json!("z");
        let mut shape = case("shape", [1.0, 2.0], [2.0, 4.0], 1, "pos");
        shape["expected"]["outputs"][0]["shape"] = json!([2, 1]);
        let mut datatype = case("datatype", [1.0, 2.0], [2.0, 4.0], 1, "pos");
        datatype["expected"]["outputs"][1]["datatype"] = json!("INT32");
        let crash = case("crash", [13.0, 2.0], [26.0, 4.0], 1, "pos");
        for (c, text) in [
            (missing, "case missing, output z: missing"),
            (shape, "case shape, output y: shape [1, 2], want [2, 1]"),
            (
                datatype,
                "case datatype, output label: datatype INT64, want INT32",
            ),
            (crash, "case crash: inference failed: unlucky"),
        ] {
            let report = golden(vec![c], json!({})).unwrap().run(&Doubler).unwrap();
            assert_eq!(report.view.passed, 0);
            let worst = report.view.worst.as_deref().unwrap();
            assert!(worst.starts_with(text), "{worst}");
        }
    }

    #[test]
    fn malformed_files_and_refused_requests_are_invalid_validation_files() {
        let good = case("a", [1.0, 2.0], [2.0, 4.0], 1, "pos");
        let mut bad_data = good.clone();
        bad_data["expected"]["outputs"][0]["data"] = json!([1.0]);
        let mut unknown_input = good.clone();
        unknown_input["request"]["inputs"][0]["name"] = json!("features");
        let mut bad_shape = good.clone();
        bad_shape["request"]["inputs"][0]["shape"] = json!([1, 3]);
        let cases: Vec<(Result<Golden, Failure>, &str)> = vec![
            (Golden::parse(b"{not json", "u"), "is not a golden set"),
            (Golden::parse(br#"{"cases": []}"#, "u"), "has no cases"),
            (
                golden(vec![good.clone()], json!({"min_pass_rate": 2})),
                "min_pass_rate 2",
            ),
            (
                golden(vec![good.clone()], json!({"tolerance": {"absolute": -1}})),
                "tolerances",
            ),
            (
                golden(vec![bad_data], json!({})),
                "case a: output y: shape [1, 2] needs 2 elements",
            ),
        ];
        for (result, text) in cases {
            let failure = result.unwrap_err();
            assert_eq!(failure.reason, Reason::InvalidValidationFile);
            assert!(failure.message.contains(text), "{failure}");
        }
        for (c, text) in [
            (unknown_input, "unknown input \"features\""),
            (bad_shape, "expects [-1, 2]"),
        ] {
            let failure = golden(vec![c], json!({}))
                .unwrap()
                .run(&Doubler)
                .unwrap_err();
            assert_eq!(failure.reason, Reason::InvalidValidationFile);
            assert!(
                failure
                    .message
                    .starts_with("validation case a: the model refuses its request")
                    && failure.message.contains(text),
                "{failure}"
            );
        }
    }
}
