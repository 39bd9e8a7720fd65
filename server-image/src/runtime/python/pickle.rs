//! A static scan of Python pickles (protocols 0-5) and joblib files, made before any Python runs.
//!
//! The scanner is a symbolic pickle machine: it walks every opcode with a stack, marks, memo and frames the way
//! CPython's unpickler does, but only records what loading would do, never does it. It reports every global the
//! pickle imports (after the renaming of Python 2 names that protocols 0-2 get), the strongest use loading makes
//! of it (referred to, instantiated, called), the `_sklearn_version` each estimator stores, and the protocol.
//!
//! joblib files are read the way `joblib.load` reads them: zlib and gzip compression is undone, the raw bytes
//! joblib writes after each `NumpyArrayWrapper` are skipped exactly (sized from the wrapper's shape and numpy
//! dtype, padding included), and object arrays, which joblib writes as a nested pickle, are scanned too. Anything
//! the scanner cannot follow exactly is refused rather than guessed: out-of-band buffers, persistent IDs, the
//! extension registry, other compressions, joblib's old side-file format, a REDUCE of something that is not a named
//! global, a BUILD or an APPEND that would change a global, dtypes numpy would share. Every length is checked
//! against the bytes actually present, and stack, marks, nesting, values and text are bounded.
//!
//! A pickle holding a `NumpyArrayWrapper` (`PickleScan::joblib`) must be loaded with `joblib.load`, without
//! `mmap_mode`, never with `pickle.load`: the two read such a file differently.
//!
//! # Built-in allow-list
//!
//! [`AllowList::builtin`] lets a pickle import only these globals:
//!
//! - Standard-library data types, any use: `builtins.{set, frozenset, slice, complex, bytearray, bytes, int,
//!   float, str, tuple, list, dict, bool, range, object}`, `collections.{OrderedDict, defaultdict, deque,
//!   Counter}`, `copyreg.{_reconstructor, __newobj__, __newobj_ex__}`, `_codecs.encode`, `datetime.{datetime,
//!   date, time, timedelta, timezone}`, `decimal.Decimal`, `fractions.Fraction`; and joblib's
//!   `joblib.numpy_pickle.NumpyArrayWrapper`, instantiated only.
//! - numpy, an exact list: loading may call the array and dtype machinery (`numpy.dtype`, `_reconstruct` and
//!   `scalar` in `numpy.core.multiarray`/`numpy._core.multiarray`, `_frombuffer` in `numpy.core.numeric`/
//!   `numpy._core.numeric`, `numpy.ma.core._mareconstruct`), the random generators' pickling helpers
//!   (`numpy.random._pickle.*_ctor`, `SeedSequence`) and bit generators (`MT19937`, `PCG64`, `PCG64DXSM`,
//!   `Philox`, `SFC64`, `RandomState`, `Generator`); `numpy.ndarray`, `numpy.memmap`, `numpy.matrix`, masked
//!   arrays and numpy's scalar types (`numpy.float64`, `numpy.int32`, `numpy.bool_`, ...) may be referred to or
//!   instantiated, never called.
//! - scikit-learn, XGBoost, LightGBM and SciPy (`sklearn.*`, `xgboost.*`, `lightgbm.*`, `scipy.*`): any name may
//!   be referred to or instantiated; loading may call only class-shaped names (the first character after leading
//!   underscores is an ASCII capital, e.g. `sklearn.tree._tree.Tree`, `sklearn._loss._loss.CyHalfBinomialLoss`),
//!   scikit-learn's `newObj` helpers and Cython's `__pyx_unpickle_<Class>`. Calling a function
//!   (`sklearn.datasets.dump_svmlight_file`) is refused: "loading would call a function". SciPy classes may be
//!   called only under `scipy.sparse` (others, like `scipy.optimize`'s, call the functions they are given).
//!   Refused in these packages: test and tooling modules (a module path component `tests`, `testing`,
//!   `_testing`, `conftest`, `_testutils`, `_precompute` or `benchmarks`), I/O and cluster modules (`scipy.io`,
//!   `scipy.datasets`, `xgboost.tracker`, `xgboost.collective`, `xgboost.dask`, `xgboost.spark`,
//!   `xgboost.federated`, `lightgbm.dask`), and the names of side-effecting standard-library functions and
//!   classes that framework modules import into their namespace (`remove`, `makedirs`, `Popen`, `Pool`,
//!   `Thread`, `CDLL`, `urlopen`, `NamedTemporaryFile`, ...).
//!
//! Everything else is refused, naming the global: `os.system`, `posix.system`, `subprocess.*`,
//! `builtins.eval`/`exec`/`getattr`/`__import__`/`open`, `importlib`, `pickle`, `marshal`, `types`,
//! `functools.partial`, `operator.attrgetter`, `sys`, `io`, `shutil`, `socket`, `cloudpickle`, any other
//! module. So is a name that is not a plain identifier (an attribute path such as `Tree.__init__.__globals__`
//! reaches anything) and a dunder name other than the `copyreg` entries above, even in entries a model runtime
//! adds with [`AllowList::with_extra`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

use flate2::read::{GzDecoder, ZlibDecoder};

/// Strings longer than this are skipped and remembered by their length only.
const KEEP_TEXT: usize = 1024;
/// Text the scan keeps in all (short strings: names, keys, versions).
const MAX_TEXT: u64 = 128 << 20;
/// Values the scan may create (each push and memo entry counts once): about 400 MiB at worst.
const MAX_VALUES: u64 = 1 << 24;
/// Open MARKs at once.
const MAX_MARKS: usize = 10_000;
/// Tuples nested in tuples.
const MAX_DEPTH: u32 = 1_000;

/// A module-level name a pickle imports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Global {
    pub module: String,
    pub name: String,
}

impl Global {
    fn new(module: &str, name: &str) -> Global {
        Global {
            module: module.to_owned(),
            name: name.to_owned(),
        }
    }

    fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }
}

impl fmt::Display for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

/// What loading does with a global; the strongest use wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// Only pushed as a value (an argument, a dict value, ...).
    Referenced,
    /// A class whose instance loading creates without calling the class (`cls.__new__(cls)`).
    Instantiated,
    /// Called with arguments from the pickle.
    Called,
}

impl Use {
    fn verb(self) -> &'static str {
        match self {
            Use::Referenced => "refers to",
            Use::Instantiated => "instantiates",
            Use::Called => "calls",
        }
    }
}

/// What a pickle imports and records, as far as the scan can tell without running it.
#[derive(Debug, Clone, Default)]
pub struct PickleScan {
    /// Highest PROTO seen (0 when none).
    pub protocol: u8,
    /// At least one `NumpyArrayWrapper` (a `joblib.dump` file).
    pub joblib: bool,
    /// "zlib" or "gzip".
    pub compression: Option<&'static str>,
    /// Deduplicated, sorted by global.
    pub globals: Vec<(Global, Use)>,
    /// Distinct `_sklearn_version` values of the estimators, in order.
    pub sklearn_versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("not a pickle: {0}")]
    NotAPickle(String),
    #[error("malformed pickle at byte {offset}: {message}")]
    Malformed { offset: u64, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot read the file: {0}")]
    Io(String),
}

type Result<T> = std::result::Result<T, PickleError>;

fn unsupported(message: impl Into<String>) -> PickleError {
    PickleError::Unsupported(message.into())
}

/// Scans a pickle or joblib file, streaming it.
pub fn scan_file(path: &Path) -> Result<PickleScan> {
    let file = std::fs::File::open(path)
        .map_err(|e| PickleError::Io(format!("{}: {e}", path.display())))?;
    scan(&mut BufReader::new(file))
}

/// Scans a pickle or joblib stream, undoing joblib's zlib or gzip compression.
pub fn scan(reader: &mut dyn BufRead) -> Result<PickleScan> {
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PickleError::Io(e.to_string())),
        }
    }
    let head = &head[..filled];
    // joblib's magic numbers (joblib/compressor.py); none of them starts a pickle joblib would read as one.
    for (magic, name) in [
        (&b"BZ"[..], "bz2"),
        (b"\xfd\x37\x7a\x58\x5a", "xz"),
        (b"\x5d\x00", "lzma"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"ZF", "joblib's pre-0.10 zfile"),
    ] {
        if head.starts_with(magic) {
            return Err(unsupported(format!(
                "{name}-compressed joblib files are not supported (use zlib or gzip)"
            )));
        }
    }
    let whole = io::Cursor::new(head.to_vec()).chain(reader);
    if head.first() == Some(&0x78) {
        scan_stream(&mut BufReader::new(ZlibDecoder::new(whole)), Some("zlib"))
    } else if head.starts_with(b"\x1f\x8b") {
        scan_stream(&mut BufReader::new(GzDecoder::new(whole)), Some("gzip"))
    } else {
        scan_stream(&mut BufReader::new(whole), None)
    }
}

fn scan_stream(reader: &mut dyn BufRead, compression: Option<&'static str>) -> Result<PickleScan> {
    let mut scanner = Scanner {
        input: Input {
            inner: reader,
            pos: 0,
        },
        globals: BTreeMap::new(),
        versions: Vec::new(),
        protocol: 0,
        joblib: false,
        values: 0,
        text: 0,
    };
    Machine::new(true).run(&mut scanner, true)?;
    Ok(PickleScan {
        protocol: scanner.protocol,
        joblib: scanner.joblib,
        compression,
        globals: scanner.globals.into_iter().collect(),
        sklearn_versions: scanner.versions,
    })
}

/// The byte stream, with the offset for error messages (of the decompressed stream when compressed).
struct Input<'a> {
    inner: &'a mut dyn BufRead,
    pos: u64,
}

impl Input<'_> {
    fn malformed(&self, message: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn truncated(&self) -> PickleError {
        self.malformed("the data ends early")
    }

    fn fill(&mut self) -> Result<&[u8]> {
        loop {
            match self.inner.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        let pos = self.pos;
        self.inner.fill_buf().map_err(|e| io_error(e, pos))
    }

    fn io_error(&self, e: io::Error) -> PickleError {
        io_error(e, self.pos)
    }

    fn advance(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }

    fn byte(&mut self) -> Result<Option<u8>> {
        let next = self.fill()?.first().copied();
        if next.is_some() {
            self.advance(1);
        }
        Ok(next)
    }

    fn fill_exact(&mut self, out: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < out.len() {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Err(self.truncated());
            }
            let n = buf.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&buf[..n]);
            self.advance(n);
            filled += n;
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.fill_exact(&mut out)?;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// An 8-byte length; CPython refuses those above `sys.maxsize`.
    fn u64_len(&mut self) -> Result<u64> {
        let n = u64::from_le_bytes(self.array()?);
        if n > i64::MAX as u64 {
            return Err(self.malformed(format!("length {n} is beyond sys.maxsize")));
        }
        Ok(n)
    }

    /// Reads `len` bytes when at most KEEP_TEXT, else skips them and returns None.
    fn payload(&mut self, len: u64) -> Result<Option<Vec<u8>>> {
        if len > KEEP_TEXT as u64 {
            self.skip(len)?;
            return Ok(None);
        }
        let mut out = vec![0u8; len as usize];
        self.fill_exact(&mut out)?;
        Ok(Some(out))
    }

    fn skip(&mut self, mut len: u64) -> Result<()> {
        while len > 0 {
            let available = self.fill()?.len();
            if available == 0 {
                return Err(self.truncated());
            }
            let n = (available as u64).min(len) as usize;
            self.advance(n);
            len -= n as u64;
        }
        Ok(())
    }

    /// A newline-terminated line without its newline; None when longer than KEEP_TEXT (then skipped).
    fn line(&mut self) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut kept = true;
        loop {
            let buf = self.fill()?;
            if buf.is_empty() {
                return Err(self.malformed("a text argument has no end of line"));
            }
            let (n, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if kept && out.len() + n <= KEEP_TEXT {
                out.extend_from_slice(&buf[..n]);
            } else {
                kept = false;
                out.clear();
            }
            self.advance(n + usize::from(done));
            if done {
                return Ok(kept.then_some(out));
            }
        }
    }
}

fn io_error(e: io::Error, pos: u64) -> PickleError {
    match e.kind() {
        // What flate2 reports for corrupt compressed data.
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => PickleError::Malformed {
            offset: pos,
            message: format!("corrupt compressed data: {e}"),
        },
        _ => PickleError::Io(e.to_string()),
    }
}

/// A value on the symbolic stack. Containers and objects live in the machine's arena (`Obj`), so they can be
/// mutated through the memo as in Python and never own each other (no deep drops, no cycles).
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond i64, or written in a form the scanner does not evaluate.
    BigInt,
    Float,
    Str(Rc<str>),
    /// A str the scanner did not keep (long, escaped or undecodable).
    Text,
    /// bytes or bytearray: skipped, never kept.
    Bytes,
    Tuple(Rc<Tuple>),
    Global(Rc<Global>),
    Obj(usize),
}

#[derive(Debug)]
struct Tuple {
    depth: u32,
    items: Vec<Value>,
}

#[derive(Debug)]
enum Obj {
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// Sets: their items are never needed.
    Set,
    Instance {
        made: Made,
        state: Option<Value>,
        builds: u32,
    },
}

#[derive(Debug)]
enum Made {
    /// NEWOBJ / NEWOBJ_EX: `class.__new__(class, *args)`; `plain` when without arguments.
    New { class: Rc<Global>, plain: bool },
    /// REDUCE, OBJ, INST.
    Call { callable: Rc<Global>, args: Value },
    /// The array joblib read in place of a `NumpyArrayWrapper`.
    Array,
}

/// What the whole scan (outer pickle and nested object-array pickles) shares.
struct Scanner<'a> {
    input: Input<'a>,
    globals: BTreeMap<Global, Use>,
    versions: Vec<String>,
    protocol: u8,
    joblib: bool,
    values: u64,
    text: u64,
}

impl Scanner<'_> {
    fn bad(&self, message: impl Into<String>) -> PickleError {
        self.input.malformed(message)
    }

    fn note(&mut self, global: &Global, used: Use) {
        let entry = self.globals.entry(global.clone()).or_insert(used);
        *entry = (*entry).max(used);
    }

    fn count(&mut self, n: u64) -> Result<()> {
        self.values += n;
        if self.values > MAX_VALUES {
            return Err(unsupported(format!(
                "the pickle holds more than {MAX_VALUES} values, too many to scan"
            )));
        }
        Ok(())
    }

    fn str_value(&mut self, text: &str) -> Result<Value> {
        self.text += text.len() as u64;
        if self.text > MAX_TEXT {
            return Err(unsupported(format!(
                "the pickle holds more than {} MiB of text, too much to scan",
                MAX_TEXT >> 20
            )));
        }
        Ok(Value::Str(Rc::from(text)))
    }

    /// UTF-8 text (BINUNICODE and friends); what is not kept or not valid becomes Text.
    fn utf8(&mut self, bytes: Option<Vec<u8>>) -> Result<Value> {
        match bytes.as_deref().map(std::str::from_utf8) {
            Some(Ok(text)) => self.str_value(text),
            _ => Ok(Value::Text),
        }
    }

    /// Protocol 0-2 strings, which the unpickler decodes as ASCII.
    fn ascii(&mut self, bytes: Option<Vec<u8>>) -> Result<Value> {
        match bytes {
            Some(bytes) if bytes.is_ascii() => self.utf8(Some(bytes)),
            _ => Ok(Value::Text),
        }
    }
}

/// One pickle's machine: the outer pickle, or an object array's nested pickle (read with a plain unpickler).
struct Machine {
    joblib: bool,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objs: Vec<Obj>,
    proto: u8,
    frame_end: Option<u64>,
}

const NUMPY_ARRAY_WRAPPER: (&str, &str) = ("joblib.numpy_pickle", "NumpyArrayWrapper");

impl Machine {
    fn new(joblib: bool) -> Machine {
        Machine {
            joblib,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objs: Vec::new(),
            proto: 0,
            frame_end: None,
        }
    }

    fn run(&mut self, sc: &mut Scanner, outer: bool) -> Result<()> {
        let first = sc.input.pos;
        loop {
            let start = sc.input.pos;
            let op = match sc.input.byte()? {
                Some(op) => op,
                None if outer && start == 0 => {
                    return Err(PickleError::NotAPickle("the file is empty".into()))
                }
                None => return Err(sc.bad("the pickle ends before its STOP opcode")),
            };
            if outer && start == first && !is_opcode(op) {
                return Err(PickleError::NotAPickle(format!(
                    "its first byte 0x{op:02x} is not a pickle opcode"
                )));
            }
            let stop = self.step(sc, op, start)?;
            if let Some(end) = self.frame_end {
                if start < end && sc.input.pos > end {
                    return Err(PickleError::Malformed {
                        offset: start,
                        message: "an opcode runs past the end of its frame".into(),
                    });
                }
                if sc.input.pos >= end {
                    self.frame_end = None;
                }
            }
            if stop {
                // The unpickler read its whole last frame: bytes left in it are gone.
                if let Some(end) = self.frame_end {
                    sc.input.skip(end - sc.input.pos)?;
                }
                return Ok(());
            }
        }
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, sc: &mut Scanner, value: Value) -> Result<()> {
        sc.count(1)?;
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self, sc: &Scanner) -> Result<Value> {
        if self.stack.len() <= self.fence() {
            return Err(sc.bad("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| sc.bad("stack underflow"))
    }

    fn top(&self, sc: &Scanner) -> Result<Value> {
        if self.stack.len() <= self.fence() {
            return Err(sc.bad("stack underflow"));
        }
        self.stack
            .last()
            .cloned()
            .ok_or_else(|| sc.bad("stack underflow"))
    }

    fn pop_mark(&mut self, sc: &Scanner) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| sc.bad("no MARK to pop"))?;
        Ok(self.stack.split_off(mark))
    }

    fn new_obj(&mut self, obj: Obj) -> Value {
        self.objs.push(obj);
        Value::Obj(self.objs.len() - 1)
    }

    fn tuple(&mut self, sc: &mut Scanner, items: Vec<Value>) -> Result<()> {
        let depth = 1 + items
            .iter()
            .map(|item| match item {
                Value::Tuple(t) => t.depth,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(unsupported(format!(
                "the pickle nests tuples more than {MAX_DEPTH} deep"
            )));
        }
        self.push(sc, Value::Tuple(Rc::new(Tuple { depth, items })))
    }

    /// A global as the unpickler's `find_class` resolves it, recorded as referred to.
    fn global(&mut self, sc: &mut Scanner, module: &str, name: &str) -> Result<Rc<Global>> {
        let global = if self.proto < 3 {
            python2_names(module, name)?
        } else {
            Global::new(module, name)
        };
        if matches!(
            global.module.as_str(),
            "joblib.numpy_pickle" | "joblib.numpy_pickle_compat"
        ) && matches!(global.name.as_str(), "NDArrayWrapper" | "ZNDArrayWrapper")
        {
            return Err(unsupported(format!(
                "{global}: joblib's pre-0.10 format keeps arrays in side files, which is not supported"
            )));
        }
        sc.count(1)?;
        sc.text += (global.module.len() + global.name.len()) as u64;
        sc.note(&global, Use::Referenced);
        Ok(Rc::new(global))
    }

    /// Runs one opcode; true at STOP.
    fn step(&mut self, sc: &mut Scanner, op: u8, start: u64) -> Result<bool> {
        let value = match op {
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i32::from_le_bytes(sc.input.array()?).into()),
            b'K' => Value::Int(sc.input.u8()?.into()),
            b'M' => Value::Int(u16::from_le_bytes(sc.input.array()?).into()),
            b'I' => match sc.input.line()?.as_deref() {
                Some(b"00") => Value::Bool(false),
                Some(b"01") => Value::Bool(true),
                other => text_int(other),
            },
            b'L' => text_int(
                sc.input
                    .line()?
                    .as_deref()
                    .map(|l| l.strip_suffix(b"L").unwrap_or(l)),
            ),
            0x8a => {
                let n = sc.input.u8()?;
                long_value(sc, n.into())?
            }
            0x8b => {
                let n = signed_len(sc, "LONG4")?;
                long_value(sc, n)?
            }
            b'F' => sc.input.line().map(|_| Value::Float)?,
            b'G' => sc.input.array::<8>().map(|_| Value::Float)?,
            b'T' | b'U' => {
                let n = if op == b'T' {
                    signed_len(sc, "BINSTRING")?
                } else {
                    sc.input.u8()?.into()
                };
                let bytes = sc.input.payload(n)?;
                sc.ascii(bytes)?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => sc.input.u32()?.into(),
                    0x8c => sc.input.u8()?.into(),
                    _ => sc.input.u64_len()?,
                };
                let bytes = sc.input.payload(n)?;
                sc.utf8(bytes)?
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => sc.input.u32()?.into(),
                    b'C' => sc.input.u8()?.into(),
                    _ => sc.input.u64_len()?,
                };
                sc.input.skip(n).map(|_| Value::Bytes)?
            }
            // A quoted repr: escapes are not evaluated (Text).
            b'S' => match sc.input.line()? {
                Some(line) => match line.as_slice() {
                    [q @ (b'\'' | b'"'), inner @ .., e] if q == e => match inner.contains(&b'\\') {
                        true => Value::Text,
                        false => sc.ascii(Some(inner.to_vec()))?,
                    },
                    _ => return Err(sc.bad("the STRING opcode argument must be quoted")),
                },
                None => Value::Text,
            },
            // raw-unicode-escape: without a backslash it is latin-1.
            b'V' => match sc.input.line()? {
                Some(line) if !line.contains(&b'\\') => {
                    sc.str_value(&line.iter().map(|&b| char::from(b)).collect::<String>())?
                }
                _ => Value::Text,
            },
            b']' => self.new_obj(Obj::List(Vec::new())),
            b'}' => self.new_obj(Obj::Dict(Vec::new())),
            0x8f => self.new_obj(Obj::Set),
            b'l' => {
                let items = self.pop_mark(sc)?;
                self.new_obj(Obj::List(items))
            }
            b'd' => {
                let items = self.pop_mark(sc)?;
                let pairs = pairs(sc, items)?;
                self.new_obj(Obj::Dict(pairs))
            }
            0x91 => {
                self.pop_mark(sc)?;
                self.new_obj(Obj::Set)
            }
            b'2' => self.top(sc)?,
            b'g' | b'h' | b'j' => {
                let key = match op {
                    b'g' => line_number(sc, "GET")?,
                    b'h' => sc.input.u8()?.into(),
                    _ => sc.input.u32()?.into(),
                };
                self.memo
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| sc.bad(format!("memo key {key} is not set")))?
            }
            b'c' => {
                let module = name_line(sc, false)?;
                let name = name_line(sc, false)?;
                Value::Global(self.global(sc, &module, &name)?)
            }
            0x93 => {
                let name = self.pop(sc)?;
                let module = self.pop(sc)?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        Value::Global(self.global(sc, &module, &name)?)
                    }
                    (Value::Text, _) | (_, Value::Text) => {
                        return Err(unsupported(
                            "STACK_GLOBAL with a name the scanner did not keep",
                        ))
                    }
                    _ => {
                        return Err(
                            sc.bad("STACK_GLOBAL needs a module and a name that are strings")
                        )
                    }
                }
            }
            _ => return self.effect(sc, op, start),
        };
        self.push(sc, value)?;
        Ok(false)
    }

    /// The opcodes that do more than push one value.
    fn effect(&mut self, sc: &mut Scanner, op: u8, start: u64) -> Result<bool> {
        match op {
            b'.' => {
                self.pop(sc)?;
                return Ok(true);
            }
            b'(' if self.marks.len() >= MAX_MARKS => {
                return Err(unsupported(format!(
                    "the pickle nests more than {MAX_MARKS} MARKs"
                )))
            }
            b'(' => self.marks.push(self.stack.len()),
            // CPython pops a MARK when the stack above it is empty.
            b'0' if self.stack.len() > self.fence() => drop(self.stack.pop()),
            b'0' | b'1' => drop(self.pop_mark(sc)?),
            b')' => self.tuple(sc, Vec::new())?,
            b't' => {
                let items = self.pop_mark(sc)?;
                self.tuple(sc, items)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < self.fence() + n {
                    return Err(sc.bad("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.tuple(sc, items)?;
            }
            b'a' => {
                let item = self.pop(sc)?;
                self.add_items(sc, op, vec![item])?;
            }
            b's' => {
                let value = self.pop(sc)?;
                let key = self.pop(sc)?;
                self.add_items(sc, op, vec![key, value])?;
            }
            b'e' | b'u' | 0x90 => {
                let items = self.pop_mark(sc)?;
                self.add_items(sc, op, items)?;
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'p' => line_number(sc, "PUT")?,
                    b'q' => sc.input.u8()?.into(),
                    b'r' => sc.input.u32()?.into(),
                    _ => self.memo.len() as u64,
                };
                let value = self.top(sc)?;
                sc.count(1)?;
                self.memo.insert(key, value);
            }
            b'i' | b'o' => {
                let mut args = self.pop_mark(sc)?;
                let class = if op == b'i' {
                    let module = name_line(sc, true)?;
                    let name = name_line(sc, true)?;
                    Value::Global(self.global(sc, &module, &name)?)
                } else if args.is_empty() {
                    return Err(sc.bad("OBJ without a class"));
                } else {
                    args.remove(0)
                };
                let Value::Global(class) = class else {
                    return Err(unsupported(
                        "OBJ instantiates a value that is not a named global",
                    ));
                };
                let args = Value::Tuple(Rc::new(Tuple {
                    depth: 1,
                    items: args,
                }));
                self.call(sc, &class, &args)?;
                let obj = self.new_obj(Obj::Instance {
                    made: Made::Call {
                        callable: class,
                        args,
                    },
                    state: None,
                    builds: 0,
                });
                self.push(sc, obj)?;
            }
            0x81 | 0x92 => {
                let kwargs = if op == 0x92 {
                    Some(self.pop(sc)?)
                } else {
                    None
                };
                let args = self.pop(sc)?;
                let Value::Global(class) = self.pop(sc)? else {
                    return Err(unsupported(
                        "NEWOBJ instantiates a value that is not a named global",
                    ));
                };
                if class.is("numpy", "dtype") {
                    return Err(unsupported(
                        "a numpy.dtype made with NEWOBJ, which the scanner cannot size",
                    ));
                }
                sc.note(&class, Use::Instantiated);
                let plain = matches!(&args, Value::Tuple(t) if t.items.is_empty())
                    && kwargs.is_none_or(|k| matches!(k, Value::Obj(id) if matches!(&self.objs[id], Obj::Dict(d) if d.is_empty())));
                let obj = self.new_obj(Obj::Instance {
                    made: Made::New { class, plain },
                    state: None,
                    builds: 0,
                });
                self.push(sc, obj)?;
            }
            b'R' => {
                let args = self.pop(sc)?;
                let Value::Global(callable) = self.top(sc)? else {
                    return Err(unsupported(
                        "REDUCE calls a value that is not a named global",
                    ));
                };
                self.call(sc, &callable, &args)?;
                let obj = self.new_obj(Obj::Instance {
                    made: Made::Call { callable, args },
                    state: None,
                    builds: 0,
                });
                if let Some(top) = self.stack.last_mut() {
                    *top = obj;
                }
            }
            b'b' => {
                let state = self.pop(sc)?;
                let target = self.top(sc)?;
                self.build(sc, target, state)?;
            }
            0x80 => {
                let proto = sc.input.u8()?;
                if proto > 5 {
                    return Err(sc.bad(format!("unsupported pickle protocol {proto}")));
                }
                self.proto = proto;
                sc.protocol = sc.protocol.max(proto);
            }
            0x95 => {
                let len = sc.input.u64_len()?;
                if self.frame_end.is_some_and(|end| sc.input.pos != end) {
                    let message = "a frame starts before the end of the previous one".into();
                    return Err(PickleError::Malformed {
                        offset: start,
                        message,
                    });
                }
                self.frame_end = Some(
                    sc.input
                        .pos
                        .checked_add(len)
                        .ok_or_else(|| sc.bad("frame length overflows"))?,
                );
            }
            b'P' | b'Q' => {
                return Err(unsupported(format!(
                    "pickles with persistent IDs ({}) are not supported",
                    ["PERSID", "BINPERSID"][usize::from(op == b'Q')]
                )))
            }
            0x82..=0x84 => {
                return Err(unsupported(format!(
                    "pickles using the copyreg extension registry (EXT{}) are not supported",
                    1 << (op - 0x82)
                )))
            }
            0x97 | 0x98 => {
                return Err(unsupported(format!(
                    "pickles with out-of-band buffers ({}) are not supported",
                    ["NEXT_BUFFER", "READONLY_BUFFER"][usize::from(op == 0x98)]
                )))
            }
            _ => {
                return Err(PickleError::Malformed {
                    offset: start,
                    message: format!("unknown opcode 0x{op:02x}"),
                })
            }
        }
        Ok(false)
    }

    /// Uses a call implies for its arguments, and the calls the scanner refuses to follow.
    fn call(&self, sc: &mut Scanner, callable: &Global, args: &Value) -> Result<()> {
        sc.note(callable, Use::Called);
        let items: &[Value] = match args {
            Value::Tuple(t) => &t.items,
            _ => &[],
        };
        if callable.is("numpy", "dtype") {
            // Only copies (copy=True) are sized: numpy shares uncopied dtypes, which a BUILD could change.
            if !matches!(items, [Value::Str(_), _, Value::Bool(true) | Value::Int(1)]) {
                return Err(unsupported(
                    "a numpy.dtype made without copy=True, which the scanner cannot follow",
                ));
            }
            return Ok(());
        }
        if callable.module == "numpy.random._pickle" {
            // These call the bit generator class or constructor they are given: only named globals.
            if items
                .iter()
                .skip(1)
                .any(|v| !matches!(v, Value::Global(_) | Value::None))
            {
                return Err(unsupported(format!(
                    "{callable} with a constructor that is not a named global"
                )));
            }
            for item in items {
                if let Value::Global(global) = item {
                    sc.note(global, Use::Called);
                }
            }
            return Ok(());
        }
        for item in items.iter().take(class_arguments(callable)) {
            if let Value::Global(global) = item {
                if global.is("numpy", "dtype") {
                    return Err(unsupported(format!(
                        "a numpy.dtype made by {callable}, which the scanner cannot size"
                    )));
                }
                sc.note(global, Use::Instantiated);
            }
        }
        Ok(())
    }

    /// APPEND(S), SETITEM(S), ADDITEMS into the object on top of the stack.
    fn add_items(&mut self, sc: &mut Scanner, op: u8, items: Vec<Value>) -> Result<()> {
        let what = match op {
            b'a' | b'e' => "APPEND",
            b's' | b'u' => "SETITEM",
            _ => "ADDITEMS",
        };
        let id = match self.top(sc)? {
            Value::Obj(id) => id,
            Value::Global(global) => {
                return Err(unsupported(format!(
                    "{what} would change the global {global}"
                )))
            }
            _ => return Err(sc.bad(format!("{what} into a value that is not a container"))),
        };
        match (&mut self.objs[id], what) {
            (Obj::List(list), "APPEND") => list.extend(items),
            (Obj::Dict(dict), "SETITEM") => dict.extend(pairs(sc, items)?),
            (Obj::Set, "ADDITEMS") => {}
            // The instance's own append/extend/__setitem__/add: allowed classes only, as for its creation.
            (Obj::Instance { .. }, "SETITEM") => drop(pairs(sc, items)?),
            (Obj::Instance { .. }, _) => {}
            _ => return Err(sc.bad(format!("{what} into the wrong kind of container"))),
        }
        Ok(())
    }

    fn build(&mut self, sc: &mut Scanner, target: Value, state: Value) -> Result<()> {
        self.collect_versions(sc, &state);
        let id = match target {
            Value::Obj(id) => id,
            Value::Global(global) => {
                return Err(unsupported(format!(
                    "BUILD would set attributes of the global {global}"
                )))
            }
            // Python fails, or does nothing, on other values.
            _ => return Ok(()),
        };
        let Obj::Instance {
            made,
            state: slot,
            builds,
        } = &mut self.objs[id]
        else {
            return Ok(());
        };
        *builds += 1;
        let twice = *builds > 1;
        let class = instance_class(made)?;
        if twice && matches!(made, Made::Call { callable, .. } if callable.is("numpy", "dtype")) {
            return Err(unsupported("a numpy.dtype whose state is set twice"));
        }
        *slot = Some(state);
        let Some((class, plain)) = class else {
            return Ok(());
        };
        if !self.joblib || !class.is(NUMPY_ARRAY_WRAPPER.0, NUMPY_ARRAY_WRAPPER.1) {
            return Ok(());
        }
        if twice || !plain {
            return Err(unsupported(
                "a NumpyArrayWrapper not made the way joblib makes it",
            ));
        }
        // joblib reads the array from the file, after the frame the unpickler already read.
        if let Some(end) = self.frame_end.take() {
            if sc.input.pos != end {
                return Err(sc.bad("joblib array data inside a pickle frame"));
            }
        }
        self.read_array(sc, id)?;
        sc.joblib = true;
        let array = self.new_obj(Obj::Instance {
            made: Made::Array,
            state: None,
            builds: 0,
        });
        if let Some(top) = self.stack.last_mut() {
            *top = array;
        }
        Ok(())
    }

    fn collect_versions(&self, sc: &mut Scanner, state: &Value) {
        let dicts: Vec<usize> = match state {
            Value::Obj(id) => vec![*id],
            Value::Tuple(t) if t.items.len() == 2 => t
                .items
                .iter()
                .filter_map(|v| {
                    if let Value::Obj(id) = v {
                        Some(*id)
                    } else {
                        None
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        for id in dicts {
            let Obj::Dict(pairs) = &self.objs[id] else {
                continue;
            };
            let version = pairs.iter().rev().find_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Str(v)) if &**k == "_sklearn_version" => Some(v.to_string()),
                _ => None,
            });
            if let Some(version) = version {
                if !sc.versions.contains(&version) {
                    sc.versions.push(version);
                }
            }
        }
    }

    /// Skips the array joblib wrote after the wrapper (NumpyArrayWrapper.write_array in joblib/numpy_pickle.py).
    fn read_array(&mut self, sc: &mut Scanner, wrapper: usize) -> Result<()> {
        let Obj::Instance {
            state: Some(Value::Obj(state)),
            ..
        } = &self.objs[wrapper]
        else {
            return Err(unsupported("a NumpyArrayWrapper whose state is not a dict"));
        };
        let Obj::Dict(attrs) = &self.objs[*state] else {
            return Err(unsupported("a NumpyArrayWrapper whose state is not a dict"));
        };
        let mut shape = None;
        let mut dtype = None;
        let mut alignment = None;
        for (key, value) in attrs {
            let Value::Str(key) = key else {
                return Err(unsupported(
                    "a NumpyArrayWrapper state with a key that is not a plain string",
                ));
            };
            match &**key {
                "shape" => shape = Some(value),
                "dtype" => dtype = Some(value),
                "numpy_array_alignment_bytes" => alignment = Some(value),
                _ => {}
            }
        }
        let count = match shape {
            Some(Value::Tuple(t)) => self.element_count(&t.items)?,
            Some(Value::Obj(id)) => match &self.objs[*id] {
                Obj::List(items) => self.element_count(items)?,
                _ => {
                    return Err(unsupported(
                        "a NumpyArrayWrapper shape that is not a tuple of ints",
                    ))
                }
            },
            _ => {
                return Err(unsupported(
                    "a NumpyArrayWrapper shape that is not a tuple of ints",
                ))
            }
        };
        let dtype = match dtype {
            Some(Value::Obj(id)) => self.dtype(*id)?,
            _ => {
                return Err(unsupported(
                    "a NumpyArrayWrapper dtype that is not a numpy.dtype",
                ))
            }
        };
        if dtype.has_object {
            // Object arrays are a nested pickle.dump, read by a plain unpickler from the same stream.
            return Machine::new(false).run(sc, false);
        }
        if !matches!(alignment, None | Some(Value::None)) {
            let padding = sc.input.u8()?;
            sc.input.skip(padding.into())?;
        }
        let bytes = count
            .checked_mul(dtype.itemsize)
            .ok_or_else(|| unsupported("a joblib array larger than 2^64 bytes"))?;
        sc.input.skip(bytes)
    }

    fn element_count(&self, dims: &[Value]) -> Result<u64> {
        dims.iter().try_fold(1u64, |count, dim| {
            let dim = match dim {
                Value::Int(n) => u64::try_from(*n)
                    .map_err(|_| unsupported("a joblib array with a negative dimension"))?,
                Value::Bool(b) => u64::from(*b),
                _ => {
                    return Err(unsupported(
                        "a NumpyArrayWrapper shape that is not a tuple of ints",
                    ))
                }
            };
            count
                .checked_mul(dim)
                .ok_or_else(|| unsupported("a joblib array with more than 2^64 elements"))
        })
    }

    /// A `numpy.dtype(typestr, align, True)` REDUCE, with the state its BUILD set.
    fn dtype(&self, id: usize) -> Result<Dtype> {
        let Obj::Instance {
            made:
                Made::Call {
                    callable,
                    args: Value::Tuple(args),
                },
            state,
            ..
        } = &self.objs[id]
        else {
            return Err(unsupported(
                "a NumpyArrayWrapper dtype that is not a numpy.dtype",
            ));
        };
        let Some(Value::Str(typestr)) = args.items.first() else {
            return Err(unsupported(
                "a NumpyArrayWrapper dtype that is not a numpy.dtype",
            ));
        };
        if !callable.is("numpy", "dtype") {
            return Err(unsupported(
                "a NumpyArrayWrapper dtype that is not a numpy.dtype",
            ));
        }
        let mut dtype = parse_dtype(typestr)?;
        match state {
            None => {}
            // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
            Some(Value::Tuple(t))
                if matches!(t.items.first(), Some(Value::Int(3 | 4)))
                    && matches!(t.items.len(), 8 | 9) =>
            {
                if dtype.flexible {
                    dtype.itemsize = match t.items[5] {
                        Value::Int(n) => u64::try_from(n).unwrap_or(0),
                        Value::Bool(b) => u64::from(b),
                        _ => {
                            return Err(unsupported(
                                "a numpy.dtype state with an unreadable item size",
                            ))
                        }
                    };
                }
                dtype.has_object = match t.items[7] {
                    Value::Int(flags) => flags & 1 != 0,
                    Value::Bool(b) => b,
                    _ => return Err(unsupported("a numpy.dtype state with unreadable flags")),
                };
            }
            Some(_) => return Err(unsupported("a numpy.dtype state of an unsupported version")),
        }
        if dtype.itemsize == 0 && !dtype.has_object {
            return Err(unsupported(format!(
                "numpy dtype '{typestr}' with a zero or negative item size"
            )));
        }
        Ok(dtype)
    }
}

/// The class of an instance as far as joblib's `isinstance(obj, NumpyArrayWrapper)` goes, and whether it was made
/// the plain way joblib's pickler makes wrappers (NEWOBJ without arguments, or copyreg with `object` and no state).
/// Refuses instances whose class the scan cannot name.
fn instance_class(made: &Made) -> Result<Option<(Rc<Global>, bool)>> {
    let (callable, args) = match made {
        Made::New { class, plain } => return Ok(Some((class.clone(), *plain))),
        Made::Array => return Ok(None),
        Made::Call { callable, args } => (callable, args),
    };
    let items: &[Value] = match args {
        Value::Tuple(t) => &t.items,
        _ => &[],
    };
    let numpy_core = matches!(
        callable.module.as_str(),
        "numpy.core.multiarray" | "numpy._core.multiarray"
    );
    if numpy_core && callable.name == "scalar" {
        // numpy's scalar() returns its argument for object dtypes: the object could be anything.
        return Err(unsupported(
            "BUILD on the result of numpy's scalar(), which the scanner cannot follow",
        ));
    }
    if class_arguments(callable) == 0 {
        // Calling a class makes an instance of it; an allowed function makes no wrapper.
        return Ok(Some((callable.clone(), false)));
    }
    match items {
        [Value::Global(class), Value::Global(base), Value::None]
            if callable.is("copyreg", "_reconstructor") =>
        {
            Ok(Some((class.clone(), base.is("builtins", "object"))))
        }
        [Value::Global(class)] if callable.is("copyreg", "__newobj__") => {
            Ok(Some((class.clone(), true)))
        }
        [Value::Global(class), ..] => Ok(Some((class.clone(), false))),
        _ => Err(unsupported(format!(
            "BUILD on an object made by {callable} from a class the scanner cannot name"
        ))),
    }
}

/// A GLOBAL or INST name line: UTF-8 (INST: ASCII), as the unpickler decodes them.
fn name_line(sc: &mut Scanner, ascii: bool) -> Result<String> {
    let line = sc
        .input
        .line()?
        .ok_or_else(|| unsupported("a global name longer than 1024 bytes"))?;
    let name = String::from_utf8(line).map_err(|_| sc.bad("a global name that is not UTF-8"))?;
    if ascii && !name.is_ascii() {
        return Err(sc.bad("an INST name that is not ASCII"));
    }
    Ok(name)
}

/// A PUT or GET memo key line.
fn line_number(sc: &mut Scanner, what: &str) -> Result<u64> {
    let line = sc.input.line()?.unwrap_or_default();
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(sc.bad(format!("{what} needs a decimal memo key")));
    }
    std::str::from_utf8(&line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| sc.bad(format!("{what} memo key is out of range")))
}

/// How many leading arguments of a call are classes it instantiates (copyreg and numpy reconstructors,
/// scikit-learn's `newObj`, Cython's `__pyx_unpickle_*`).
fn class_arguments(callable: &Global) -> usize {
    let numpy_core = matches!(
        callable.module.as_str(),
        "numpy.core.multiarray" | "numpy._core.multiarray"
    );
    if callable.is("copyreg", "_reconstructor") || callable.is("numpy.ma.core", "_mareconstruct") {
        2
    } else if callable.is("copyreg", "__newobj__")
        || callable.is("copyreg", "__newobj_ex__")
        || callable.name == "newObj"
        || callable.name.starts_with("__pyx_unpickle_")
        || numpy_core && callable.name == "_reconstruct"
    {
        1
    } else {
        0
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Dtype {
    itemsize: u64,
    /// S, U and V: their BUILD state sets the item size.
    flexible: bool,
    has_object: bool,
}

/// The item size of a numpy type string as numpy's dtype pickles write it ('f8', '<U5', 'V12', 'O8', ...).
fn parse_dtype(typestr: &str) -> Result<Dtype> {
    let unknown = || {
        unsupported(format!(
            "numpy dtype '{typestr}' is not supported in joblib arrays"
        ))
    };
    let body = typestr
        .strip_prefix(['<', '>', '|', '='])
        .unwrap_or(typestr);
    let mut chars = body.chars();
    let kind = chars.next().ok_or_else(unknown)?;
    let digits = chars.as_str();
    let size: Option<u64> = if digits.is_empty() {
        None
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        Some(digits.parse().map_err(|_| unknown())?)
    } else {
        return Err(unknown());
    };
    let fixed = |allowed: &[u64]| match size {
        Some(n) if allowed.contains(&n) => Ok(Dtype {
            itemsize: n,
            flexible: false,
            has_object: false,
        }),
        _ => Err(unknown()),
    };
    match kind {
        'b' => fixed(&[1]),
        'i' | 'u' => fixed(&[1, 2, 4, 8]),
        'f' => fixed(&[2, 4, 8, 16]),
        'c' => fixed(&[8, 16, 32]),
        'M' | 'm' => fixed(&[8]),
        'O' => match size {
            None | Some(8) => Ok(Dtype {
                itemsize: 8,
                flexible: false,
                has_object: true,
            }),
            _ => Err(unknown()),
        },
        'S' | 'V' => Ok(Dtype {
            itemsize: size.unwrap_or(0),
            flexible: true,
            has_object: false,
        }),
        'U' => {
            let itemsize = size.unwrap_or(0).checked_mul(4).ok_or_else(unknown)?;
            Ok(Dtype {
                itemsize,
                flexible: true,
                has_object: false,
            })
        }
        _ => Err(unknown()),
    }
}

/// Protocol-0 ints: plain decimal is evaluated, anything else `int(x, 0)` accepts is not.
fn text_int(line: Option<&[u8]>) -> Value {
    let Some(line) = line else {
        return Value::BigInt;
    };
    let digits = line
        .strip_prefix(b"-")
        .or_else(|| line.strip_prefix(b"+"))
        .unwrap_or(line);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    match std::str::from_utf8(line)
        .ok()
        .filter(|_| canonical)
        .and_then(|s| s.parse::<i64>().ok())
    {
        Some(n) => Value::Int(n),
        None => Value::BigInt,
    }
}

/// A 4-byte signed length (BINSTRING, LONG4), which CPython refuses when negative.
fn signed_len(sc: &mut Scanner, what: &str) -> Result<u64> {
    let n = i32::from_le_bytes(sc.input.array()?);
    u64::try_from(n).map_err(|_| sc.bad(format!("{what} with a negative length")))
}

/// LONG1/LONG4: little-endian two's complement.
fn long_value(sc: &mut Scanner, n: u64) -> Result<Value> {
    if n > 16 {
        sc.input.skip(n)?;
        return Ok(Value::BigInt);
    }
    let mut bytes = [0u8; 16];
    sc.input.fill_exact(&mut bytes[..n as usize])?;
    if n == 0 {
        return Ok(Value::Int(0));
    }
    let negative = bytes[n as usize - 1] & 0x80 != 0;
    if negative {
        bytes[n as usize..].fill(0xff);
    }
    Ok(i64::try_from(i128::from_le_bytes(bytes)).map_or(Value::BigInt, Value::Int))
}

fn pairs(sc: &Scanner, items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(sc.bad("a dict with an odd number of items"));
    }
    let mut pairs = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// `find_class`'s renaming of Python 2 names for protocols 0-2 (fix_imports, Lib/_compat_pickle.py).
fn python2_names(module: &str, name: &str) -> Result<Global> {
    match module {
        "__builtin__" => Ok(match name {
            "xrange" => Global::new("builtins", "range"),
            "unicode" | "basestring" => Global::new("builtins", "str"),
            "long" => Global::new("builtins", "int"),
            "unichr" => Global::new("builtins", "chr"),
            "reduce" => Global::new("functools", "reduce"),
            "intern" => Global::new("sys", "intern"),
            _ => Global::new("builtins", name),
        }),
        "copy_reg" => Ok(Global::new("copyreg", name)),
        _ if PYTHON2_MODULES.split_whitespace().any(|m| m == module) => Err(unsupported(format!(
            "{module}.{name}: a Python 2 name that loading would rename; not supported"
        ))),
        _ => Ok(Global::new(module, name)),
    }
}

/// The other modules `_compat_pickle` renames (or renames names of): refused rather than followed.
const PYTHON2_MODULES: &str = "BaseHTTPServer CGIHTTPServer ConfigParser Cookie Dialog DocXMLRPCServer \
    FileDialog HTMLParser Queue ScrolledText SimpleDialog SimpleHTTPServer SimpleXMLRPCServer SocketServer \
    StringIO Tix Tkconstants Tkdnd Tkinter UserDict UserList UserString _abcoll _elementtree _multiprocessing \
    _socket _winreg anydbm cPickle cStringIO commands cookielib dbhash dbm dumbdbm dummy_thread exceptions gdbm \
    htmlentitydefs httplib itertools markupbase multiprocessing multiprocessing.forking multiprocessing.process \
    repr robotparser socket test.test_support thread tkColorChooser tkCommonDialog tkFileDialog tkFont \
    tkMessageBox tkSimpleDialog ttk urllib urllib2 urlparse whichdb xmlrpclib";

fn is_opcode(op: u8) -> bool {
    (0x80..=0x98).contains(&op) || b"()]}.0123BCFGIJKLMNPQRSTUVXabcdeghijlopqrstu".contains(&op)
}

/// Which globals a pickle may import, and which of them loading may call.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// Extra "module.name" entries.
    names: Vec<String>,
    /// Extra modules, each with its submodules.
    modules: Vec<String>,
}

/// Why a scan is refused: the first global the allow-list does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pickle {} `{global}`, which is not allowed: {why}", .used.verb())]
pub struct Refusal {
    pub global: Global,
    pub used: Use,
    pub why: String,
}

impl AllowList {
    /// The policy described in the module documentation.
    pub fn builtin() -> AllowList {
        AllowList::default()
    }

    /// Extra entries a ModelRuntime adds: "module.name" exact, or "module.*" for every name in a module (and its
    /// submodules). They allow any use, but never a name that is not a plain identifier.
    pub fn with_extra(mut self, entries: &[String]) -> AllowList {
        for entry in entries {
            match entry.strip_suffix(".*") {
                Some(module) if !module.is_empty() => self.modules.push(module.to_owned()),
                Some(_) => {}
                None => self.names.push(entry.clone()),
            }
        }
        self
    }

    /// The first global of the scan the list does not allow (in scan order), with the reason.
    pub fn check(&self, scan: &PickleScan) -> std::result::Result<(), Refusal> {
        for (global, used) in &scan.globals {
            if let Err(why) = self.allows(global, *used) {
                return Err(Refusal {
                    global: global.clone(),
                    used: *used,
                    why,
                });
            }
        }
        Ok(())
    }

    fn allows(&self, global: &Global, used: Use) -> std::result::Result<(), String> {
        if !global.module.split('.').all(is_identifier) {
            return Err("not a module path".into());
        }
        if !is_identifier(&global.name) {
            return Err("not a plain name (an attribute path reaches anything)".into());
        }
        let full = global.to_string();
        if global.name.starts_with("__") && global.name.ends_with("__") && !listed(STDLIB, &full) {
            return Err("a dunder name".into());
        }
        if self.names.contains(&full) || self.modules.iter().any(|m| in_module(&global.module, m)) {
            return Ok(());
        }
        builtin_allows(global, used)
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn in_module(module: &str, root: &str) -> bool {
    module
        .strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Standard-library globals: any use.
const STDLIB: &str = "builtins.set builtins.frozenset builtins.slice builtins.complex builtins.bytearray \
    builtins.bytes builtins.int builtins.float builtins.str builtins.tuple builtins.list builtins.dict \
    builtins.bool builtins.range builtins.object collections.OrderedDict collections.defaultdict \
    collections.deque collections.Counter copyreg._reconstructor copyreg.__newobj__ copyreg.__newobj_ex__ \
    _codecs.encode datetime.datetime datetime.date datetime.time datetime.timedelta datetime.timezone \
    decimal.Decimal fractions.Fraction";

/// numpy globals loading may call.
const NUMPY_CALLED: &str = "numpy.dtype numpy.core.multiarray._reconstruct numpy.core.multiarray.scalar \
    numpy._core.multiarray._reconstruct numpy._core.multiarray.scalar numpy.core.numeric._frombuffer \
    numpy._core.numeric._frombuffer numpy.random._pickle.__randomstate_ctor \
    numpy.random._pickle.__bit_generator_ctor numpy.random._pickle.__generator_ctor \
    numpy.random.bit_generator.SeedSequence numpy.random.bit_generator.__pyx_unpickle_SeedSequence \
    numpy.random._mt19937.MT19937 numpy.random._pcg64.PCG64 numpy.random._pcg64.PCG64DXSM \
    numpy.random._philox.Philox numpy.random._sfc64.SFC64 numpy.random.mtrand.RandomState \
    numpy.random._generator.Generator numpy.ma.core._mareconstruct numpy.ma.core.MaskedConstant";

/// numpy classes and scalar types, referred to or instantiated only.
const NUMPY_TYPES: &str = "numpy.ma.core.MaskedArray numpy.ma.MaskedArray numpy.matrixlib.defmatrix.matrix \
    numpy.ndarray numpy.memmap numpy.matrix numpy.bool_ numpy.bool numpy.int8 numpy.int16 numpy.int32 \
    numpy.int64 numpy.uint8 numpy.uint16 numpy.uint32 numpy.uint64 numpy.intc numpy.uintc numpy.intp \
    numpy.uintp numpy.int_ numpy.uint numpy.long numpy.ulong numpy.longlong numpy.ulonglong numpy.short \
    numpy.ushort numpy.byte numpy.ubyte numpy.half numpy.single numpy.double numpy.longdouble numpy.float16 \
    numpy.float32 numpy.float64 numpy.float96 numpy.float128 numpy.complex64 numpy.complex128 numpy.complex192 \
    numpy.complex256 numpy.csingle numpy.cdouble numpy.clongdouble numpy.object_ numpy.str_ numpy.bytes_ \
    numpy.void numpy.datetime64 numpy.timedelta64 numpy.generic numpy.number numpy.integer numpy.signedinteger \
    numpy.unsignedinteger numpy.inexact numpy.floating numpy.complexfloating numpy.flexible numpy.character";

const FRAMEWORKS: &str = "sklearn xgboost lightgbm scipy";

/// Framework module path components that hold tests and tooling.
const TOOLING: &str = "tests testing _testing conftest _testutils _precompute benchmarks";

/// Framework subpackages that do I/O or start cluster services.
const REFUSED_MODULES: &str =
    "scipy.io scipy.datasets xgboost.tracker xgboost.collective xgboost.dask \
    xgboost.spark xgboost.federated lightgbm.dask";

/// Side-effecting standard-library names that framework modules import into their namespace.
const REEXPORTS: &str = "system popen Popen call check_call check_output run getoutput getstatusoutput remove \
    unlink rmdir removedirs rmtree makedirs mkdir rename renames replace chmod chown symlink link truncate \
    putenv unsetenv environ kill killpg fork execv execve execvp spawnv spawnve copyfile copytree move urlopen \
    urlretrieve Request open eval exec compile getattr setattr delattr import_module reload load loads Pool \
    Process Thread Timer ThreadPoolExecutor ProcessPoolExecutor CDLL PyDLL cdll pydll LibraryLoader \
    NamedTemporaryFile TemporaryDirectory TemporaryFile SpooledTemporaryFile mkstemp mkdtemp Parallel delayed";

fn listed(list: &str, item: &str) -> bool {
    list.split_whitespace().any(|entry| entry == item)
}

fn builtin_allows(global: &Global, used: Use) -> std::result::Result<(), String> {
    let (module, name, full) = (
        global.module.as_str(),
        global.name.as_str(),
        global.to_string(),
    );
    if listed(STDLIB, &full) || listed(NUMPY_CALLED, &full) {
        return Ok(());
    }
    if listed(NUMPY_TYPES, &full) || (module, name) == NUMPY_ARRAY_WRAPPER {
        return match used {
            Use::Called => Err("loading would call a class that may only be instantiated".into()),
            _ => Ok(()),
        };
    }
    let Some(root) = FRAMEWORKS
        .split_whitespace()
        .find(|root| in_module(module, root))
    else {
        return Err(match in_module(module, "numpy") {
            true => "not among the allowed numpy names".into(),
            false => "not an allowed module".into(),
        });
    };
    if module.split('.').any(|part| listed(TOOLING, part)) {
        return Err("a test or tooling module".into());
    }
    if REFUSED_MODULES
        .split_whitespace()
        .any(|m| in_module(module, m))
    {
        return Err("a module that does I/O or starts services".into());
    }
    if listed(REEXPORTS, name) {
        return Err("a standard-library function or class the module imports".into());
    }
    if used < Use::Called {
        return Ok(());
    }
    let class_shaped = |n: &str| {
        n.trim_start_matches('_')
            .starts_with(|c: char| c.is_ascii_uppercase())
    };
    let callable = class_shaped(name)
        || (root == "sklearn" && name == "newObj")
        || name
            .strip_prefix("__pyx_unpickle_")
            .is_some_and(class_shaped);
    if !callable {
        return Err("loading would call a function".into());
    }
    if root == "scipy" && !in_module(module, "scipy.sparse") {
        return Err("SciPy classes outside scipy.sparse may call functions they are given".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/python/models/");

    fn model(name: &str) -> Vec<u8> {
        std::fs::read(format!("{MODELS}{name}")).unwrap()
    }

    fn scan_bytes(bytes: &[u8]) -> Result<PickleScan> {
        scan(&mut &bytes[..])
    }

    fn uses(scan: &PickleScan, global: &str) -> Option<Use> {
        scan.globals
            .iter()
            .find(|(g, _)| g.to_string() == global)
            .map(|(_, u)| *u)
    }

    /// SHORT_BINUNICODE.
    fn su(s: &str) -> Vec<u8> {
        [&[0x8c, s.len() as u8][..], s.as_bytes()].concat()
    }

    /// STACK_GLOBAL from two SHORT_BINUNICODEs.
    fn sg(module: &str, name: &str) -> Vec<u8> {
        [su(module), su(name), vec![0x93]].concat()
    }

    fn refusal(bytes: &[u8]) -> Refusal {
        AllowList::builtin()
            .check(&scan_bytes(bytes).unwrap())
            .unwrap_err()
    }

    #[test]
    fn testdata_models_scan_and_pass() {
        for (file, version, joblib) in [
            ("sklearn_logreg.joblib", "1.9.1", true),
            ("sklearn_forest.joblib", "1.9.1", true),
            ("sklearn_ridge.joblib", "1.9.1", true),
            ("sklearn_old.joblib", "1.5.2", true),
            ("sklearn_logreg.pkl", "1.9.1", false),
            ("sklearn_forest.pkl", "1.9.1", false),
        ] {
            let scan = scan_file(Path::new(&format!("{MODELS}{file}"))).unwrap();
            assert_eq!(scan.sklearn_versions, [version], "{file}");
            assert_eq!(scan.joblib, joblib, "{file}");
            assert_eq!(scan.compression, None);
            AllowList::builtin().check(&scan).unwrap();
        }
        let forest = scan_file(Path::new(&format!("{MODELS}sklearn_forest.joblib"))).unwrap();
        assert_eq!(forest.protocol, 4);
        assert_eq!(uses(&forest, "sklearn.tree._tree.Tree"), Some(Use::Called));
        assert_eq!(
            uses(&forest, "sklearn.ensemble._forest.RandomForestClassifier"),
            Some(Use::Instantiated)
        );
        assert_eq!(
            uses(&forest, "joblib.numpy_pickle.NumpyArrayWrapper"),
            Some(Use::Instantiated)
        );
        let pkl = scan_file(Path::new(&format!("{MODELS}sklearn_logreg.pkl"))).unwrap();
        assert_eq!(pkl.protocol, 5);
        assert_eq!(
            uses(&pkl, "numpy._core.numeric._frombuffer"),
            Some(Use::Called)
        );
    }

    #[test]
    fn mlflow_model_pickle_scans() {
        let archive = model("mlflow_sklearn.tar.gz");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&archive[..]));
        let mut entry = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("model.pkl"))
            .unwrap();
        let scan = scan(&mut BufReader::new(&mut entry)).unwrap();
        assert_eq!(scan.sklearn_versions, ["1.9.1"]);
        assert!(!scan.joblib);
        AllowList::builtin().check(&scan).unwrap();
    }

    #[test]
    fn zlib_and_gzip_joblib_files() {
        let raw = model("sklearn_forest.joblib");
        let plain = scan_bytes(&raw).unwrap();
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::new(3));
        zlib.write_all(&raw).unwrap();
        let mut gzip = GzEncoder::new(Vec::new(), Compression::new(3));
        gzip.write_all(&raw).unwrap();
        for (bytes, name) in [
            (zlib.finish().unwrap(), "zlib"),
            (gzip.finish().unwrap(), "gzip"),
        ] {
            let scan = scan_bytes(&bytes).unwrap();
            assert_eq!(scan.compression, Some(name));
            assert_eq!(scan.globals, plain.globals);
            assert_eq!(scan.sklearn_versions, ["1.9.1"]);
            assert!(scan.joblib);
        }
        for (magic, name) in [
            (&b"BZh91AY"[..], "bz2"),
            (b"\xfd7zXZ\0\0", "xz"),
            (b"\x5d\0\0\x80", "lzma"),
            (b"\x04\x22\x4d\x18", "lz4"),
        ] {
            let err = scan_bytes(magic).unwrap_err();
            assert!(
                matches!(&err, PickleError::Unsupported(m) if m.starts_with(name)),
                "{err}"
            );
        }
        let corrupt = [0x78, 0x9c, 1, 2, 3, 4, 5];
        assert!(matches!(
            scan_bytes(&corrupt),
            Err(PickleError::Malformed { .. })
        ));
    }

    #[test]
    fn malicious_globals_are_refused() {
        let system = refusal(b"cos\nsystem\n(S'echo hi'\ntR.");
        assert_eq!(
            (system.global.to_string(), system.used),
            ("os.system".into(), Use::Called)
        );
        assert_eq!(
            system.to_string(),
            "the pickle calls `os.system`, which is not allowed: not an allowed module"
        );

        // STACK_GLOBAL whose strings come from the memo.
        let posix = [
            &b"\x80\x04"[..],
            &su("posix"),
            b"\x940",
            &su("system"),
            b"\x940h\x00h\x01\x93",
            &su("id"),
            b"\x85R.",
        ]
        .concat();
        let posix = refusal(&posix);
        assert_eq!(
            (posix.global.to_string(), posix.used),
            ("posix.system".into(), Use::Called)
        );

        // Python 2's __builtin__ is renamed to builtins for protocols below 3.
        let eval = refusal(b"\x80\x02c__builtin__\neval\nX\x03\x00\x00\x001+1\x85R.");
        assert_eq!(eval.global.to_string(), "builtins.eval");
        let popen = refusal(b"(S'ls'\nisubprocess\nPopen\n.");
        assert_eq!(
            (popen.global.to_string(), popen.used),
            ("subprocess.Popen".into(), Use::Called)
        );
        let getattr = [&b"\x80\x04"[..], &sg("builtins", "getattr"), b")R."].concat();
        assert_eq!(refusal(&getattr).global.to_string(), "builtins.getattr");
        // Names are only taken from plain strings.
        let computed = [
            &b"\x80\x04"[..],
            &sg("builtins", "str"),
            b")R",
            &su("system"),
            b"\x93.",
        ]
        .concat();
        assert!(matches!(
            scan_bytes(&computed),
            Err(PickleError::Malformed { .. })
        ));
    }

    #[test]
    fn called_framework_functions_are_refused() {
        let called = [
            &b"\x80\x04"[..],
            &sg("sklearn.datasets", "dump_svmlight_file"),
            b")R.",
        ]
        .concat();
        let refused = refusal(&called);
        assert_eq!(refused.why, "loading would call a function");
        let referenced = [
            &b"\x80\x04"[..],
            &sg("sklearn.datasets", "dump_svmlight_file"),
            b".",
        ]
        .concat();
        AllowList::builtin()
            .check(&scan_bytes(&referenced).unwrap())
            .unwrap();

        let list = AllowList::builtin();
        let check = |module: &str, name: &str, used| list.allows(&Global::new(module, name), used);
        assert!(check("sklearn.tree._tree", "Tree", Use::Called).is_ok());
        assert!(check("sklearn.neighbors._kd_tree", "newObj", Use::Called).is_ok());
        assert!(check("sklearn._loss._loss", "CyHalfBinomialLoss", Use::Called).is_ok());
        assert!(check("scipy.sparse._csr", "csr_matrix", Use::Instantiated).is_ok());
        assert!(check("numpy", "float64", Use::Referenced).is_ok());
        assert!(check("numpy", "float64", Use::Called).is_err());
        assert!(check("numpy", "load", Use::Referenced).is_err());
        assert!(check("numpy.lib.npyio", "load", Use::Called).is_err());
        assert!(check("sklearn.tree._tree", "Tree.__reduce__", Use::Referenced).is_err());
        assert!(check("sklearn.base", "__builtins__", Use::Referenced).is_err());
        assert!(check("sklearn_evil", "Tree", Use::Called).is_err());
        assert!(check("sklearn.utils._testing", "TempMemmap", Use::Called).is_err());
        assert!(check("sklearn.datasets._base", "makedirs", Use::Referenced).is_err());
        assert!(check("scipy.io", "FortranFile", Use::Called).is_err());
        assert!(check(
            "scipy.optimize._differentiable_functions",
            "ScalarFunction",
            Use::Called
        )
        .is_err());
        assert!(check("joblib.numpy_pickle", "NumpyArrayWrapper", Use::Called).is_err());
        assert!(check("builtins", "open", Use::Referenced).is_err());
        assert!(check("collections", "OrderedDict", Use::Called).is_ok());
    }

    #[test]
    fn extra_entries_allow_custom_globals() {
        let custom = [&b"\x80\x04"[..], &sg("mypkg.models", "MyModel"), b")R."].concat();
        let scan = scan_bytes(&custom).unwrap();
        assert!(AllowList::builtin().check(&scan).is_err());
        AllowList::builtin()
            .with_extra(&["mypkg.*".into()])
            .check(&scan)
            .unwrap();
        AllowList::builtin()
            .with_extra(&["mypkg.models.MyModel".into()])
            .check(&scan)
            .unwrap();
        assert!(AllowList::builtin()
            .with_extra(&["mypk.*".into(), "mypkg.Other".into()])
            .check(&scan)
            .is_err());
        let dotted = [
            &b"\x80\x04"[..],
            &sg("mypkg.models", "MyModel.__init__"),
            b".",
        ]
        .concat();
        assert!(AllowList::builtin()
            .with_extra(&["mypkg.*".into()])
            .check(&scan_bytes(&dotted).unwrap())
            .is_err());
    }

    #[test]
    fn protocol_0_text_pickle() {
        let bytes = b"(dp0\nVa\np1\nccollections\nOrderedDict\np2\n(tRp3\nVk\np4\nF1.5\nssVb\np5\n(lp6\nI1\naL1180591620717411303424L\naVx\np7\nasVd\np8\ncdatetime\ndate\np9\n(c_codecs\nencode\np10\n(V\x07\xe4\x01\x02\np11\nVlatin1\np12\ntp13\nRp14\ntp15\nRp16\ns.";
        let scan = scan_bytes(bytes).unwrap();
        assert_eq!(scan.protocol, 0);
        assert_eq!(uses(&scan, "collections.OrderedDict"), Some(Use::Called));
        assert_eq!(uses(&scan, "datetime.date"), Some(Use::Called));
        assert_eq!(uses(&scan, "_codecs.encode"), Some(Use::Called));
        AllowList::builtin().check(&scan).unwrap();
    }

    /// A joblib NumpyArrayWrapper (as joblib 1.6 writes it) for `dtype`, `shape` and the dtype's flags.
    fn wrapper(typestr: &str, shape: &[u8], flags: u8) -> Vec<u8> {
        [
            &sg("joblib.numpy_pickle", "NumpyArrayWrapper")[..],
            b")\x81}(",
            &su("subclass"),
            &sg("numpy", "ndarray"),
            &su("shape"),
            shape,
            &su("order"),
            &su("C"),
            &su("dtype"),
            &sg("numpy", "dtype"),
            &su(typestr),
            b"\x89\x88\x87R(K\x03",
            &su("|"),
            b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK",
            &[flags],
            b"tb",
            &su("allow_mmap"),
            b"\x89",
            &su("numpy_array_alignment_bytes"),
            b"K\x10ub",
        ]
        .concat()
    }

    #[test]
    fn joblib_arrays_are_skipped_exactly() {
        // Two f8 after a 3-byte padding; the data looks like a GLOBAL but is never read as one.
        let data = b"cos\nsystem\n.....";
        let raw = [
            &b"\x80\x04"[..],
            &wrapper("<f8", b"K\x02\x85", 0),
            b"\x03\xff\xff\xff",
            data,
            b".",
        ]
        .concat();
        let scan = scan_bytes(&raw).unwrap();
        assert!(scan.joblib);
        assert_eq!(uses(&scan, "os.system"), None);
        AllowList::builtin().check(&scan).unwrap();
        // One byte short, or the array inside a frame.
        assert!(matches!(
            scan_bytes(&raw[..raw.len() - 2]),
            Err(PickleError::Malformed { .. })
        ));
        let body = [&wrapper("<f8", b"K\x02\x85", 0)[..], b"N0"].concat();
        let framed = [
            &b"\x80\x04\x95"[..],
            &(body.len() as u64).to_le_bytes(),
            &body,
            b"\x03\xff\xff\xff",
            data,
            b".",
        ]
        .concat();
        assert!(matches!(
            scan_bytes(&framed),
            Err(PickleError::Malformed { .. })
        ));

        // Object arrays are a nested pickle, whose globals count.
        let nested = [&b"\x80\x05cos\nsystem\n"[..], &su("id"), b"\x85R."].concat();
        let raw = [
            &b"\x80\x04"[..],
            &wrapper("O8", b"K\x01\x85", 63),
            &nested,
            b".",
        ]
        .concat();
        let refused = refusal(&raw);
        assert_eq!(
            (refused.global.to_string(), refused.used),
            ("os.system".into(), Use::Called)
        );
        // The flags, not the type string, say whether numpy reads objects.
        let raw = [
            &b"\x80\x04"[..],
            &wrapper("<f8", b"K\x01\x85", 1),
            &nested,
            b".",
        ]
        .concat();
        assert_eq!(refusal(&raw).global.to_string(), "os.system");

        // Absurd shapes: an overflow is refused, a huge array runs out of data without allocating it.
        let huge = b"\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\x06\x00\x00\x00\x00\x00\x01\x86";
        let raw = [&b"\x80\x04"[..], &wrapper("<f8", huge, 0), b"\x01\xff."].concat();
        assert!(matches!(scan_bytes(&raw), Err(PickleError::Unsupported(_))));
        let raw = [
            &b"\x80\x04"[..],
            &wrapper("<f8", &[&huge[..8], b"\x85"].concat(), 0),
            b"\x01\xff.",
        ]
        .concat();
        assert!(matches!(
            scan_bytes(&raw),
            Err(PickleError::Malformed { .. })
        ));
        let raw = [
            &b"\x80\x04"[..],
            &wrapper("<f8", b"J\xff\xff\xff\xff\x85", 0),
            b".",
        ]
        .concat();
        assert!(matches!(scan_bytes(&raw), Err(PickleError::Unsupported(_))));
        let raw = [&b"\x80\x04"[..], &wrapper("<g12", b"K\x01\x85", 0), b"."].concat();
        assert!(matches!(scan_bytes(&raw), Err(PickleError::Unsupported(m)) if m.contains("<g12")));
    }

    #[test]
    fn dtype_item_sizes() {
        let size = |s: &str| parse_dtype(s).map(|d| (d.itemsize, d.has_object));
        assert_eq!(size("<f8"), Ok((8, false)));
        assert_eq!(size("b1"), Ok((1, false)));
        assert_eq!(size(">i4"), Ok((4, false)));
        assert_eq!(size("|u1"), Ok((1, false)));
        assert_eq!(size("=c16"), Ok((16, false)));
        assert_eq!(size("f2"), Ok((2, false)));
        assert_eq!(size("<U5"), Ok((20, false)));
        assert_eq!(size("|S3"), Ok((3, false)));
        assert_eq!(size("V12"), Ok((12, false)));
        assert_eq!(size("M8"), Ok((8, false)));
        assert_eq!(size("O8"), Ok((8, true)));
        for bad in ["", "f3", "i16", "float64", "<", "U5x", "a5", "O4"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_and_truncated_input() {
        assert!(matches!(scan_bytes(b""), Err(PickleError::NotAPickle(_))));
        assert!(matches!(
            scan_bytes(b"{\"a\": 1}"),
            Err(PickleError::NotAPickle(_))
        ));
        assert!(matches!(
            scan_bytes(b"\x80\x04N"),
            Err(PickleError::Malformed { offset: 3, .. })
        ));
        for file in ["sklearn_logreg.pkl", "sklearn_logreg.joblib"] {
            let bytes = model(file);
            for end in 1..bytes.len() {
                let err = scan_bytes(&bytes[..end]).unwrap_err();
                assert!(
                    matches!(err, PickleError::Malformed { .. }),
                    "{file}[..{end}]: {err}"
                );
            }
        }
        // Lengths far beyond the data: refused without allocating them.
        let huge = (1u64 << 62).to_le_bytes();
        for op in [0x8d, 0x8e, 0x96, 0x95] {
            let bytes = [&b"\x80\x05"[..], &[op], &huge, b"N."].concat();
            assert!(
                matches!(scan_bytes(&bytes), Err(PickleError::Malformed { .. })),
                "opcode {op:#x}"
            );
        }
        for bytes in [
            &b"\x80\x05\x8d\xff\xff\xff\xff\xff\xff\xff\xff"[..],
            b"\x80\x02\x8b\xff\xff\xff\x7f\x00.",
            b"T\xff\xff\xff\xffN.",
            b"X\xff\xff\xff\xff.",
            b"\x80\x04h\x07.",
            b"N\x80\x09.",
            b"N(.",
            b"0.",
            b"N\x85\x86.",
            b"]N\x93.",
        ] {
            assert!(
                matches!(scan_bytes(bytes), Err(PickleError::Malformed { .. })),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn unfollowable_pickles_are_unsupported() {
        let cases: &[(Vec<u8>, &str)] = &[
            (b"\x80\x05Pid\n.".to_vec(), "PERSID"),
            (b"\x80\x05N\x82\x01.".to_vec(), "EXT1"),
            (b"\x80\x05\x97.".to_vec(), "NEXT_BUFFER"),
            (
                [
                    &b"\x80\x04"[..],
                    &sg("sklearn.base", "BaseEstimator"),
                    b"}b.",
                ]
                .concat(),
                "BUILD would set attributes",
            ),
            (
                [&b"\x80\x04"[..], &sg("builtins", "list"), b")R)R."].concat(),
                "not a named global",
            ),
            (
                [&b"\x80\x04"[..], &sg("sklearn.base", "X"), b"]a."].concat(),
                "would change the global",
            ),
            (
                [
                    &b"\x80\x04"[..],
                    &sg("numpy", "dtype"),
                    &su("f8"),
                    b"\x85R.",
                ]
                .concat(),
                "copy=True",
            ),
            (
                [
                    &b"\x80\x04"[..],
                    &sg("joblib.numpy_pickle", "NDArrayWrapper"),
                    b".",
                ]
                .concat(),
                "side files",
            ),
            (b"\x80\x02cQueue\nQueue\n.".to_vec(), "Python 2"),
            (
                [
                    b"\x80\x04".to_vec(),
                    b"N".to_vec(),
                    vec![0x85; 2000],
                    b".".to_vec(),
                ]
                .concat(),
                "nests tuples",
            ),
            (
                [b"\x80\x04".to_vec(), vec![b'('; 20_000], b"N.".to_vec()].concat(),
                "MARKs",
            ),
        ];
        for (bytes, message) in cases {
            match scan_bytes(bytes) {
                Err(PickleError::Unsupported(m)) => assert!(m.contains(message), "{m} / {message}"),
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn mutated_models_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for file in [
            "sklearn_logreg.joblib",
            "sklearn_logreg.pkl",
            "sklearn_ridge.joblib",
        ] {
            let original = model(file);
            for _ in 0..1500 {
                let mut bytes = original.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] = next() as u8;
                }
                let _ = scan_bytes(&bytes);
            }
        }
    }
}
