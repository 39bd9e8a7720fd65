//! PEP 440 versions and specifiers, and PEP 503 package names: the one reading both sides use.
//!
//! The operator compares a ModelDeployment's declared framework version with the range a ModelRuntime serves;
//! ferry-server compares what a model file and its requirements.txt record with the packages its Python worker
//! has. Both read versions and ranges here, so a version a runtime's range admits is one its server loads.
//!
//! Every PEP 440 spelling reads (`v1.0`, `1.0-ALPHA.1`, `1.0-1`, `1.0+Ubuntu-1`) and compares in PEP 440's order;
//! the operator's admission (the CRDs' patterns) takes only normal forms. Specifiers judge pre-releases by
//! ordering alone, as `pip check` does: `>=1.0` accepts 2.0rc1, `<2` does not (see [`Specifiers::contains`]).
//! Checked against Python's `packaging` 26.4.

use std::cmp::Ordering;
use std::fmt;

/// A PEP 503 normalised package name: lowercase, each run of `-`, `_` and `.` as one `-`.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

/// A version or specifier that is not PEP 440.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionError {
    Version(String),
    Specifier { spec: String, reason: &'static str },
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::Version(text) => write!(f, "'{text}' is not a PEP 440 version"),
            VersionError::Specifier { spec, reason } => {
                write!(f, "'{spec}' is not a version specifier: {reason}")
            }
        }
    }
}

impl std::error::Error for VersionError {}

/// A PEP 440 version: `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the spellings PEP 440 normalises
/// (`alpha`, `c`, `pre`, `rev`, `-1` as a post-release, separators `-`, `_`, `.`, a leading `v`).
#[derive(Debug, Clone, Default)]
pub struct Version {
    pub epoch: u64,
    pub release: Vec<u64>,
    pub pre: Option<(PreKind, u64)>,
    pub post: Option<u64>,
    pub dev: Option<u64>,
    pub local: Vec<LocalPart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreKind {
    Alpha,
    Beta,
    Rc,
}

/// A segment of a local version label (`+ubuntu.1`): numbers sort after words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalPart {
    Word(String),
    Number(u64),
}

/// At most this many release segments: far more than any real version.
const MAX_RELEASE_SEGMENTS: usize = 32;

impl Version {
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let error = || VersionError::Version(text.to_owned());
        let lower = text.trim().to_ascii_lowercase();
        let mut c = Cursor {
            s: lower.strip_prefix('v').unwrap_or(&lower).as_bytes(),
            i: 0,
        };
        let mut version = Version::default();
        let first = c.number().ok_or_else(error)?;
        if c.eat(b"!") {
            version.epoch = first;
            version.release.push(c.number().ok_or_else(error)?);
        } else {
            version.release.push(first);
        }
        while c.peek() == Some(b'.') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            version.release.push(c.number().ok_or_else(error)?);
            if version.release.len() > MAX_RELEASE_SEGMENTS {
                return Err(error());
            }
        }
        // Pre-release: [-_.]?(a|alpha|b|beta|c|rc|pre|preview)[-_.]?N?
        let save = c.i;
        c.separator();
        let pre = [
            ("preview", PreKind::Rc),
            ("alpha", PreKind::Alpha),
            ("beta", PreKind::Beta),
            ("pre", PreKind::Rc),
            ("rc", PreKind::Rc),
            ("a", PreKind::Alpha),
            ("b", PreKind::Beta),
            ("c", PreKind::Rc),
        ]
        .into_iter()
        .find(|(word, _)| c.eat(word.as_bytes()));
        match pre {
            Some((_, kind)) => version.pre = Some((kind, c.optional_number().ok_or_else(error)?)),
            None => c.i = save,
        }
        // Post-release: -N, or [-_.]?(post|rev|r)[-_.]?N?
        let save = c.i;
        if c.peek() == Some(b'-') && c.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
            c.i += 1;
            version.post = Some(c.number().ok_or_else(error)?);
        } else {
            c.separator();
            if ["post", "rev", "r"]
                .iter()
                .any(|word| c.eat(word.as_bytes()))
            {
                version.post = Some(c.optional_number().ok_or_else(error)?);
            } else {
                c.i = save;
            }
        }
        // Development release: [-_.]?dev[-_.]?N?
        let save = c.i;
        c.separator();
        if c.eat(b"dev") {
            version.dev = Some(c.optional_number().ok_or_else(error)?);
        } else {
            c.i = save;
        }
        // Local label: +[a-z0-9]+([-_.][a-z0-9]+)*
        if c.eat(b"+") {
            let rest =
                std::str::from_utf8(c.s.get(c.i..).unwrap_or_default()).map_err(|_| error())?;
            for part in rest.split(['-', '_', '.']) {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(error());
                }
                version.local.push(match part.parse::<u64>() {
                    Ok(n) if part.bytes().all(|b| b.is_ascii_digit()) => LocalPart::Number(n),
                    _ if part.bytes().all(|b| b.is_ascii_digit()) => return Err(error()),
                    _ => LocalPart::Word(part.to_owned()),
                });
            }
            c.i = c.s.len();
        }
        if c.i != c.s.len() {
            return Err(error());
        }
        Ok(version)
    }

    pub fn major(&self) -> u64 {
        self.release.first().copied().unwrap_or(0)
    }

    pub fn minor(&self) -> u64 {
        self.release.get(1).copied().unwrap_or(0)
    }

    /// A pre-release or a development release (PEP 440's "pre-release" for specifier purposes).
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    /// Ordering without the local label: how specifiers compare (`==1.0` holds for 1.0+cpu).
    pub fn cmp_public(&self, other: &Version) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| cmp_release(&self.release, &other.release))
            .then_with(|| self.pre_key().cmp(&other.pre_key()))
            .then_with(|| {
                self.post
                    .map_or(-1, i128::from)
                    .cmp(&other.post.map_or(-1, i128::from))
            })
            .then_with(|| {
                self.dev
                    .map_or(i128::MAX, i128::from)
                    .cmp(&other.dev.map_or(i128::MAX, i128::from))
            })
    }

    /// A development release of a final version sorts before its pre-releases; a final version after them.
    fn pre_key(&self) -> (i8, Option<(PreKind, u64)>) {
        match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => (-1, None),
            (None, _, _) => (1, None),
            (Some(pre), _, _) => (0, Some(pre)),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.cmp_public(other)
            .then_with(|| self.local.cmp(&other.local))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Version) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    /// The normal form: `1.0-ALPHA.1` shows as `1.0a1`, `v1.0-1` as `1.0.post1`; release numbers as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}!", self.epoch)?;
        }
        for (i, n) in self.release.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{n}")?;
        }
        if let Some((kind, n)) = self.pre {
            let tag = match kind {
                PreKind::Alpha => "a",
                PreKind::Beta => "b",
                PreKind::Rc => "rc",
            };
            write!(f, "{tag}{n}")?;
        }
        if let Some(n) = self.post {
            write!(f, ".post{n}")?;
        }
        if let Some(n) = self.dev {
            write!(f, ".dev{n}")?;
        }
        for (i, part) in self.local.iter().enumerate() {
            f.write_str(if i == 0 { "+" } else { "." })?;
            match part {
                LocalPart::Word(word) => f.write_str(word)?,
                LocalPart::Number(n) => write!(f, "{n}")?,
            }
        }
        Ok(())
    }
}

/// Release segments compared as if padded with zeros (`1.9` and `1.9.0` are equal).
pub fn cmp_release(a: &[u64], b: &[u64]) -> Ordering {
    let len = a.len().max(b.len());
    (0..len)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.s.get(self.i.checked_add(offset)?).copied()
    }

    fn eat(&mut self, word: &[u8]) -> bool {
        let matches = self
            .s
            .get(self.i..)
            .is_some_and(|rest| rest.starts_with(word));
        if matches {
            self.i += word.len();
        }
        matches
    }

    fn separator(&mut self) {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.i += 1;
        }
    }

    /// Digits as a number; None when there are none or they overflow.
    fn number(&mut self) -> Option<u64> {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(self.s.get(start..self.i)?)
            .ok()?
            .parse()
            .ok()
    }

    /// `[-_.]?N`, or 0 when no number follows (PEP 440's implicit number).
    fn optional_number(&mut self) -> Option<u64> {
        let save = self.i;
        self.separator();
        if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.number()
        } else {
            self.i = save;
            Some(0)
        }
    }
}

/// A comma-separated PEP 440 specifier set (`>=1,<2`, `~=1.9`, `==1.9.*`); empty accepts every version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specifiers {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    op: Op,
    /// The version after the operator (for `===`, the text as written).
    text: String,
    version: Option<Version>,
    wildcard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Compatible,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Arbitrary,
}

impl Specifiers {
    pub fn parse(spec: &str) -> Result<Specifiers, VersionError> {
        let error = |reason| VersionError::Specifier {
            spec: spec.to_owned(),
            reason,
        };
        let mut clauses = Vec::new();
        if spec.trim().is_empty() {
            return Ok(Specifiers { clauses });
        }
        // pip accepts one trailing comma (`>=1.0,`).
        let body = spec.trim();
        let body = body.strip_suffix(',').unwrap_or(body);
        for part in body.split(',') {
            let part = part.trim();
            let (op, rest) = [
                ("===", Op::Arbitrary),
                ("~=", Op::Compatible),
                ("==", Op::Equal),
                ("!=", Op::NotEqual),
                ("<=", Op::LessEqual),
                (">=", Op::GreaterEqual),
                ("<", Op::Less),
                (">", Op::Greater),
            ]
            .into_iter()
            .find_map(|(token, op)| part.strip_prefix(token).map(|rest| (op, rest.trim())))
            .ok_or_else(|| error("each clause starts with ==, !=, <, <=, >, >=, ~= or ==="))?;
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(error("each clause has one version after its operator"));
            }
            if op == Op::Arbitrary {
                clauses.push(Clause {
                    op,
                    text: rest.to_owned(),
                    version: None,
                    wildcard: false,
                });
                continue;
            }
            let (text, wildcard) = match rest.strip_suffix(".*") {
                Some(prefix) if matches!(op, Op::Equal | Op::NotEqual) => (prefix, true),
                Some(_) => return Err(error("a .* wildcard is only allowed with == and !=")),
                None => (rest, false),
            };
            let version = Version::parse(text).map_err(|_| error("not a PEP 440 version"))?;
            if wildcard
                && (version.is_prerelease() || version.post.is_some() || !version.local.is_empty())
            {
                return Err(error("a .* wildcard follows release numbers only"));
            }
            if !version.local.is_empty() && !matches!(op, Op::Equal | Op::NotEqual) {
                return Err(error(
                    "a local version label (+...) is only allowed with == and !=",
                ));
            }
            if op == Op::Compatible && version.release.len() < 2 {
                return Err(error("~= needs at least two release numbers (~=1.9)"));
            }
            clauses.push(Clause {
                op,
                text: text.to_owned(),
                version: Some(version),
                wildcard,
            });
        }
        Ok(Specifiers { clauses })
    }

    /// The version of a lone `==V` (no wildcard) or `===V`: the version the requirement pins.
    pub fn exact_pin(&self) -> Option<&str> {
        match self.clauses.as_slice() {
            [clause] if matches!(clause.op, Op::Equal | Op::Arbitrary) && !clause.wildcard => {
                Some(&clause.text)
            }
            _ => None,
        }
    }

    /// Whether `version` (whose text is `raw`, for `===`) satisfies every clause.
    ///
    /// A pre-release is judged by ordering alone (`pip check`, not `pip install`): no clause refuses it for being
    /// one. What PEP 440 excludes still is: `<V` refuses V's own pre-releases unless V is one, `>V` refuses V's
    /// post-releases unless V is a post- or development release.
    pub fn contains(&self, version: &Version, raw: &str) -> bool {
        self.clauses
            .iter()
            .all(|clause| clause.contains(version, raw))
    }
}

impl Clause {
    fn contains(&self, candidate: &Version, raw: &str) -> bool {
        let Some(spec) = &self.version else {
            // `===` compares the strings themselves.
            return raw.trim().eq_ignore_ascii_case(&self.text);
        };
        let public = candidate.cmp_public(spec);
        match self.op {
            Op::Equal | Op::NotEqual => {
                let equal = if self.wildcard {
                    prefix_match(candidate, spec)
                } else if spec.local.is_empty() {
                    public.is_eq()
                } else {
                    candidate.cmp(spec).is_eq()
                };
                equal == (self.op == Op::Equal)
            }
            Op::Compatible => {
                let prefix = Version {
                    epoch: spec.epoch,
                    release: spec
                        .release
                        .get(..spec.release.len().saturating_sub(1))
                        .unwrap_or_default()
                        .to_vec(),
                    ..Version::default()
                };
                public.is_ge() && prefix_match(candidate, &prefix)
            }
            Op::LessEqual => public.is_le(),
            Op::GreaterEqual => public.is_ge(),
            // `<V` excludes V's own pre-releases unless V is one: below a final V means below `V.dev0`.
            Op::Less if spec.is_prerelease() => public.is_lt(),
            Op::Less => candidate
                .cmp_public(&Version {
                    dev: Some(0),
                    ..spec.clone()
                })
                .is_lt(),
            // `>V` excludes V's post-releases (and local versions) unless V is a post- or development release:
            // those share V's release and pre-release segments.
            Op::Greater => {
                let same_family = candidate.epoch == spec.epoch
                    && cmp_release(&candidate.release, &spec.release).is_eq()
                    && spec.post.is_none()
                    && spec.dev.is_none()
                    && candidate.pre == spec.pre;
                public.is_gt() && !same_family
            }
            Op::Arbitrary => false,
        }
    }
}

/// `==prefix.*`: the same epoch, and the candidate's release (padded with zeros) starts with the prefix's.
fn prefix_match(candidate: &Version, prefix: &Version) -> bool {
    candidate.epoch == prefix.epoch
        && prefix
            .release
            .iter()
            .enumerate()
            .all(|(i, &n)| candidate.release.get(i).copied().unwrap_or(0) == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn accepts(spec: &str, version: &str) -> bool {
        Specifiers::parse(spec)
            .unwrap()
            .contains(&v(version), version)
    }

    #[test]
    fn versions_order_as_pep_440_says() {
        let ordered = [
            "1.0.dev0",
            "1.0a1",
            "1.0a2.dev1",
            "1.0a2",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+local",
            "1.0.post1.dev0",
            "1.0.post1",
            "1.0.1",
            "1.1",
            "2!0.1",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1.0-ALPHA.1"), v("1.0a1"));
        assert_eq!(v("v1.0c1"), v("1.0rc1"));
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0rev"), v("1.0.post0"));
        assert_eq!(v("1.0.preview2"), v("1.0rc2"));
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "x",
            "1.0+",
            "1.0+a..b",
            "1.0 2",
            "1.0foo",
            "99999999999999999999999",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specifiers_follow_pep_440() {
        assert!(accepts("==1.9.1", "1.9.1"));
        assert!(accepts("==1.9.1", "1.9.1.0"));
        assert!(accepts("==1.9.1", "1.9.1+cpu"));
        assert!(!accepts("==1.9.1+cpu", "1.9.1"));
        assert!(!accepts("==1.9.1", "1.9.2"));
        assert!(accepts("==1.9.*", "1.9.7"));
        assert!(accepts("==1.9.*", "1.9"));
        assert!(accepts("==1.9.*", "1.9.0rc1"));
        assert!(!accepts("==1.9.*", "1.10.0"));
        assert!(!accepts("!=1.9.*", "1.9.3"));
        assert!(accepts("!=1.9.*", "1.8.3"));
        assert!(accepts("!=1.9.0", "1.9.1"));
        assert!(!accepts("!=1.9.0", "1.9"));
        assert!(accepts("~=1.9", "1.9.1"));
        assert!(accepts("~=1.9", "1.12"));
        assert!(!accepts("~=1.9", "2.0"));
        assert!(!accepts("~=1.9", "1.8.9"));
        assert!(accepts("~=1.9.1", "1.9.5"));
        assert!(!accepts("~=1.9.1", "1.10.0"));
        assert!(!accepts("~=1.9.1", "1.9.0"));
        assert!(accepts(">=1,<2", "1.9.1"));
        assert!(!accepts(">=1,<2", "2.0"));
        assert!(accepts(">= 1.0 , != 1.5", "1.6"));
        assert!(accepts("<=1.9.1", "1.9.1"));
        assert!(accepts(">1.9", "1.9.1"));
        assert!(!accepts(">1.9", "1.9.post1"));
        assert!(accepts(">1.9.post1", "1.9.post2"));
        assert!(!accepts(">1.9", "1.9+local"));
        assert!(accepts("===1.9.1", "1.9.1"));
        assert!(!accepts("===1.9.1", "1.9.1.0"));
        assert!(accepts("", "0.1"));
        // Installed pre-releases: ordering decides, and `<V` excludes V's own pre-releases.
        assert!(accepts(">=1.0", "2.0rc1"));
        assert!(!accepts("<2", "2.0rc1"));
        assert!(accepts("<2.0rc2", "2.0rc1"));
        assert!(accepts("<2", "1.9rc1"));
        assert!(!accepts(">=2.0", "2.0rc1"));
        assert!(accepts(">=2.0rc1", "2.0rc1"));
        assert!(accepts("==2.0rc1", "2.0rc1"));
        assert!(!accepts("==2.0", "2.0.dev3"));
        assert!(accepts(">=1,", "1.0"));
        for bad in [
            "1.0",
            "=1.0",
            "==",
            ">=1.*",
            "~=1",
            "==1.0rc1.*",
            "<1.0+local",
            "== 1.0 2.0",
            ",>=1",
            ",",
            ">=1,,",
            "=>1.0",
            "~=1.0.*",
            ">= 1.0 <2",
        ] {
            assert!(Specifiers::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_runtime_versions_order_and_show_their_normal_form() {
        let ordered = [
            "1.0.dev1",
            "1.0a1.dev1",
            "1.0a1",
            "1.0b2",
            "1.0rc1",
            "1.0",
            "1.0.post1.dev1",
            "1.0.post1",
            "1.1",
            "1.9",
            "1.9.1",
            "1.10",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(v("1.9").cmp(&v("1.9.0")), Ordering::Equal);
        // A local label counts in the order, not in a specifier's comparisons.
        assert_eq!(v("2.0.3+cpu").cmp_public(&v("2.0.3")), Ordering::Equal);
        assert!(v("2.0.3+cpu") > v("2.0.3"));
        for (written, normal) in [
            ("1.5.2.post1", "1.5.2.post1"),
            ("1.9.0", "1.9.0"),
            ("2.0.3+cpu", "2.0.3+cpu"),
            ("V1.0-ALPHA.1", "1.0a1"),
            ("1.0c1", "1.0rc1"),
            ("1.0-1", "1.0.post1"),
            ("1.0rev", "1.0.post0"),
            ("1.0.preview2-dev", "1.0rc2.dev0"),
            ("1!2.0+Ubuntu-01_b", "1!2.0+ubuntu.1.b"),
            (" 01.002 ", "1.2"),
        ] {
            assert_eq!(v(written).to_string(), normal, "{written}");
            assert_eq!(v(normal), v(written), "{written}");
        }
    }

    #[test]
    fn the_charts_runtime_ranges_and_bounds_with_suffixes() {
        for (range, version, contained) in [
            // ferry-python's ranges; `<1.10` refuses a pre-release of 1.10.
            (">=1.9,<1.10", "1.9", true),
            (">=1.9,<1.10", "1.10.0", false),
            (">=1.9,<1.10", "1.5.2", false),
            (">=1.9,<1.10", "1.10rc1", false),
            (">=1.0, <=3.2", "3.2.0", true),
            (">=1.0,<=3.2", "3.2.1", false),
            ("<=4.7", "4.6.0+cpu", true),
            // Bounds that are pre-, post- or development releases, as packaging 26.4 reads them: `<V` refuses
            // only V's own development releases, `>V` only V's own post-releases.
            ("<2.post1", "2rc1", true),
            ("<2.post1", "2.post0.dev1", true),
            ("<2.post1", "2.post1.dev0", false),
            (">1.9rc1", "1.9.post1", true),
            (">1.9rc1", "1.9rc1.post1", false),
            (">1.9.dev1", "1.9.post1", true),
            (">1.9.post1", "1.9.post2+cpu", true),
        ] {
            assert_eq!(accepts(range, version), contained, "{version} in {range}");
        }
    }

    #[test]
    fn names_normalise_as_pep_503_says() {
        assert_eq!(normalise_name("Foo.__Bar-_-baz"), "foo-bar-baz");
        assert_eq!(normalise_name(" Scikit_Learn "), "scikit-learn");
        assert_eq!(normalise_name("xgboost"), "xgboost");
    }

    #[test]
    fn errors_name_the_text_and_the_reason() {
        assert_eq!(
            Version::parse("one").unwrap_err().to_string(),
            "'one' is not a PEP 440 version"
        );
        assert_eq!(
            Specifiers::parse(">=1.*").unwrap_err().to_string(),
            "'>=1.*' is not a version specifier: a .* wildcard is only allowed with == and !="
        );
    }
}
