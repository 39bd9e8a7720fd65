//! PEP 440 versions and ranges, as far as a ModelRuntime's `framework.versions` and a ModelDeployment's
//! `spec.model.frameworkVersion` use them: the grammar of `api::VERSION_RANGE_PATTERN` and `api::VERSION_PATTERN`
//! (normal forms only), ordered as PEP 440 orders them.

use std::cmp::Ordering;
use std::fmt;

/// A version: release numbers, then an optional pre-release (a, b, rc), post-release and development release.
/// A local label (`+cpu`) is read and does not count in comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    release: Vec<u64>,
    pre: Option<(PreRelease, u64)>,
    post: Option<u64>,
    dev: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PreRelease {
    Alpha,
    Beta,
    Candidate,
}

/// What a version sorts by: the release padded with zeros, then PEP 440's suffix order (a development release
/// alone < pre-releases < the release < post-releases; within each, a development release comes first).
type SortKey = (
    Vec<u64>,
    (i8, Option<PreRelease>, u64),
    (i8, u64),
    (i8, u64),
);

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let text = match text.split_once('+') {
            Some((version, local)) if is_local_label(local) => version,
            Some(_) => return None,
            None => text,
        };
        let mut rest = text;
        let release = numbers(&mut rest)?;
        let pre = [
            ("rc", PreRelease::Candidate),
            ("a", PreRelease::Alpha),
            ("b", PreRelease::Beta),
        ]
        .into_iter()
        .find_map(|(tag, kind)| Some((kind, suffix_number(&mut rest, tag)?)));
        let post = suffix_number(&mut rest, ".post");
        let dev = suffix_number(&mut rest, ".dev");
        rest.is_empty().then_some(Version {
            release,
            pre,
            post,
            dev,
        })
    }

    fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    fn sort_key(&self) -> SortKey {
        let mut release = self.release.clone();
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        let pre = match (self.pre, self.post, self.dev) {
            (None, None, Some(_)) => (-1, None, 0),
            (Some((kind, n)), _, _) => (0, Some(kind), n),
            (None, _, _) => (1, None, 0),
        };
        let post = self.post.map_or((-1, 0), |n| (0, n));
        let dev = self.dev.map_or((1, 0), |n| (0, n));
        (release, pre, post, dev)
    }

    /// Whether the two have the same release numbers (`1.9` and `1.9.0` do).
    fn same_release(&self, other: &Version) -> bool {
        let length = self.release.len().max(other.release.len());
        (0..length).all(|i| {
            self.release.get(i).copied().unwrap_or(0) == other.release.get(i).copied().unwrap_or(0)
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let release: Vec<String> = self.release.iter().map(u64::to_string).collect();
        f.write_str(&release.join("."))?;
        if let Some((kind, n)) = self.pre {
            let tag = match kind {
                PreRelease::Alpha => "a",
                PreRelease::Beta => "b",
                PreRelease::Candidate => "rc",
            };
            write!(f, "{tag}{n}")?;
        }
        if let Some(n) = self.post {
            write!(f, ".post{n}")?;
        }
        if let Some(n) = self.dev {
            write!(f, ".dev{n}")?;
        }
        Ok(())
    }
}

/// A local label: dot-separated parts of lowercase letters and digits.
fn is_local_label(text: &str) -> bool {
    text.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// Dot-separated numbers at the start of `rest`, taken off it.
fn numbers(rest: &mut &str) -> Option<Vec<u64>> {
    let mut release = Vec::new();
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        release.push(rest[..digits].parse().ok()?);
        *rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) => *rest = after,
            _ => return Some(release),
        }
    }
}

/// `tag` followed by a number at the start of `rest`, taken off it.
fn suffix_number(rest: &mut &str, tag: &str) -> Option<u64> {
    let after = rest.strip_prefix(tag)?;
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    let number = after[..digits].parse().ok()?;
    *rest = &after[digits..];
    Some(number)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Equal,
    NotEqual,
    AtMost,
    AtLeast,
    Below,
    Above,
    Compatible,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Clause {
    Compare(Operator, Version),
    /// `==1.9.*` (or `!=1.9.*` when negated): the release starts with these numbers.
    Prefix {
        numbers: Vec<u64>,
        negated: bool,
    },
}

/// A range: every clause must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    clauses: Vec<Clause>,
}

impl Range {
    pub fn parse(text: &str) -> Option<Range> {
        let clauses = text
            .split(',')
            .map(|clause| parse_clause(clause.trim()))
            .collect::<Option<Vec<Clause>>>()?;
        Some(Range { clauses })
    }

    pub fn contains(&self, version: &Version) -> bool {
        self.clauses.iter().all(|clause| holds(clause, version))
    }
}

fn parse_clause(text: &str) -> Option<Clause> {
    let operators = [
        ("~=", Operator::Compatible),
        ("==", Operator::Equal),
        ("!=", Operator::NotEqual),
        ("<=", Operator::AtMost),
        (">=", Operator::AtLeast),
        ("<", Operator::Below),
        (">", Operator::Above),
    ];
    let (operator, rest) = operators
        .into_iter()
        .find_map(|(symbol, operator)| Some((operator, text.strip_prefix(symbol)?.trim_start())))?;
    if let Some(prefix) = rest.strip_suffix(".*") {
        let negated = match operator {
            Operator::Equal => false,
            Operator::NotEqual => true,
            _ => return None,
        };
        let mut digits = prefix;
        let numbers = numbers(&mut digits)?;
        return digits
            .is_empty()
            .then_some(Clause::Prefix { numbers, negated });
    }
    if rest.contains('+') {
        return None;
    }
    let version = Version::parse(rest)?;
    if operator == Operator::Compatible && version.release.len() < 2 {
        return None;
    }
    Some(Clause::Compare(operator, version))
}

fn holds(clause: &Clause, version: &Version) -> bool {
    match clause {
        Clause::Prefix { numbers, negated } => {
            let starts = numbers
                .iter()
                .enumerate()
                .all(|(i, n)| version.release.get(i).copied().unwrap_or(0) == *n);
            starts != *negated
        }
        Clause::Compare(operator, bound) => match operator {
            Operator::Equal => version.sort_key() == bound.sort_key(),
            Operator::NotEqual => version.sort_key() != bound.sort_key(),
            Operator::AtMost => version <= bound,
            Operator::AtLeast => version >= bound,
            // PEP 440: below a final release excludes that release's pre-releases (<1.10 refuses 1.10rc1), above
            // one excludes its post-releases.
            Operator::Below => {
                version < bound
                    && !(version.is_prerelease()
                        && !bound.is_prerelease()
                        && version.same_release(bound))
            }
            Operator::Above => {
                version > bound
                    && !(version.post.is_some()
                        && bound.post.is_none()
                        && version.same_release(bound))
            }
            // ~=1.9.2 is >=1.9.2 and ==1.9.*.
            Operator::Compatible => {
                let prefix = &bound.release[..bound.release.len() - 1];
                version >= bound
                    && prefix
                        .iter()
                        .enumerate()
                        .all(|(i, n)| version.release.get(i).copied().unwrap_or(0) == *n)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    fn within(range: &str, version: &str) -> bool {
        Range::parse(range)
            .unwrap_or_else(|| panic!("{range} parses"))
            .contains(&v(version))
    }

    #[test]
    fn versions_sort_as_pep_440_orders_them() {
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
        assert_eq!(v("2.0.3+cpu").cmp(&v("2.0.3")), Ordering::Equal);
        assert_eq!(v("1.5.2.post1").to_string(), "1.5.2.post1");
    }

    #[test]
    fn only_normal_forms_parse() {
        for bad in [
            "", "1.", ".1", "v1.2", "1.2-rc1", "1.2 ", "1.2+", "1.2+CPU", "1..2", "one",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        for bad in [
            "",
            "1.9",
            ">=",
            ">=1.9,",
            "=>1.9",
            ">=1.*",
            "~=1",
            "==1.9+cpu",
            ">= 1.9 <2",
        ] {
            assert_eq!(Range::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges_contain_what_pep_440_says() {
        assert!(within(">=1.9,<1.10", "1.9.1"));
        assert!(within(">=1.9,<1.10", "1.9"));
        assert!(!within(">=1.9,<1.10", "1.10.0"));
        assert!(!within(">=1.9,<1.10", "1.5.2"));
        assert!(
            !within(">=1.9,<1.10", "1.10rc1"),
            "a pre-release of the bound"
        );
        assert!(within(">=1.0, <=3.2", "3.2.0"));
        assert!(!within(">=1.0,<=3.2", "3.2.1"));
        assert!(within("<=4.7", "4.6.0"));
        assert!(within("==1.9.*", "1.9.2"));
        assert!(!within("==1.9.*", "1.10"));
        assert!(within("!=1.9.*", "1.10"));
        assert!(within("~=1.9.2", "1.9.7"));
        assert!(!within("~=1.9.2", "1.10.0"));
        assert!(within("~=2.1", "2.9"));
        assert!(!within("~=2.1", "3.0"));
        assert!(within("==1.9", "1.9.0"));
        assert!(!within("!=1.9.1", "1.9.1"));
        assert!(within(">1.9", "1.9.1"));
        assert!(!within(">1.9", "1.9.post1"), "a post-release of the bound");
    }
}
