//! What a model file records about the framework that made it, read without running any Python.
//!
//! XGBoost JSON and UBJSON models, LightGBM text models and MLflow model directories (their MLmodel file and
//! requirements.txt). Every reader is bounded: it reads only what it needs (a LightGBM header, a few keys of an
//! XGBoost model, files of at most [`MAX_METADATA_FILE`] bytes), checks every length against the bytes that
//! remain, allocates nothing from a length field alone and nests no deeper than [`MAX_DEPTH`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::contract::pep440::{normalise_name, Specifiers};
use crate::runtime::DataType;

/// How deep containers may nest in an XGBoost model (real ones nest about 6 levels).
pub const MAX_DEPTH: usize = 64;
/// The largest MLmodel, requirements.txt or LightGBM header read.
pub const MAX_METADATA_FILE: u64 = 1 << 20;
/// The largest LightGBM header (feature names and ranges grow with the features).
const MAX_LIGHTGBM_HEADER: u64 = 64 << 20;
/// The most items kept from one array of a model file (feature names).
const MAX_KEPT_ITEMS: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("malformed model: {0}")]
    Corrupt(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("cannot read the file: {0}")]
    Io(String),
}

fn corrupt(message: impl Into<String>) -> FileError {
    FileError::Corrupt(message.into())
}

fn io_error(path: &Path, error: &std::io::Error) -> FileError {
    // The file's name only: the directory is the server's own business.
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    FileError::Io(format!("{name}: {error}"))
}

// ---------------------------------------------------------------------------------------------------------------
// XGBoost

/// What an XGBoost JSON or UBJSON model records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XgboostModel {
    /// The XGBoost version that saved the model ("3.2.0").
    pub version: String,
    pub num_feature: usize,
    /// As XGBoost records it: 0 unless the objective is multi-class.
    pub num_class: usize,
    pub objective: Option<String>,
    /// Empty when the model was trained without names.
    pub feature_names: Vec<String>,
}

/// An XGBoost `.json` or `.ubj` (UBJSON) model: the top-level `version` array (`[3, 2, 0]` -> "3.2.0") and, for
/// the signature, `learner.learner_model_param.num_feature`/`num_class`, `learner.objective.name` and
/// `learner.feature_names`. The format follows the extension; without `.json` or `.ubj` a file starting with
/// `{"` (or whitespace) is JSON, with `{` and a UBJSON marker UBJSON, and anything else XGBoost's legacy binary
/// format, which is refused.
pub fn xgboost(path: &Path) -> Result<XgboostModel, FileError> {
    let file = File::open(path).map_err(|e| io_error(path, &e))?;
    let len = file.metadata().map_err(|e| io_error(path, &e))?.len();
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| io_error(path, &e))?;
    let first = head.iter().copied().find(|b| !b.is_ascii_whitespace());
    let second = head.get(1).copied();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if head.is_empty() {
        return Err(corrupt("the XGBoost model file is empty"));
    }
    let json = match extension.as_deref() {
        Some("json") if first == Some(b'{') => true,
        Some("json") => return Err(corrupt("the XGBoost .json model is not a JSON object")),
        _ if head.first() != Some(&b'{') && first == Some(b'{') => true,
        _ if head.first() != Some(&b'{') => {
            return Err(FileError::Unsupported(
                "this XGBoost model is in the legacy binary format, which the runtime does not read: save it with \
                 a .json or .ubj file name (booster.save_model(\"model.ubj\"))"
                    .into(),
            ));
        }
        Some("ubj") => false,
        _ => matches!(second, Some(b'"' | b'}' | b' ' | b'\t' | b'\r' | b'\n')),
    };
    let raw = if json {
        let model: JsonModel = serde_json::from_reader(reader)
            .map_err(|e| corrupt(format!("not an XGBoost JSON model: {e}")))?;
        model.into_raw()
    } else {
        let mut ubj = ubjson::Reader::new(reader, len);
        let root = ubj
            .document()
            .map_err(|e| corrupt(format!("not an XGBoost UBJSON model: {e}")))?;
        RawXgboost::from_ubjson(&root)?
    };
    raw.finish()
}

/// The recorded fields, before their checks.
struct RawXgboost {
    version: Vec<u64>,
    num_feature: Option<Count>,
    num_class: Option<Count>,
    objective: Option<String>,
    feature_names: Vec<String>,
}

/// XGBoost writes its parameters as strings ("5"); a number is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Count {
    Number(u64),
    Text(String),
}

impl Count {
    fn get(&self, what: &str) -> Result<usize, FileError> {
        let n = match self {
            Count::Number(n) => usize::try_from(*n).ok(),
            Count::Text(s) => s.trim().parse().ok(),
        };
        n.ok_or_else(|| corrupt(format!("the XGBoost model's {what} is not a count")))
    }
}

impl RawXgboost {
    fn finish(self) -> Result<XgboostModel, FileError> {
        let [major, minor, patch] = self.version.as_slice() else {
            return Err(corrupt(
                "the XGBoost model's version is not [major, minor, patch]",
            ));
        };
        let num_feature = self
            .num_feature
            .ok_or_else(|| corrupt("the XGBoost model records no learner_model_param.num_feature"))?
            .get("num_feature")?;
        let num_class = self
            .num_class
            .map(|c| c.get("num_class"))
            .transpose()?
            .unwrap_or(0);
        if !self.feature_names.is_empty() && self.feature_names.len() != num_feature {
            return Err(corrupt(format!(
                "the XGBoost model names {} features but records num_feature {num_feature}",
                self.feature_names.len()
            )));
        }
        Ok(XgboostModel {
            version: format!("{major}.{minor}.{patch}"),
            num_feature,
            num_class,
            objective: self.objective,
            feature_names: self.feature_names,
        })
    }

    fn from_ubjson(root: &ubjson::Value) -> Result<RawXgboost, FileError> {
        use ubjson::Value;
        let bad = |what: &str| corrupt(format!("the XGBoost model's {what} has the wrong type"));
        let count = |v: &Value, what: &str| match v {
            Value::Int(n) => u64::try_from(*n).map(Count::Number).map_err(|_| bad(what)),
            Value::Str(s) => Ok(Count::Text(s.clone())),
            _ => Err(bad(what)),
        };
        let version = match root.field("version")? {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Int(n) => u64::try_from(*n).map_err(|_| bad("version")),
                    _ => Err(bad("version")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("version")),
            None => return Err(corrupt("the XGBoost model records no version")),
        };
        let learner = root
            .field("learner")?
            .ok_or_else(|| corrupt("the XGBoost model has no learner"))?;
        let param = learner.field("learner_model_param")?;
        let num_feature = param
            .map(|p| p.field("num_feature"))
            .transpose()?
            .flatten()
            .map(|v| count(v, "num_feature"))
            .transpose()?;
        let num_class = param
            .map(|p| p.field("num_class"))
            .transpose()?
            .flatten()
            .map(|v| count(v, "num_class"))
            .transpose()?;
        let objective = match learner
            .field("objective")?
            .map(|o| o.field("name"))
            .transpose()?
            .flatten()
        {
            Some(Value::Str(name)) => Some(name.clone()),
            Some(_) => return Err(bad("objective name")),
            None => None,
        };
        let feature_names = match learner.field("feature_names")? {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(bad("feature_names")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(bad("feature_names")),
            None => Vec::new(),
        };
        Ok(RawXgboost {
            version,
            num_feature,
            num_class,
            objective,
            feature_names,
        })
    }
}

/// The parts of XGBoost's JSON model schema (doc/model.schema) read here; serde skips the rest (the trees)
/// without keeping it, and serde_json refuses nesting deeper than 128.
#[derive(Deserialize)]
struct JsonModel {
    version: Vec<u64>,
    learner: JsonLearner,
}

#[derive(Deserialize)]
struct JsonLearner {
    #[serde(default)]
    feature_names: Vec<String>,
    learner_model_param: Option<JsonModelParam>,
    objective: Option<JsonObjective>,
}

#[derive(Deserialize)]
struct JsonModelParam {
    num_feature: Option<Count>,
    num_class: Option<Count>,
}

#[derive(Deserialize)]
struct JsonObjective {
    name: Option<String>,
}

impl JsonModel {
    fn into_raw(self) -> RawXgboost {
        let (num_feature, num_class) = match self.learner.learner_model_param {
            Some(p) => (p.num_feature, p.num_class),
            None => (None, None),
        };
        RawXgboost {
            version: self.version,
            num_feature,
            num_class,
            objective: self.learner.objective.and_then(|o| o.name),
            feature_names: self.learner.feature_names,
        }
    }
}

/// A bounded UBJSON reader (the draft 12 types XGBoost writes and reads) that keeps only the values on the paths
/// XGBoost's metadata lives at and skips the rest, typed numeric arrays by seeking past them.
mod ubjson {
    use super::{MAX_DEPTH, MAX_KEPT_ITEMS};
    use std::io::{BufReader, Read, Seek};

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
        /// Read and checked, not kept.
        Skipped,
    }

    impl Value {
        /// The value of `key` in an object (None when absent or not an object); a key kept twice is an error.
        pub fn field(&self, key: &str) -> Result<Option<&Value>, super::FileError> {
            let Value::Object(entries) = self else {
                return Ok(None);
            };
            let mut found = entries.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
            let first = found.next();
            if found.next().is_some() {
                return Err(super::corrupt(format!(
                    "the XGBoost model has the key '{key}' twice"
                )));
            }
            Ok(first)
        }
    }

    /// Where a value sits: decides which values are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Node {
        Root,
        Version,
        Learner,
        ModelParam,
        Objective,
        FeatureNames,
        /// A kept scalar (a container here is skipped).
        Leaf,
        Skip,
    }

    impl Node {
        fn member(self, key: &[u8]) -> Node {
            match (self, key) {
                (Node::Root, b"version") => Node::Version,
                (Node::Root, b"learner") => Node::Learner,
                (Node::Learner, b"learner_model_param") => Node::ModelParam,
                (Node::Learner, b"objective") => Node::Objective,
                (Node::Learner, b"feature_names") => Node::FeatureNames,
                (Node::ModelParam, b"num_feature" | b"num_class") | (Node::Objective, b"name") => {
                    Node::Leaf
                }
                _ => Node::Skip,
            }
        }

        fn item(self) -> Node {
            match self {
                Node::Version | Node::FeatureNames => Node::Leaf,
                _ => Node::Skip,
            }
        }

        fn keeps_scalars(self) -> bool {
            self != Node::Skip
        }

        fn keeps_containers(self) -> bool {
            !matches!(self, Node::Skip | Node::Leaf)
        }
    }

    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        #[error("it ends early, at byte {0}")]
        Truncated(u64),
        #[error("{what} at byte {at}")]
        Invalid { what: String, at: u64 },
        #[error("containers nest deeper than {MAX_DEPTH} levels")]
        TooDeep,
        #[error("{0}")]
        Io(#[from] std::io::Error),
    }

    /// No key XGBoost reads is longer; longer keys are skipped unread.
    const MAX_KEY: u64 = 256;

    pub struct Reader<R> {
        inner: BufReader<R>,
        pos: u64,
        len: u64,
    }

    impl<R: Read + Seek> Reader<R> {
        /// Reads `inner`, which holds `len` bytes from where it stands.
        pub fn new(inner: BufReader<R>, len: u64) -> Reader<R> {
            Reader { inner, pos: 0, len }
        }

        /// The whole file: one object and nothing after it.
        pub fn document(&mut self) -> Result<Value, Error> {
            let marker = self.byte()?;
            if marker != b'{' {
                return Err(self.invalid("the model is not an object"));
            }
            let root = self.container(b'{', Node::Root, 1)?;
            if self.pos != self.len {
                return Err(self.invalid("bytes follow the model"));
            }
            Ok(root)
        }

        fn remaining(&self) -> u64 {
            self.len.saturating_sub(self.pos)
        }

        fn invalid(&self, what: impl Into<String>) -> Error {
            Error::Invalid {
                what: what.into(),
                at: self.pos,
            }
        }

        fn need(&self, n: u64) -> Result<(), Error> {
            if n > self.remaining() {
                return Err(Error::Truncated(self.len));
            }
            Ok(())
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
            self.need(N as u64)?;
            let mut buf = [0; N];
            self.inner.read_exact(&mut buf)?;
            self.pos += N as u64;
            Ok(buf)
        }

        fn byte(&mut self) -> Result<u8, Error> {
            Ok(self.array::<1>()?[0])
        }

        /// `n` bytes, after checking the file has them (so the allocation is bounded by the file).
        fn bytes(&mut self, n: u64) -> Result<Vec<u8>, Error> {
            self.need(n)?;
            let mut buf = vec![0; usize::try_from(n).map_err(|_| Error::Truncated(self.len))?];
            self.inner.read_exact(&mut buf)?;
            self.pos += n;
            Ok(buf)
        }

        fn skip(&mut self, n: u64) -> Result<(), Error> {
            self.need(n)?;
            let offset = i64::try_from(n).map_err(|_| Error::Truncated(self.len))?;
            self.inner.seek_relative(offset)?;
            self.pos += n;
            Ok(())
        }

        fn integer(&mut self, marker: u8) -> Result<Option<i64>, Error> {
            Ok(Some(match marker {
                b'i' => i64::from(i8::from_be_bytes(self.array()?)),
                b'U' => i64::from(self.byte()?),
                b'I' => i64::from(i16::from_be_bytes(self.array()?)),
                b'l' => i64::from(i32::from_be_bytes(self.array()?)),
                b'L' => i64::from_be_bytes(self.array()?),
                _ => return Ok(None),
            }))
        }

        /// A length or count: an integer value, not negative.
        fn length(&mut self) -> Result<u64, Error> {
            let marker = self.byte()?;
            match self.integer(marker)? {
                Some(n) => {
                    u64::try_from(n).map_err(|_| self.invalid(format!("negative length {n}")))
                }
                None => Err(self.invalid(format!("a length has the marker 0x{marker:02x}"))),
            }
        }

        /// A string's bytes (after its marker): kept as UTF-8, or skipped.
        fn string(&mut self, keep: bool) -> Result<Option<String>, Error> {
            let n = self.length()?;
            if !keep {
                self.skip(n)?;
                return Ok(None);
            }
            let bytes = self.bytes(n)?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| self.invalid("a string is not UTF-8"))
        }

        /// The payload size of a fixed-size type, for skipping typed arrays whole.
        fn fixed_size(marker: u8) -> Option<u64> {
            match marker {
                b'Z' | b'T' | b'F' => Some(0),
                b'i' | b'U' | b'C' => Some(1),
                b'I' => Some(2),
                b'l' | b'd' => Some(4),
                b'L' | b'D' => Some(8),
                _ => None,
            }
        }

        /// The value whose marker was just read.
        fn value(&mut self, marker: u8, node: Node, depth: usize) -> Result<Value, Error> {
            if let Some(n) = self.integer(marker)? {
                return Ok(Value::Int(n));
            }
            Ok(match marker {
                b'Z' => Value::Null,
                b'T' => Value::Bool(true),
                b'F' => Value::Bool(false),
                b'd' => Value::Float(f64::from(f32::from_be_bytes(self.array()?))),
                b'D' => Value::Float(f64::from_be_bytes(self.array()?)),
                b'C' => {
                    let c = self.byte()?;
                    if !c.is_ascii() {
                        return Err(self.invalid("a char is not ASCII"));
                    }
                    Value::Str(char::from(c).to_string())
                }
                b'S' | b'H' => match self.string(node.keeps_scalars())? {
                    Some(s) => Value::Str(s),
                    None => Value::Skipped,
                },
                b'[' | b'{' => self.container(marker, node, depth + 1)?,
                _ => return Err(self.invalid(format!("unknown marker 0x{marker:02x}"))),
            })
        }

        /// The next marker, past no-op `N`s.
        fn marker(&mut self) -> Result<u8, Error> {
            loop {
                let marker = self.byte()?;
                if marker != b'N' {
                    return Ok(marker);
                }
            }
        }

        /// An array or object whose opening marker was just read.
        fn container(&mut self, open: u8, node: Node, depth: usize) -> Result<Value, Error> {
            if depth > MAX_DEPTH {
                return Err(Error::TooDeep);
            }
            let object = open == b'{';
            let close = if object { b'}' } else { b']' };
            let keep = node.keeps_containers();
            // Optimised containers: `$type#count` or `#count`.
            let mut first = Some(self.byte()?);
            let mut typ = None;
            let mut count = None;
            if first == Some(b'$') {
                let t = self.byte()?;
                if matches!(t, b'N' | b'$' | b'#' | b']' | b'}') {
                    return Err(self.invalid(format!("a container of type 0x{t:02x}")));
                }
                typ = Some(t);
                if self.byte()? != b'#' {
                    return Err(self.invalid("a typed container has no count"));
                }
                count = Some(self.length()?);
                first = None;
            } else if first == Some(b'#') {
                count = Some(self.length()?);
                first = None;
            }
            // A typed array of fixed-size items is skipped whole (or, kept, read item by item).
            if let (false, Some(t), Some(n)) = (object, typ, count) {
                if let Some(size) = Self::fixed_size(t) {
                    let total = n.checked_mul(size).ok_or(Error::Truncated(self.len))?;
                    self.need(total)?;
                    if !keep || size == 0 {
                        self.skip(total)?;
                        return Ok(Value::Skipped);
                    }
                }
            }
            let mut items = Vec::new();
            let mut entries = Vec::new();
            let mut done: u64 = 0;
            loop {
                if count.is_some_and(|n| done >= n) {
                    break;
                }
                // An object's key: a length without a marker of its own, unless the object ends here.
                let mut child = node.item();
                let mut key = None;
                if object {
                    let m = match (first.take(), count) {
                        (Some(m), None) if m != b'N' => m,
                        (_, None) => self.marker()?,
                        (_, Some(_)) => self.byte()?,
                    };
                    if count.is_none() && m == close {
                        break;
                    }
                    let n = match self.integer(m)? {
                        Some(n) => u64::try_from(n)
                            .map_err(|_| self.invalid(format!("negative length {n}")))?,
                        None => return Err(self.invalid(format!("a key has the marker 0x{m:02x}"))),
                    };
                    if n > MAX_KEY || !keep {
                        self.skip(n)?;
                        child = Node::Skip;
                    } else {
                        let k = self.bytes(n)?;
                        child = node.member(&k);
                        key = Some(
                            String::from_utf8(k).map_err(|_| self.invalid("a key is not UTF-8"))?,
                        );
                    }
                }
                let marker = match typ {
                    Some(t) => t,
                    None if object => self.marker()?,
                    None => match (first.take(), count) {
                        (Some(m), _) if m != b'N' => m,
                        _ => self.marker()?,
                    },
                };
                if !object && count.is_none() && marker == close {
                    break;
                }
                let value = self.value(marker, child, depth)?;
                done += 1;
                if child == Node::Skip {
                    continue;
                }
                if entries.len().max(items.len()) >= MAX_KEPT_ITEMS {
                    return Err(self.invalid(format!("more than {MAX_KEPT_ITEMS} items")));
                }
                match key {
                    Some(k) => entries.push((k, value)),
                    None => items.push(value),
                }
            }
            Ok(match (keep, object) {
                (false, _) => Value::Skipped,
                (true, true) => Value::Object(entries),
                (true, false) => Value::Array(items),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// LightGBM

/// What a LightGBM text model's header records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LightgbmModel {
    /// The model format version ("v4"), not the LightGBM version.
    pub format_version: String,
    /// `max_feature_idx` + 1.
    pub num_features: usize,
    pub num_class: usize,
    /// As written, e.g. "binary sigmoid:1".
    pub objective: Option<String>,
    pub feature_names: Vec<String>,
}

/// A LightGBM text model: its header's `version=v4` (the model format), `max_feature_idx=`, `num_class=`,
/// `objective=` and `feature_names=`. Only the header is read: up to the first `Tree=` or blank line.
pub fn lightgbm(path: &Path) -> Result<LightgbmModel, FileError> {
    let file = File::open(path).map_err(|e| io_error(path, &e))?;
    let mut reader = BufReader::new(file).take(MAX_LIGHTGBM_HEADER);
    // The first line says "tree" (GBDT::SubModelName); checked on a few bytes, before reading lines of any length.
    let mut first = Vec::new();
    (&mut reader)
        .take(6)
        .read_to_end(&mut first)
        .map_err(|e| io_error(path, &e))?;
    if first.is_empty() {
        return Err(corrupt("the LightGBM model file is empty"));
    }
    let rest = first
        .strip_prefix(b"tree")
        .and_then(|rest| rest.strip_prefix(b"\r").or(Some(rest)));
    // The bytes read past the first line start the second.
    let mut line = match rest {
        Some([b'\n', more @ ..]) => more.to_vec(),
        _ => {
            return Err(corrupt(
                "not a LightGBM text model: its first line is not \"tree\"",
            ));
        }
    };
    let mut number = 1usize;
    let (mut version, mut max_feature_idx, mut num_class, mut objective, mut names) =
        (None, None, None, None, None);
    loop {
        number += 1;
        if line.last() != Some(&b'\n') {
            reader
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error(path, &e))?;
        }
        if line.is_empty() {
            break;
        }
        let last = line.last() != Some(&b'\n');
        if last && reader.limit() == 0 {
            return Err(corrupt(format!(
                "the LightGBM model's header is longer than {MAX_LIGHTGBM_HEADER} bytes"
            )));
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            return Err(corrupt(format!(
                "line {number} of the LightGBM model is not text: not a LightGBM text model (the binary format is \
                 not supported)"
            )));
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() || text.starts_with("Tree=") {
            break;
        }
        let (key, value) = text.split_once('=').unwrap_or((text, ""));
        match key {
            "version" => version = Some(value.to_owned()),
            "max_feature_idx" => max_feature_idx = Some(value.to_owned()),
            "num_class" => num_class = Some(value.to_owned()),
            "objective" => objective = Some(value.to_owned()),
            "feature_names" => names = Some(value.to_owned()),
            _ => {}
        }
        if last {
            break;
        }
        line.clear();
    }
    let max_feature_idx: i64 = max_feature_idx
        .ok_or_else(|| corrupt("the LightGBM model records no max_feature_idx"))?
        .trim()
        .parse()
        .map_err(|_| corrupt("the LightGBM model's max_feature_idx is not a number"))?;
    let num_features = usize::try_from(max_feature_idx)
        .ok()
        .and_then(|i| i.checked_add(1))
        .ok_or_else(|| {
            corrupt(format!(
                "the LightGBM model's max_feature_idx {max_feature_idx} is negative"
            ))
        })?;
    let num_class = num_class
        .ok_or_else(|| corrupt("the LightGBM model records no num_class"))?
        .trim()
        .parse()
        .map_err(|_| corrupt("the LightGBM model's num_class is not a count"))?;
    let feature_names: Vec<String> = names
        .ok_or_else(|| corrupt("the LightGBM model records no feature_names"))?
        .split(' ')
        .map(str::to_owned)
        .collect();
    // LightGBM refuses the same mismatch when it loads the model.
    if feature_names.len() != num_features {
        return Err(corrupt(format!(
            "the LightGBM model names {} features but its max_feature_idx is {max_feature_idx}",
            feature_names.len()
        )));
    }
    // Checked last: a file lacking the other keys is not a model at all, old or new.
    let format_version = version.ok_or_else(|| {
        FileError::Unsupported(
            "the LightGBM model records no format version: it predates LightGBM 2.0.12; save it again with a \
             newer LightGBM"
                .into(),
        )
    })?;
    if !format_version.starts_with('v') || format_version.len() > 16 {
        return Err(corrupt(format!(
            "the LightGBM model's version '{format_version}' is not a format version"
        )));
    }
    Ok(LightgbmModel {
        format_version,
        num_features,
        num_class,
        objective,
        feature_names,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// MLflow

/// The MLflow flavors the runtime serves, in the order they are preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MlflowFlavor {
    Sklearn,
    Xgboost,
    Lightgbm,
}

impl MlflowFlavor {
    const ALL: [MlflowFlavor; 3] = [
        MlflowFlavor::Sklearn,
        MlflowFlavor::Xgboost,
        MlflowFlavor::Lightgbm,
    ];

    /// The flavor's key under `flavors:` in MLmodel.
    pub fn key(self) -> &'static str {
        match self {
            MlflowFlavor::Sklearn => "sklearn",
            MlflowFlavor::Xgboost => "xgboost",
            MlflowFlavor::Lightgbm => "lightgbm",
        }
    }

    /// The framework's Python package (normalised distribution name).
    pub fn package(self) -> &'static str {
        match self {
            MlflowFlavor::Sklearn => "scikit-learn",
            MlflowFlavor::Xgboost => "xgboost",
            MlflowFlavor::Lightgbm => "lightgbm",
        }
    }

    /// The keys of the model file and of the framework version in the flavor's configuration (as
    /// mlflow/{sklearn,xgboost,lightgbm}/__init__.py `add_flavor` writes them).
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            MlflowFlavor::Sklearn => ("pickled_model", "sklearn_version"),
            MlflowFlavor::Xgboost => ("data", "xgb_version"),
            MlflowFlavor::Lightgbm => ("data", "lgb_version"),
        }
    }
}

/// What an MLflow model directory records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MlflowModel {
    pub flavor: MlflowFlavor,
    /// The model file, inside the directory (checked).
    pub model_file: PathBuf,
    /// `sklearn_version`, `xgb_version` or `lgb_version`.
    pub flavor_version: Option<String>,
    /// sklearn: `serialization_format` (pickle, cloudpickle, skops). xgboost: `model_format` (ubj, json).
    /// lightgbm: `serialization_format`, which applies only when `model_class` is not `lightgbm.basic.Booster`
    /// (a Booster is always saved as a text model).
    pub serialization_format: Option<String>,
    /// xgboost and lightgbm: the class MLflow instantiates (`xgboost.core.Booster`, `lightgbm.basic.Booster`,
    /// or a scikit-learn-API class such as `lightgbm.sklearn.LGBMClassifier`, saved as a pickle).
    pub model_class: Option<String>,
    /// The flavor's `code` directory (Python code MLflow puts on the path when loading), when there is one.
    pub code: Option<String>,
    pub signature: Option<DeclaredSignature>,
    /// requirements.txt (empty when the directory has none).
    pub requirements: Vec<Requirement>,
    pub mlflow_version: Option<String>,
}

/// The signature MLflow recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredSignature {
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredTensor {
    pub name: Option<String>,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// For a column-based signature (a DataFrame), the column names in order; empty for tensors.
    pub columns: Vec<String>,
}

#[derive(Deserialize)]
struct MlmodelFile {
    flavors: Option<serde_yaml::Mapping>,
    mlflow_version: Option<serde_yaml::Value>,
    signature: Option<RawSignature>,
}

#[derive(Deserialize)]
struct RawSignature {
    inputs: Option<String>,
    outputs: Option<String>,
}

/// An unpacked MLflow model directory: its MLmodel (the first of the sklearn, xgboost and lightgbm flavors, the
/// model file it names, the framework version, the MLflow version and the declared signature) and its
/// requirements.txt.
pub fn mlflow(dir: &Path) -> Result<MlflowModel, FileError> {
    let text = read_bounded(&dir.join("MLmodel"))?;
    let mlmodel: MlmodelFile = serde_yaml::from_str(&text)
        .map_err(|e| corrupt(format!("MLmodel is not an MLflow model: {e}")))?;
    let flavors = mlmodel
        .flavors
        .ok_or_else(|| corrupt("MLmodel has no flavors"))?;
    let Some((flavor, config)) = MlflowFlavor::ALL
        .into_iter()
        .find_map(|f| flavors.get(f.key()).map(|config| (f, config)))
    else {
        let names: Vec<String> = flavors.keys().map(yaml_key).collect();
        return Err(FileError::Unsupported(format!(
            "the MLflow model has no sklearn, xgboost or lightgbm flavor (it has: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )));
    };
    let config = config.as_mapping().ok_or_else(|| {
        corrupt(format!(
            "MLmodel's {} flavor is not a mapping",
            flavor.key()
        ))
    })?;
    let field = |key: &str| -> Result<Option<String>, FileError> {
        config
            .get(key)
            .map(|v| yaml_scalar(v, key))
            .transpose()
            .map(Option::flatten)
    };
    let (file_key, version_key) = flavor.keys();
    let model_name = field(file_key)?.ok_or_else(|| {
        corrupt(format!(
            "MLmodel's {} flavor names no {file_key}",
            flavor.key()
        ))
    })?;
    let model_file = inside(dir, &model_name)?;
    let serialization_format = match flavor {
        MlflowFlavor::Xgboost => field("model_format")?,
        MlflowFlavor::Sklearn | MlflowFlavor::Lightgbm => field("serialization_format")?,
    };
    let signature = mlmodel
        .signature
        .map(declared_signature)
        .transpose()?
        .flatten();
    let requirements = match std::fs::metadata(dir.join("requirements.txt")) {
        Ok(_) => requirements(&read_bounded(&dir.join("requirements.txt"))?)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(&dir.join("requirements.txt"), &e)),
    };
    Ok(MlflowModel {
        flavor,
        model_file,
        flavor_version: field(version_key)?,
        serialization_format,
        model_class: field("model_class")?,
        code: field("code")?,
        signature,
        requirements,
        mlflow_version: mlmodel
            .mlflow_version
            .as_ref()
            .map(|v| yaml_scalar(v, "mlflow_version"))
            .transpose()?
            .flatten(),
    })
}

/// A small text file, at most [`MAX_METADATA_FILE`] bytes.
fn read_bounded(path: &Path) -> Result<String, FileError> {
    let file = File::open(path).map_err(|e| io_error(path, &e))?;
    let mut bytes = Vec::new();
    file.take(MAX_METADATA_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    if bytes.len() as u64 > MAX_METADATA_FILE {
        return Err(corrupt(format!(
            "{name} is larger than {MAX_METADATA_FILE} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| corrupt(format!("{name} is not UTF-8 text")))
}

/// A file named by MLmodel, which must stay inside the model directory (also through symbolic links).
fn inside(dir: &Path, name: &str) -> Result<PathBuf, FileError> {
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !plain {
        return Err(corrupt(format!(
            "MLmodel names the model file '{name}', which is outside the model directory"
        )));
    }
    let path = dir.join(relative);
    let real_dir = dir.canonicalize().map_err(|e| io_error(dir, &e))?;
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => corrupt(format!(
            "MLmodel names the model file '{name}', which is missing"
        )),
        _ => io_error(&path, &e),
    })?;
    if !real.starts_with(&real_dir) {
        return Err(corrupt(format!(
            "MLmodel names the model file '{name}', which is outside the model directory"
        )));
    }
    if !real.is_file() {
        return Err(corrupt(format!(
            "MLmodel names the model file '{name}', which is not a file"
        )));
    }
    Ok(path)
}

fn yaml_key(value: &serde_yaml::Value) -> String {
    yaml_scalar(value, "")
        .ok()
        .flatten()
        .unwrap_or_else(|| "?".to_owned())
}

/// A YAML scalar as text (a version may be written as a number); null is None.
fn yaml_scalar(value: &serde_yaml::Value, key: &str) -> Result<Option<String>, FileError> {
    use serde_yaml::Value;
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(corrupt(format!("MLmodel's {key} is not a single value"))),
    }
}

/// One entry of an MLflow signature: a tensor spec or a column spec (other keys, such as `required`, ignored).
#[derive(Deserialize)]
struct SignatureEntry {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    #[serde(rename = "tensor-spec")]
    tensor_spec: Option<TensorSpecJson>,
}

#[derive(Deserialize)]
struct TensorSpecJson {
    dtype: String,
    shape: Vec<i64>,
}

/// Tensors have at most this many dimensions (numpy's own limit is 64).
const MAX_DIMENSIONS: usize = 64;

fn declared_signature(raw: RawSignature) -> Result<Option<DeclaredSignature>, FileError> {
    if raw.inputs.is_none() && raw.outputs.is_none() {
        return Ok(None);
    }
    let side = |text: Option<String>, what: &str| -> Result<Vec<DeclaredTensor>, FileError> {
        match text {
            Some(text) => declared_tensors(&text, what),
            None => Ok(Vec::new()),
        }
    };
    Ok(Some(DeclaredSignature {
        inputs: side(raw.inputs, "inputs")?,
        outputs: side(raw.outputs, "outputs")?,
    }))
}

/// MLflow's `signature.inputs`/`outputs`: a JSON list of tensor specs, or of column specs, which make one
/// `[-1, columns]` tensor when they share a type.
fn declared_tensors(text: &str, what: &str) -> Result<Vec<DeclaredTensor>, FileError> {
    let entries: Vec<SignatureEntry> = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("MLmodel's signature {what} are not a list: {e}")))?;
    let tensors = entries.iter().filter(|e| e.kind == "tensor").count();
    if tensors > 0 && tensors < entries.len() {
        return Err(FileError::Unsupported(format!(
            "the MLflow signature's {what} mix tensors and columns"
        )));
    }
    if tensors > 0 {
        return entries
            .into_iter()
            .map(|entry| {
                let spec = entry.tensor_spec.ok_or_else(|| {
                    corrupt(format!(
                        "a tensor in the MLflow signature's {what} has no tensor-spec"
                    ))
                })?;
                let datatype = numpy_dtype(&spec.dtype).ok_or_else(|| {
                    FileError::Unsupported(format!(
                        "the MLflow signature's {what} have the dtype {}",
                        spec.dtype
                    ))
                })?;
                if spec.shape.len() > MAX_DIMENSIONS || spec.shape.iter().any(|&d| d < -1) {
                    return Err(corrupt(format!(
                        "a tensor in the MLflow signature's {what} has the shape {:?}",
                        spec.shape
                    )));
                }
                Ok(DeclaredTensor {
                    name: entry.name,
                    datatype,
                    shape: spec.shape,
                    columns: Vec::new(),
                })
            })
            .collect();
    }
    let Some(first) = entries.first() else {
        return Ok(Vec::new());
    };
    let datatype = column_type(&first.kind).ok_or_else(|| {
        FileError::Unsupported(format!(
            "the MLflow signature's {what} have a column of type {}",
            first.kind
        ))
    })?;
    if let Some(other) = entries.iter().find(|e| e.kind != first.kind) {
        return Err(FileError::Unsupported(format!(
            "the MLflow signature's {what} have columns of different types ({} and {})",
            first.kind, other.kind
        )));
    }
    let columns: Vec<String> = entries.iter().filter_map(|e| e.name.clone()).collect();
    let width = i64::try_from(entries.len()).map_err(|_| corrupt("too many columns"))?;
    Ok(vec![DeclaredTensor {
        name: None,
        datatype,
        shape: vec![-1, width],
        columns: if columns.len() == entries.len() {
            columns
        } else {
            Vec::new()
        },
    }])
}

fn numpy_dtype(dtype: &str) -> Option<DataType> {
    Some(match dtype {
        "float64" => DataType::Fp64,
        "float32" => DataType::Fp32,
        "int64" => DataType::Int64,
        "int32" => DataType::Int32,
        "bool" => DataType::Bool,
        "str" | "object" => DataType::Bytes,
        _ => return None,
    })
}

fn column_type(kind: &str) -> Option<DataType> {
    Some(match kind {
        "double" => DataType::Fp64,
        "float" => DataType::Fp32,
        "long" => DataType::Int64,
        "integer" => DataType::Int32,
        "boolean" => DataType::Bool,
        "string" => DataType::Bytes,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// requirements.txt

/// One requirement of a requirements.txt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// PEP 503 normalised.
    pub name: String,
    /// The version specifier as written ("==1.9.1", ">=1,<2"); empty for any version.
    pub spec: String,
    /// 1-based line number.
    pub line: usize,
}

/// The requirements of a requirements.txt: `name`, `name==1.2.3`, `name>=1,<2`, `name[extra]==1`,
/// `name (>=1)`, with comments, blank lines and `\` continuations.
///
/// An environment marker (after `;`) is ignored: the requirement is checked whatever the marker says. Option
/// lines (`-r other.txt`, `--index-url ...`) and per-requirement options (`--hash=...`) are skipped: the runtime
/// installs nothing, so a file that `-r` names is not read either. URLs, paths and direct references
/// (`name @ https://...`) are refused as Unsupported: they name no version the runtime could compare.
pub fn requirements(text: &str) -> Result<Vec<Requirement>, FileError> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        if logical.is_empty() {
            start = index + 1;
        }
        match raw.strip_suffix('\\') {
            Some(continued) => {
                logical.push_str(continued);
                continue;
            }
            None => logical.push_str(raw),
        }
        let line = std::mem::take(&mut logical);
        if let Some(requirement) = requirement_line(&line, start)? {
            out.push(requirement);
        }
    }
    if !logical.is_empty() {
        if let Some(requirement) = requirement_line(&logical, start)? {
            out.push(requirement);
        }
    }
    Ok(out)
}

fn requirement_line(line: &str, number: usize) -> Result<Option<Requirement>, FileError> {
    let bad = |what: &str| corrupt(format!("requirements.txt line {number}: {what}"));
    // A comment starts at a `#` at the start of the line or after whitespace (as pip reads it).
    let mut line = line;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && previous.is_whitespace() {
            line = &line[..i];
            break;
        }
        previous = c;
    }
    let mut line = line.trim();
    if line.is_empty() || line.starts_with('-') {
        return Ok(None);
    }
    if let Some(i) = line.find(" --").or_else(|| line.find("\t--")) {
        line = line[..i].trim_end();
    }
    if line.contains("://") || line.starts_with(['.', '/', '~']) {
        return Err(FileError::Unsupported(format!(
            "requirements.txt line {number}: '{line}' is a URL or a path, not a package and version the runtime can \
             check"
        )));
    }
    let line = line
        .split_once(';')
        .map_or(line, |(requirement, _marker)| requirement)
        .trim();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let valid_name = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        return Err(bad(&format!("'{line}' does not start with a package name")));
    }
    let mut rest = line[name_end..].trim_start();
    if let Some(extras) = rest.strip_prefix('[') {
        let (inside, after) = extras
            .split_once(']')
            .ok_or_else(|| bad("an extras list has no closing ']'"))?;
        let valid_extras = inside.split(',').map(str::trim).all(|extra| {
            !extra.is_empty()
                && extra
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
        if !valid_extras {
            return Err(bad(&format!("'[{inside}]' is not a list of extras")));
        }
        rest = after.trim_start();
    }
    if rest.starts_with('@') {
        return Err(FileError::Unsupported(format!(
            "requirements.txt line {number}: '{line}' is a direct reference, not a version the runtime can check"
        )));
    }
    if let Some(inner) = rest.strip_prefix('(') {
        rest = inner
            .strip_suffix(')')
            .ok_or_else(|| bad("a '(' has no closing ')'"))?
            .trim();
    }
    let spec = rest.trim();
    Specifiers::parse(spec).map_err(|e| bad(&e.to_string()))?;
    Ok(Some(Requirement {
        name: normalise_name(name),
        spec: spec.to_owned(),
        line: number,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn model(name: &str) -> PathBuf {
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/python/models"
        ))
        .join(name)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn ubj(bytes: &[u8]) -> Result<ubjson::Value, ubjson::Error> {
        ubjson::Reader::new(
            BufReader::new(Cursor::new(bytes.to_vec())),
            bytes.len() as u64,
        )
        .document()
    }

    /// A UBJSON object key (or a string without its `S` marker): an `L` length, then the bytes.
    fn key(text: &str) -> Vec<u8> {
        let mut out = vec![b'L'];
        out.extend((text.len() as i64).to_be_bytes());
        out.extend(text.as_bytes());
        out
    }

    /// A UBJSON string value.
    fn string(text: &str) -> Vec<u8> {
        let mut out = vec![b'S'];
        out.extend(key(text));
        out
    }

    #[test]
    fn reads_the_real_xgboost_json_model() {
        let m = xgboost(&model("xgboost_binary.json")).unwrap();
        assert_eq!(m.version, "3.2.0");
        assert_eq!(m.num_feature, 5);
        assert_eq!(m.num_class, 0);
        assert_eq!(m.objective.as_deref(), Some("binary:logistic"));
        assert_eq!(m.feature_names, ["f0", "f1", "f2", "f3", "f4"]);
    }

    #[test]
    fn reads_the_real_xgboost_ubjson_model() {
        let m = xgboost(&model("xgboost_multiclass.ubj")).unwrap();
        assert_eq!(m.version, "3.2.0");
        assert_eq!(m.num_feature, 6);
        assert_eq!(m.num_class, 3);
        assert_eq!(m.objective.as_deref(), Some("multi:softprob"));
        assert!(m.feature_names.is_empty());
    }

    #[test]
    fn sniffs_the_xgboost_format_without_an_extension() {
        let dir = tempfile::tempdir().unwrap();
        let json = write(
            dir.path(),
            "model",
            &std::fs::read(model("xgboost_binary.json")).unwrap(),
        );
        assert_eq!(xgboost(&json).unwrap().num_feature, 5);
        let ubj = write(
            dir.path(),
            "model.bin",
            &std::fs::read(model("xgboost_multiclass.ubj")).unwrap(),
        );
        assert_eq!(xgboost(&ubj).unwrap().num_class, 3);
    }

    #[test]
    fn refuses_broken_xgboost_files() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::read(model("xgboost_multiclass.ubj")).unwrap();
        for cut in [1, 2, 100, 600, real.len() / 2, real.len() - 1] {
            let path = write(dir.path(), "cut.ubj", &real[..cut]);
            assert!(
                matches!(xgboost(&path), Err(FileError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        let legacy = write(
            dir.path(),
            "model.bin",
            b"binf\x00\x00\x00\x3f\x05\x00\x00\x00",
        );
        let Err(FileError::Unsupported(message)) = xgboost(&legacy) else {
            panic!("legacy binary accepted")
        };
        assert!(
            message.contains("legacy binary format") && message.contains(".ubj"),
            "{message}"
        );
        assert!(matches!(
            xgboost(&write(dir.path(), "x.ubj", b"\x00\x01")),
            Err(FileError::Unsupported(_))
        ));
        assert!(matches!(
            xgboost(&write(dir.path(), "x.json", b"garbage")),
            Err(FileError::Corrupt(_))
        ));
        assert!(matches!(
            xgboost(&write(dir.path(), "x.json", b"{\"version\": [3, 2]}")),
            Err(FileError::Corrupt(_))
        ));
        assert!(matches!(
            xgboost(&write(dir.path(), "x.json", b"")),
            Err(FileError::Corrupt(_))
        ));
        let deep = format!(
            "{{\"version\":{}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            xgboost(&write(dir.path(), "x.json", deep.as_bytes())),
            Err(FileError::Corrupt(_))
        ));
        assert!(matches!(
            xgboost(&dir.path().join("absent.json")),
            Err(FileError::Io(_))
        ));
        let names_mismatch = br#"{"version":[3,2,0],"learner":{"feature_names":["a"],
            "learner_model_param":{"num_feature":"2"},"objective":{"name":"reg:squarederror"}}}"#;
        assert!(matches!(
            xgboost(&write(dir.path(), "x.json", names_mismatch)),
            Err(FileError::Corrupt(_))
        ));
    }

    #[test]
    fn ubjson_reader_keeps_only_the_metadata() {
        // {"version": [$i#3 3 2 0], "learner": {"learner_model_param": {"num_feature": "5"}, "trees": [...]}}
        let mut doc = vec![b'{'];
        doc.extend(key("version"));
        doc.extend(b"[$i#i\x03\x03\x02\x00");
        doc.extend(key("learner"));
        doc.push(b'{');
        doc.extend(key("learner_model_param"));
        doc.push(b'{');
        doc.extend(key("num_feature"));
        doc.extend(string("5"));
        doc.push(b'}');
        doc.extend(key("trees"));
        doc.extend(b"[$d#l\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00");
        doc.extend(b"N}}");
        let root = ubj(&doc).unwrap();
        let raw = RawXgboost::from_ubjson(&root).unwrap().finish().unwrap();
        assert_eq!(raw.version, "3.2.0");
        assert_eq!(raw.num_feature, 5);
        let learner = root.field("learner").unwrap().unwrap();
        assert_eq!(
            learner.field("trees").unwrap(),
            None,
            "skipped values are not kept"
        );
    }

    #[test]
    fn ubjson_reader_refuses_hostile_input() {
        // A count far beyond the file: refused before anything is allocated or skipped.
        let mut huge = b"{".to_vec();
        huge.extend(key("trees"));
        huge.extend(b"[$D#L\x7f\xff\xff\xff\xff\xff\xff\xff}");
        assert!(matches!(ubj(&huge), Err(ubjson::Error::Truncated(_))));
        let mut overflow = b"{".to_vec();
        overflow.extend(key("trees"));
        overflow.extend(b"[$L#L\x7f\xff\xff\xff\xff\xff\xff\xff}");
        assert!(ubj(&overflow).is_err());
        // A kept array with an absurd count of zero-size items is skipped, not materialised.
        let mut nulls = b"{".to_vec();
        nulls.extend(key("version"));
        nulls.extend(b"[$Z#L\x7f\xff\xff\xff\xff\xff\xff\xff}");
        assert!(ubj(&nulls).is_ok());
        // A string length past the end, and a negative one.
        let mut long = b"{".to_vec();
        long.extend(key("version"));
        long.extend(b"SL\x00\x00\x00\x10\x00\x00\x00\x00}");
        assert!(matches!(ubj(&long), Err(ubjson::Error::Truncated(_))));
        let mut negative = b"{".to_vec();
        negative.extend(key("version"));
        negative.extend(b"Si\xff}");
        assert!(matches!(ubj(&negative), Err(ubjson::Error::Invalid { .. })));
        // Nesting deeper than the limit.
        let mut deep = b"{".to_vec();
        deep.extend(key("learner"));
        deep.extend("[".repeat(1000).as_bytes());
        deep.extend("]".repeat(1000).as_bytes());
        deep.push(b'}');
        assert!(matches!(ubj(&deep), Err(ubjson::Error::TooDeep)));
        let mut nested = b"{".to_vec();
        nested.extend(key("learner"));
        nested.extend("[".repeat(60).as_bytes());
        nested.extend("]".repeat(60).as_bytes());
        nested.push(b'}');
        assert!(ubj(&nested).is_ok());
        // Unknown markers, trailing bytes, a typed container without a count, not an object.
        assert!(ubj(b"{Li\x01aX}").is_err());
        assert!(ubj(b"{}{}").is_err());
        assert!(ubj(b"{$i}").is_err());
        assert!(ubj(b"[]").is_err());
        assert!(ubj(b"").is_err());
        assert!(ubj(b"{").is_err());
        // Every prefix of a valid document fails cleanly.
        let mut doc = b"{".to_vec();
        doc.extend(key("version"));
        doc.extend(b"[#U\x03U\x03i\x02I\x00\x00");
        doc.extend(key("learner"));
        doc.extend(b"{#i\x01");
        doc.extend(key("feature_names"));
        doc.extend(b"[$S#i\x02");
        doc.extend(key("a"));
        doc.extend(key("b"));
        doc.push(b'}');
        let root = ubj(&doc).unwrap();
        let raw = RawXgboost::from_ubjson(&root).unwrap();
        assert_eq!(raw.version, [3, 2, 0]);
        assert_eq!(raw.feature_names, ["a", "b"]);
        for cut in 0..doc.len() {
            assert!(ubj(&doc[..cut]).is_err(), "prefix of {cut} bytes");
        }
        // Duplicate kept keys.
        let mut twice = b"{".to_vec();
        for _ in 0..2 {
            twice.extend(key("version"));
            twice.extend(b"[$i#i\x03\x03\x02\x00");
        }
        twice.push(b'}');
        assert!(RawXgboost::from_ubjson(&ubj(&twice).unwrap()).is_err());
    }

    #[test]
    fn ubjson_reader_survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: mutations of the real model never panic.
        let real = std::fs::read(model("xgboost_multiclass.ubj")).unwrap();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut doc = real.clone();
            for _ in 0..4 {
                let i = (next() % doc.len() as u64) as usize;
                doc[i] = next() as u8;
            }
            let _ = ubj(&doc);
        }
    }

    #[test]
    fn reads_the_real_lightgbm_model() {
        let m = lightgbm(&model("lightgbm_binary.txt")).unwrap();
        assert_eq!(m.format_version, "v4");
        assert_eq!(m.num_features, 5);
        assert_eq!(m.num_class, 1);
        assert_eq!(m.objective.as_deref(), Some("binary sigmoid:1"));
        assert_eq!(
            m.feature_names,
            ["Column_0", "Column_1", "Column_2", "Column_3", "Column_4"]
        );
    }

    #[test]
    fn refuses_broken_lightgbm_files() {
        let dir = tempfile::tempdir().unwrap();
        let refused = |bytes: &[u8]| lightgbm(&write(dir.path(), "m.txt", bytes)).unwrap_err();
        let Err(FileError::Corrupt(message)) = lightgbm(&model("xgboost_multiclass.ubj")) else {
            panic!("a UBJSON file read as LightGBM")
        };
        assert!(message.contains("first line"), "{message}");
        assert!(matches!(refused(b""), FileError::Corrupt(_)));
        assert!(matches!(
            refused(b"\x00\xff\x13binary"),
            FileError::Corrupt(_)
        ));
        assert!(matches!(
            refused(b"tree\n\xff\xfe\n"),
            FileError::Corrupt(_)
        ));
        assert!(matches!(refused(b"tree\n\n"), FileError::Corrupt(_)));
        assert!(matches!(refused(b"tree"), FileError::Corrupt(_)));
        let header = "tree\nversion=v4\nnum_class=1\nmax_feature_idx=1\nfeature_names=a b\nfeature_infos=x x\n";
        assert!(lightgbm(&write(dir.path(), "m.txt", header.as_bytes())).is_ok());
        assert!(matches!(
            refused(b"tree\nnum_class=1\nmax_feature_idx=0\nfeature_names=a\n"),
            FileError::Unsupported(_)
        ));
        assert!(matches!(
            refused(b"tree\nversion=v4\nnum_class=1\nmax_feature_idx=2\nfeature_names=a\n"),
            FileError::Corrupt(_)
        ));
        assert!(matches!(
            refused(b"tree\nversion=v4\nnum_class=1\nmax_feature_idx=-5\nfeature_names=a\n"),
            FileError::Corrupt(_)
        ));
        assert!(matches!(
            refused(b"tree\nversion=v4\nmax_feature_idx=0\nfeature_names=a\n"),
            FileError::Corrupt(_)
        ));
        // Only the header is read: what follows the first tree does not matter.
        let mut tail = header.as_bytes().to_vec();
        tail.extend(b"\nTree=0\n\xff\xff garbage");
        assert!(lightgbm(&write(dir.path(), "m.txt", &tail)).is_ok());
    }

    fn unpack(archive: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let file = File::open(model(archive)).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(file))
            .unpack(dir.path())
            .unwrap();
        dir
    }

    #[test]
    fn reads_the_real_mlflow_sklearn_model() {
        let dir = unpack("mlflow_sklearn.tar.gz");
        let m = mlflow(dir.path()).unwrap();
        assert_eq!(m.flavor, MlflowFlavor::Sklearn);
        assert_eq!(m.model_file, dir.path().join("model.pkl"));
        assert_eq!(m.flavor_version.as_deref(), Some("1.9.1"));
        assert_eq!(m.serialization_format.as_deref(), Some("pickle"));
        assert_eq!(m.mlflow_version.as_deref(), Some("3.17.2"));
        assert_eq!(m.code, None);
        let signature = m.signature.unwrap();
        assert_eq!(
            signature.inputs,
            [DeclaredTensor {
                name: None,
                datatype: DataType::Fp64,
                shape: vec![-1, 4],
                columns: vec![]
            }]
        );
        assert_eq!(
            signature.outputs,
            [DeclaredTensor {
                name: None,
                datatype: DataType::Int64,
                shape: vec![-1],
                columns: vec![]
            }]
        );
        let names: Vec<&str> = m.requirements.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["mlflow", "pandas", "scikit-learn"]);
        assert_eq!(m.requirements[2].spec, "==1.9.1");
        assert_eq!(m.requirements[2].line, 3);
    }

    /// The MLmodel MLflow 3 writes for `mlflow.lightgbm.save_model(booster, signature=<DataFrame of doubles>)`.
    const LIGHTGBM_MLMODEL: &str = r#"flavors:
  lightgbm:
    code: null
    data: model.lgb
    lgb_version: 4.7.0
    model_class: lightgbm.basic.Booster
    serialization_format: skops
    skops_trusted_types:
    - lightgbm.basic.Booster
  python_function:
    data: model.lgb
    loader_module: mlflow.lightgbm
    python_version: 3.11.7
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "a", "required": true}, {"type": "double",
    "name": "b", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
  params: null
"#;

    /// The MLmodel MLflow 3 writes for `mlflow.xgboost.save_model(booster)` (UBJSON by default).
    const XGBOOST_MLMODEL: &str = r#"flavors:
  python_function:
    data: model.ubj
    loader_module: mlflow.xgboost
  xgboost:
    code: null
    data: model.ubj
    model_class: xgboost.core.Booster
    model_format: ubj
    xgb_version: 3.2.0
mlflow_version: 3.17.2
"#;

    fn mlflow_dir(mlmodel: &str, files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "MLmodel", mlmodel.as_bytes());
        for file in files {
            write(dir.path(), file, b"");
        }
        dir
    }

    #[test]
    fn reads_mlflow_xgboost_and_lightgbm_flavors() {
        let dir = mlflow_dir(XGBOOST_MLMODEL, &["model.ubj"]);
        write(
            dir.path(),
            "requirements.txt",
            b"mlflow==3.17.2\nxgboost-cpu==3.2.0\nxgboost==3.2.0",
        );
        let m = mlflow(dir.path()).unwrap();
        assert_eq!(m.flavor, MlflowFlavor::Xgboost);
        assert_eq!(m.model_file, dir.path().join("model.ubj"));
        assert_eq!(m.flavor_version.as_deref(), Some("3.2.0"));
        assert_eq!(m.serialization_format.as_deref(), Some("ubj"));
        assert_eq!(m.model_class.as_deref(), Some("xgboost.core.Booster"));
        assert_eq!(m.signature, None);
        assert_eq!(m.requirements.len(), 3);

        let dir = mlflow_dir(LIGHTGBM_MLMODEL, &["model.lgb"]);
        let m = mlflow(dir.path()).unwrap();
        assert_eq!(m.flavor, MlflowFlavor::Lightgbm);
        assert_eq!(m.flavor_version.as_deref(), Some("4.7.0"));
        assert_eq!(m.model_class.as_deref(), Some("lightgbm.basic.Booster"));
        assert!(m.requirements.is_empty());
        let signature = m.signature.unwrap();
        assert_eq!(
            signature.inputs,
            [DeclaredTensor {
                name: None,
                datatype: DataType::Fp64,
                shape: vec![-1, 2],
                columns: vec!["a".into(), "b".into()]
            }]
        );
        assert_eq!(signature.outputs[0].shape, [-1]);
    }

    #[test]
    fn refuses_unusable_mlflow_models() {
        let dir = unpack("mlflow_sklearn.tar.gz");
        let mlmodel = std::fs::read_to_string(dir.path().join("MLmodel")).unwrap();
        let escaping = mlmodel.replace(
            "pickled_model: model.pkl",
            "pickled_model: ../../etc/passwd",
        );
        assert_ne!(escaping, mlmodel);
        write(dir.path(), "MLmodel", escaping.as_bytes());
        let Err(FileError::Corrupt(message)) = mlflow(dir.path()) else {
            panic!("escaping path accepted")
        };
        assert!(message.contains("outside"), "{message}");
        let escaping = XGBOOST_MLMODEL.replace(
            "data: model.ubj\n    model_class",
            "data: ../../etc/passwd\n    model_class",
        );
        let dir = mlflow_dir(&escaping, &[]);
        let Err(FileError::Corrupt(message)) = mlflow(dir.path()) else {
            panic!("escaping path accepted")
        };
        assert!(message.contains("outside"), "{message}");
        let absolute = XGBOOST_MLMODEL.replace(
            "data: model.ubj\n    model_class",
            "data: /etc/passwd\n    model_class",
        );
        assert!(matches!(
            mlflow(mlflow_dir(&absolute, &[]).path()),
            Err(FileError::Corrupt(_))
        ));
        // Through a symbolic link.
        let dir = mlflow_dir(XGBOOST_MLMODEL, &[]);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("model.ubj")).unwrap();
        assert!(matches!(mlflow(dir.path()), Err(FileError::Corrupt(_))));
        // Missing model file, no flavor the runtime serves, no MLmodel, garbage MLmodel.
        assert!(matches!(
            mlflow(mlflow_dir(XGBOOST_MLMODEL, &[]).path()),
            Err(FileError::Corrupt(_))
        ));
        let pytorch = "flavors:\n  pytorch:\n    model_data: data\n  python_function:\n    loader_module: mlflow.pytorch\n";
        assert_eq!(
            mlflow(mlflow_dir(pytorch, &[]).path()),
            Err(FileError::Unsupported(
                "the MLflow model has no sklearn, xgboost or lightgbm flavor (it has: pytorch, python_function)".into()
            ))
        );
        assert!(matches!(
            mlflow(tempfile::tempdir().unwrap().path()),
            Err(FileError::Io(_))
        ));
        assert!(matches!(
            mlflow(mlflow_dir(": [ {", &[]).path()),
            Err(FileError::Corrupt(_))
        ));
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nflavors: {sklearn: [*g, *g, *g, *g, *g, *g, *g, *g, *g]}\n";
        // serde_yaml stops expanding aliases past its repetition limit.
        let Err(FileError::Corrupt(message)) = mlflow(mlflow_dir(bomb, &[]).path()) else {
            panic!("a YAML bomb was read")
        };
        assert!(message.contains("repetition limit"), "{message}");
        // Signatures the runtime cannot map.
        let mixed = LIGHTGBM_MLMODEL.replace(
            r#"{"type": "double",
    "name": "b", "required": true}"#,
            r#"{"type": "long", "name": "b"}"#,
        );
        assert!(matches!(
            mlflow(mlflow_dir(&mixed, &["model.lgb"]).path()),
            Err(FileError::Unsupported(_))
        ));
        let float16 = LIGHTGBM_MLMODEL.replace("float64", "float16");
        assert!(matches!(
            mlflow(mlflow_dir(&float16, &["model.lgb"]).path()),
            Err(FileError::Unsupported(_))
        ));
    }

    #[test]
    fn reads_requirements_files() {
        let text = "# made by hand\n\
                    Scikit_Learn==1.9.1\n\
                    numpy >= 1.26, < 3  # inline comment\n\
                    \n\
                    -r other.txt\n\
                    --index-url https://example.org/simple\n\
                    xgboost[scikit-learn]==3.2.0 ; python_version >= \"3.9\"\n\
                    joblib \\\n\
                    ~=1.6\n\
                    scipy (>=1.10)\n\
                    lightgbm==4.7.0 --hash=sha256:abcd\n\
                    pandas";
        let reqs = requirements(text).unwrap();
        let got: Vec<(&str, &str, usize)> = reqs
            .iter()
            .map(|r| (r.name.as_str(), r.spec.as_str(), r.line))
            .collect();
        assert_eq!(
            got,
            [
                ("scikit-learn", "==1.9.1", 2),
                ("numpy", ">= 1.26, < 3", 3),
                ("xgboost", "==3.2.0", 7),
                ("joblib", "~=1.6", 8),
                ("scipy", ">=1.10", 10),
                ("lightgbm", "==4.7.0", 11),
                ("pandas", "", 12),
            ]
        );
        for bad in [
            "==1.0",
            "numpy=1.0",
            "numpy[extra==1",
            "numpy ==1.*.1",
            "numpy (>=1",
            "numpy[]",
            "num$py",
        ] {
            assert!(
                matches!(requirements(bad), Err(FileError::Corrupt(_))),
                "{bad}"
            );
        }
        for unsupported in [
            "torch @ https://example.org/torch.whl",
            "git+https://github.com/x/y",
            "./local/pkg",
        ] {
            assert!(
                matches!(requirements(unsupported), Err(FileError::Unsupported(_))),
                "{unsupported}"
            );
        }
    }
}
