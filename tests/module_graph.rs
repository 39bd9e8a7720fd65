//! No module circles: in each crate of the workspace, modules do not use each other in a loop.
//!
//! A circle (`a` uses `b`, `b` uses `a`) usually means a type sits in the wrong module, and it makes both one
//! unit that can only be read, tested and changed together. The compiler accepts circles, so this test looks for
//! them. It reads each crate from its root through the `mod` declarations, and draws an arrow from a file to each
//! file whose module a path in it reaches: `use crate::…`, `use super::…`, `crate::x::…`, `child::…`, and paths
//! through a `use`d module (`use crate::a;` then `a::b::f()` reaches `a/b.rs`). A `mod` declaration alone is no
//! arrow, and code under `#[cfg(test)]` draws none: tests may reach across the layers they check.
//!
//! A module is its file and its folder (`a.rs` and `a/`). At each level of the tree, the modules directly inside
//! one module must not use each other in a loop, counting every arrow from a file of one to a file of another:
//! `rollout/in_place.rs` using `children/model_file.rs` is `rollout` using `children`. The enclosing module's own
//! file (`lib.rs`, `a.rs`) is no member of its level: it declares the modules inside it and may use them, and
//! they may use it (`super::X`).
//!
//! The reading is textual (no macro expansion); the tests at the end pin what it sees.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The crate roots checked, from the workspace root: each `[lib]` and `[[bin]]` root is a tree of its own.
const CRATE_ROOTS: [&str; 7] = [
    "src/lib.rs",
    "src/main.rs",
    "server-image/src/lib.rs",
    "server-image/src/main.rs",
    "contract/src/lib.rs",
    "xtask/src/lib.rs",
    "xtask/src/main.rs",
];

#[test]
fn no_crate_has_a_module_circle() {
    let workspace = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
    let mut report = String::new();
    let mut files = 0;
    for root in CRATE_ROOTS {
        let graph = ModuleGraph::read(&workspace, Path::new(root))
            .unwrap_or_else(|e| panic!("reading the crate at {root}: {e}"));
        files += graph.files.len();
        for circle in graph.circles() {
            writeln!(report, "in {root}: {}", circle.modules.join(" <-> ")).unwrap();
            for arrow in circle.arrows {
                writeln!(report, "  {arrow}").unwrap();
            }
        }
    }
    // The operator alone has dozens of files: a reader that found none would pass every check.
    assert!(files >= 50, "only {files} files read from {CRATE_ROOTS:?}");
    assert!(
        report.is_empty(),
        "module circles; move what both sides use into a module that uses neither:\n{report}"
    );
}

/// One crate: its files, and for each the files it uses with where it first does.
struct ModuleGraph {
    /// Paths from the workspace root, in the order they were read (the root first).
    files: Vec<PathBuf>,
    /// The module path of each file.
    file_modules: Vec<Vec<String>>,
    /// From file to file: the first line and path text of a use.
    arrows: BTreeMap<(usize, usize), (usize, String)>,
}

impl ModuleGraph {
    fn read(workspace: &Path, root: &Path) -> Result<Self, String> {
        let mut files: Vec<PathBuf> = Vec::new();
        let mut file_modules: Vec<Vec<String>> = Vec::new();
        // Module path -> index of the file that holds it (inline modules map to their file).
        let mut modules: HashMap<Vec<String>, usize> = HashMap::new();
        let mut parsed: Vec<Parsed> = Vec::new();
        let mut queue = vec![(root.to_path_buf(), Vec::<String>::new(), true)];
        while let Some((file, module, owns_folder)) = queue.pop() {
            let text = std::fs::read_to_string(workspace.join(&file))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let result = parse(&text, &module);
            if result.test_only {
                continue;
            }
            let index = files.len();
            files.push(file.clone());
            file_modules.push(module.clone());
            // A crate root or `mod.rs` keeps its children beside it; `a.rs` keeps them in `a/`.
            let folder = if owns_folder {
                file.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                file.with_extension("")
            };
            for inline in &result.inline_modules {
                modules.insert(inline.clone(), index);
            }
            for child in &result.children {
                let mut dir = folder.clone();
                for segment in &child.module[module.len()..child.module.len() - 1] {
                    dir.push(segment);
                }
                let name = child.module.last().expect("a child has a name");
                let (path, owns) = match &child.path_attribute {
                    // Relative to the declaring file's folder; the file then keeps its children beside it.
                    Some(path) => (file.parent().unwrap_or(Path::new("")).join(path), true),
                    None => {
                        let flat = dir.join(format!("{name}.rs"));
                        let nested = dir.join(name).join("mod.rs");
                        if workspace.join(&flat).is_file() {
                            (flat, false)
                        } else if workspace.join(&nested).is_file() {
                            (nested, true)
                        } else {
                            return Err(format!(
                                "{} declares `mod {name};`, but neither {} nor {} exists",
                                file.display(),
                                flat.display(),
                                nested.display()
                            ));
                        }
                    }
                };
                queue.push((path, child.module.clone(), owns));
            }
            modules.insert(module, index);
            parsed.push(result);
        }

        let mut aliases = Aliases::new();
        for result in &parsed {
            for reference in &result.references {
                if let Kind::Use { alias: Some(alias) } = &reference.kind {
                    aliases.insert(
                        (reference.scope.clone(), alias.clone()),
                        (reference.scope.clone(), reference.segments.clone()),
                    );
                }
            }
        }
        let resolver = Resolver {
            modules: &modules,
            aliases: &aliases,
        };

        let mut arrows = BTreeMap::new();
        for (from, result) in parsed.iter().enumerate() {
            for reference in &result.references {
                let Some((target, names_a_module)) =
                    resolver.resolve(&reference.scope, &reference.segments, 0)
                else {
                    continue;
                };
                // `use crate::a;` only names `a`: what a file takes from `a` shows where the alias is used.
                if names_a_module && matches!(reference.kind, Kind::Use { alias: Some(_) }) {
                    continue;
                }
                let to = modules[&target];
                if to != from {
                    let mut path = reference.segments.join("::");
                    if matches!(reference.kind, Kind::Use { alias: None }) {
                        path.push_str("::*");
                    }
                    arrows.entry((from, to)).or_insert((reference.line, path));
                }
            }
        }
        Ok(ModuleGraph {
            files,
            file_modules,
            arrows,
        })
    }

    /// Every circle. At each level of the module tree, the modules directly inside one module (each
    /// with its file and folder) must not use each other in a loop. The enclosing module's own file is left out
    /// of that level: it declares the modules and may use them, and they may use it.
    fn circles(&self) -> Vec<Circle> {
        let mut out = Vec::new();
        for parent in &self.file_modules {
            // The modules directly inside `parent`, by name, and which of them holds each file.
            let mut names: Vec<String> = Vec::new();
            let group: Vec<Option<usize>> = self
                .file_modules
                .iter()
                .map(|module| {
                    let name = module.strip_prefix(parent.as_slice())?.first()?;
                    Some(match names.iter().position(|n| n == name) {
                        Some(index) => index,
                        None => {
                            names.push(name.clone());
                            names.len() - 1
                        }
                    })
                })
                .collect();
            let mut next = vec![BTreeSet::new(); names.len()];
            for &(from, to) in self.arrows.keys() {
                if let (Some(a), Some(b)) = (group[from], group[to]) {
                    if a != b {
                        next[a].insert(b);
                    }
                }
            }
            let next: Vec<Vec<usize>> = next.into_iter().map(|s| s.into_iter().collect()).collect();
            for component in strongly_connected_components(&next) {
                if component.len() < 2 {
                    continue;
                }
                let mut modules: Vec<String> = component
                    .iter()
                    .map(|&g| {
                        let mut module = parent.clone();
                        module.push(names[g].clone());
                        module.join("::")
                    })
                    .collect();
                modules.sort();
                let mut arrows = Vec::new();
                for (&(from, to), (line, path)) in &self.arrows {
                    let (Some(a), Some(b)) = (group[from], group[to]) else {
                        continue;
                    };
                    if a != b && component.contains(&a) && component.contains(&b) {
                        arrows.push(format!(
                            "{} -> {}: {}:{line} `{path}`",
                            self.files[from].display(),
                            self.files[to].display(),
                            self.files[from].display()
                        ));
                    }
                }
                arrows.sort();
                out.push(Circle { modules, arrows });
            }
        }
        out
    }
}

/// Modules that use each other in a loop, and the uses between them (file -> file: where, and the path).
struct Circle {
    modules: Vec<String>,
    arrows: Vec<String>,
}

/// Tarjan's algorithm, iterative: the strongly connected components of a graph given as each node's successors.
fn strongly_connected_components(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = next.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut counter = 0;
    let mut components = Vec::new();
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0)];
        index[start] = counter;
        low[start] = counter;
        counter += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if let Some(&child) = next[node].get(*edge) {
                *edge += 1;
                if index[child] == usize::MAX {
                    index[child] = counter;
                    low[child] = counter;
                    counter += 1;
                    stack.push(child);
                    on_stack[child] = true;
                    work.push((child, 0));
                } else if on_stack[child] {
                    low[node] = low[node].min(index[child]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("the node is on the stack");
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// The names `use` brought into each module: (module, name) -> (the module of the `use`, its path).
type Aliases = HashMap<(Vec<String>, String), (Vec<String>, Vec<String>)>;

struct Resolver<'a> {
    modules: &'a HashMap<Vec<String>, usize>,
    aliases: &'a Aliases,
}

impl Resolver<'_> {
    /// The innermost module of this crate that `segments`, written in `scope`, reaches, and whether the path
    /// names that module itself. None for paths into other crates or to local names.
    fn resolve(
        &self,
        scope: &[String],
        segments: &[String],
        depth: usize,
    ) -> Option<(Vec<String>, bool)> {
        if depth > 16 || segments.is_empty() {
            return None;
        }
        let (mut module, mut rest): (Vec<String>, &[String]) = match segments[0].as_str() {
            "crate" | "$crate" => (Vec::new(), &segments[1..]),
            "self" => (scope.to_vec(), &segments[1..]),
            "super" => {
                let mut module = scope.to_vec();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    module.pop()?;
                    rest = &rest[1..];
                }
                (module, rest)
            }
            _ => (scope.to_vec(), segments),
        };
        let relative = !matches!(segments[0].as_str(), "crate" | "$crate" | "self" | "super");
        let mut first = true;
        while let Some(segment) = rest.first() {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.modules.contains_key(&child) {
                module = child;
                rest = &rest[1..];
            } else if let Some((alias_scope, target)) =
                self.aliases.get(&(module.clone(), segment.clone()))
            {
                if target.last() == Some(segment) && alias_scope == &module && target.len() == 1 {
                    return None; // `use serde;` and the like
                }
                let mut path = target.clone();
                path.extend(rest[1..].iter().cloned());
                return self.resolve(alias_scope, &path, depth + 1);
            } else if first && relative {
                return None; // a local name or another crate
            } else {
                break;
            }
            first = false;
        }
        let names_module = rest.is_empty();
        Some((module, names_module))
    }
}

#[derive(Default)]
struct Parsed {
    /// The file has `#![cfg(test)]`.
    test_only: bool,
    /// `mod x;` declarations outside `#[cfg(test)]`, with their module paths.
    children: Vec<Child>,
    /// Module paths of `mod x { … }` blocks outside `#[cfg(test)]`.
    inline_modules: Vec<Vec<String>>,
    references: Vec<Reference>,
}

struct Child {
    module: Vec<String>,
    path_attribute: Option<String>,
}

struct Reference {
    /// The module the path is written in.
    scope: Vec<String>,
    segments: Vec<String>,
    kind: Kind,
    line: usize,
}

enum Kind {
    /// A leaf of a `use` tree; its alias is the name it brings into scope, none for a glob.
    Use { alias: Option<String> },
    /// A path in code.
    Path,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    PathSeparator,
    Punct(char),
}

/// Tokens with their lines; comments, literals' contents (but a string's, kept for `#[path]`) and lifetimes
/// are dropped.
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let is_ident_start = |c: char| c.is_alphabetic() || c == '_';
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some((content, end)) = string_literal(&chars, i) {
            let start_line = line;
            line += chars[i..end].iter().filter(|&&c| c == '\n').count();
            tokens.push((Token::Str(content), start_line));
            i = end;
        } else if c == 'b' && at(i + 1) == '\'' {
            i = char_literal_end(&chars, i + 1);
        } else if c == '\'' {
            // A char literal ('a', '\n') or a lifetime ('a, 'static).
            if at(i + 1) == '\\' || at(i + 2) == '\'' {
                i = char_literal_end(&chars, i);
            } else {
                i += 1;
                while is_ident(at(i)) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while is_ident(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if is_ident_start(c) || (c == '$' && is_ident_start(at(i + 1))) {
            let start = i;
            i += 1;
            while is_ident(at(i)) {
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            if word == "r" && at(i) == '#' && is_ident_start(at(i + 1)) {
                let rest = i + 1;
                i = rest;
                while is_ident(at(i)) {
                    i += 1;
                }
                word = chars[rest..i].iter().collect();
            }
            tokens.push((Token::Ident(word), line));
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push((Token::PathSeparator, line));
            i += 2;
        } else {
            tokens.push((Token::Punct(c), line));
            i += 1;
        }
    }
    tokens
}

/// A string literal starting at `i` ("…", r"…", r#"…"#, b"…", br"…", c"…", cr"…"): its content and its end.
fn string_literal(chars: &[char], i: usize) -> Option<(String, usize)> {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    // Only at the start of a token: `br"x"` is a literal, `abr"x"` is not Rust.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if matches!(at(j), 'b' | 'c') {
        j += 1;
    }
    let raw = at(j) == 'r';
    if raw {
        j += 1;
        let mut hashes = 0;
        while at(j) == '#' {
            hashes += 1;
            j += 1;
        }
        if at(j) != '"' {
            return None;
        }
        let start = j + 1;
        let mut k = start;
        while k < chars.len() {
            if chars[k] == '"' && (1..=hashes).all(|h| at(k + h) == '#') {
                return Some((chars[start..k].iter().collect(), k + 1 + hashes));
            }
            k += 1;
        }
        return Some((chars[start..].iter().collect(), chars.len()));
    }
    if at(j) != '"' {
        return None;
    }
    let start = j + 1;
    let mut k = start;
    while k < chars.len() && chars[k] != '"' {
        k += if chars[k] == '\\' { 2 } else { 1 };
    }
    let end = k.min(chars.len());
    Some((chars[start..end].iter().collect(), (k + 1).min(chars.len())))
}

/// The end of a char literal whose opening quote is at `i`.
fn char_literal_end(chars: &[char], i: usize) -> usize {
    let mut k = i + 1;
    while k < chars.len() && chars[k] != '\'' && chars[k] != '\n' {
        k += if chars[k] == '\\' { 2 } else { 1 };
    }
    k + 1
}

const ITEM_KEYWORDS: [&str; 16] = [
    "fn",
    "struct",
    "enum",
    "union",
    "impl",
    "trait",
    "use",
    "mod",
    "const",
    "static",
    "type",
    "extern",
    "unsafe",
    "async",
    "macro_rules",
    "let",
];

/// The declarations and paths of one file whose module path is `module`.
fn parse(text: &str, module: &[String]) -> Parsed {
    let tokens = tokenize(text);
    let mut parsed = Parsed::default();
    // Inline modules open around the current token: their names and the brace depth inside them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut cfg_test = false;
    let mut path_attribute: Option<String> = None;
    let ident = |i: usize| match tokens.get(i) {
        Some((Token::Ident(word), _)) => Some(word.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| matches!(tokens.get(i), Some((Token::Punct(p), _)) if *p == c);
    let separator = |i: usize| matches!(tokens.get(i), Some((Token::PathSeparator, _)));
    let scope = |inline: &[(String, usize)]| {
        let mut scope = module.to_vec();
        scope.extend(inline.iter().map(|(name, _)| name.clone()));
        scope
    };
    let mut i = 0;
    while i < tokens.len() {
        let line = tokens[i].1;
        // Attributes: `#[cfg(test)]` takes the next item out, `#[path = "…"]` places the next `mod`.
        if punct(i, '#') && (punct(i + 1, '[') || (punct(i + 1, '!') && punct(i + 2, '['))) {
            let inner = punct(i + 1, '!');
            let open = if inner { i + 2 } else { i + 1 };
            let close = matching(&tokens, open);
            let body = &tokens[open + 1..close];
            let is_cfg_test = body.iter().map(|(t, _)| t).eq([
                Token::Ident("cfg".into()),
                Token::Punct('('),
                Token::Ident("test".into()),
                Token::Punct(')'),
            ]
            .iter());
            if is_cfg_test {
                if inner && inline.is_empty() && depth == 0 {
                    parsed.test_only = true;
                    return parsed;
                }
                cfg_test = !inner;
            }
            if let [(Token::Ident(name), _), (Token::Punct('='), _), (Token::Str(path), _)] = body {
                if name == "path" {
                    path_attribute = Some(path.clone());
                }
            }
            i = close + 1;
            continue;
        }
        if cfg_test {
            cfg_test = false;
            path_attribute = None;
            i = item_end(&tokens, i);
            continue;
        }
        match &tokens[i].0 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let Some(name) = ident(i + 1) {
                    let mut child = scope(&inline);
                    child.push(name.to_owned());
                    if punct(i + 2, ';') {
                        parsed.children.push(Child {
                            module: child,
                            path_attribute: path_attribute.take(),
                        });
                        i += 3;
                        continue;
                    }
                    if punct(i + 2, '{') {
                        parsed.inline_modules.push(child);
                        depth += 1;
                        inline.push((name.to_owned(), depth));
                        i += 3;
                        continue;
                    }
                }
            }
            Token::Ident(word) if word == "use" => {
                let end = (i..tokens.len())
                    .find(|&j| punct(j, ';'))
                    .unwrap_or(tokens.len());
                let mut leaves = Vec::new();
                use_tree(&tokens[i + 1..end], &[], &mut leaves);
                for (segments, alias) in leaves {
                    parsed.references.push(Reference {
                        scope: scope(&inline),
                        segments,
                        kind: Kind::Use { alias },
                        line,
                    });
                }
                i = end + 1;
                continue;
            }
            Token::Ident(first) if separator(i + 1) && !(i > 0 && separator(i - 1)) => {
                let mut segments = vec![first.clone()];
                let mut j = i + 1;
                while separator(j) {
                    match ident(j + 1) {
                        Some(word) => segments.push(word.to_owned()),
                        None => break,
                    }
                    j += 2;
                }
                parsed.references.push(Reference {
                    scope: scope(&inline),
                    segments,
                    kind: Kind::Path,
                    line,
                });
                i = j;
                continue;
            }
            _ => {}
        }
        // `#[path = "…"] pub(crate) mod x;`: the attribute holds until the item ends.
        if matches!(tokens[i].0, Token::Punct(';' | '{' | '}')) {
            path_attribute = None;
        }
        i += 1;
    }
    parsed
}

/// The index of the bracket that closes the one at `open`.
fn matching(tokens: &[(Token, usize)], open: usize) -> usize {
    let mut depth = 0;
    for (j, (token, _)) in tokens.iter().enumerate().skip(open) {
        match token {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    tokens.len() - 1
}

/// The index after the item, field, variant or statement that starts at `start`: after its `;` or its body in
/// braces, or (for what is not an item) at its `,`; never past the bracket that closes around it.
fn item_end(tokens: &[(Token, usize)], start: usize) -> usize {
    let is_item = tokens[start..]
        .iter()
        .map(|(t, _)| t)
        .find(|t| !matches!(t, Token::Ident(w) if w == "pub") && **t != Token::Punct('('))
        .is_some_and(|t| matches!(t, Token::Ident(w) if ITEM_KEYWORDS.contains(&w.as_str())));
    let mut j = start;
    let mut depth = 0usize;
    while j < tokens.len() {
        match &tokens[j].0 {
            Token::Punct('(' | '[') => depth += 1,
            Token::Punct('{') if depth == 0 => return matching(tokens, j) + 1,
            Token::Punct('{') => depth += 1,
            Token::Punct(')' | ']' | '}') => {
                if depth == 0 {
                    return j;
                }
                depth -= 1;
            }
            Token::Punct(';') if depth == 0 => return j + 1,
            Token::Punct(',') if depth == 0 && !is_item => return j + 1,
            _ => {}
        }
        j += 1;
    }
    j
}

/// The leaves of a `use` tree: each full path with the name it brings into scope (None for a glob).
fn use_tree(
    tokens: &[(Token, usize)],
    prefix: &[String],
    leaves: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut path = prefix.to_vec();
    let mut i = 0;
    // `use ::std::…`
    if matches!(tokens.first(), Some((Token::PathSeparator, _))) {
        return;
    }
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Ident(word) if word == "as" => {
                if let Some((Token::Ident(alias), _)) = tokens.get(i + 1) {
                    let alias = (alias != "_").then(|| alias.clone());
                    leaves.push((path, alias));
                }
                return;
            }
            Token::Ident(word) if word == "self" && !path.is_empty() => {
                // `a::{self}` names `a` itself.
                i += 1;
                continue;
            }
            Token::Ident(word) => path.push(word.clone()),
            Token::PathSeparator => {}
            Token::Punct('*') => {
                leaves.push((path, None));
                return;
            }
            Token::Punct('{') => {
                let close = matching(tokens, i);
                let inner = &tokens[i + 1..close];
                let mut depth = 0;
                let mut from = 0;
                for (j, (token, _)) in inner.iter().enumerate() {
                    match token {
                        Token::Punct('{') => depth += 1,
                        Token::Punct('}') => depth -= 1,
                        Token::Punct(',') if depth == 0 => {
                            use_tree(&inner[from..j], &path, leaves);
                            from = j + 1;
                        }
                        _ => {}
                    }
                }
                use_tree(&inner[from..], &path, leaves);
                return;
            }
            _ => return,
        }
        i += 1;
    }
    if let Some(last) = path.last().cloned() {
        if path.len() > prefix.len()
            || tokens
                .iter()
                .any(|(t, _)| t == &Token::Ident("self".into()))
        {
            leaves.push((path, Some(last)));
        }
    }
}

// The reader, on small crates written for each case.

/// Writes the files into a fresh folder and returns the circles found from its `lib.rs`: each the sorted
/// modules, then the arrows between them.
fn circles_of(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    static CRATES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ferry-module-graph-{}-{}",
        std::process::id(),
        CRATES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let graph = ModuleGraph::read(&dir, Path::new("lib.rs")).expect("the crate reads");
    std::fs::remove_dir_all(&dir).unwrap();
    let mut circles: Vec<Vec<String>> = graph
        .circles()
        .into_iter()
        .map(|c| c.modules.into_iter().chain(c.arrows).collect())
        .collect();
    circles.sort();
    circles
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn two_files_that_use_each_other_are_a_circle() {
    let circles = circles_of(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("a.rs", "use crate::b::Thing;\n"),
        (
            "b.rs",
            "pub struct Thing;\nfn f() {\n    super::a::g()\n}\n",
        ),
        ("c.rs", "use crate::a::g;\n"),
    ]);
    assert_eq!(
        circles,
        vec![strings(&[
            "a",
            "b",
            "a.rs -> b.rs: a.rs:1 `crate::b::Thing`",
            "b.rs -> a.rs: b.rs:3 `super::a::g`",
        ])]
    );
}

#[test]
fn a_module_and_the_modules_inside_it_are_no_circle() {
    // p.rs declares c, re-exports from it and calls it; c uses p.rs's own items: one module, p.
    let circles = circles_of(&[
        ("lib.rs", "mod p;\nmod q;\n"),
        (
            "p.rs",
            "mod c;\npub use c::Made;\npub struct Shared;\nfn f() { c::make() }\n",
        ),
        (
            "p/c.rs",
            "pub struct Made(super::Shared);\npub fn make() { crate::p::f() }\n",
        ),
        (
            "q/mod.rs",
            "mod c;\npub struct Shared;\nfn f() { c::make() }\n",
        ),
        ("q/c.rs", "use crate::q::Shared;\npub fn make() {}\n"),
    ]);
    assert_eq!(circles, Vec::<Vec<String>>::new());
}

#[test]
fn a_circle_through_a_module_inside_another_is_between_the_outer_modules() {
    let circles = circles_of(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "mod x;\npub struct Y;\nfn f() { crate::b::g() }\n"),
        ("a/x.rs", "pub fn h() -> super::Y { super::Y }\n"),
        ("b.rs", "pub fn g() { crate::a::x::h(); }\n"),
    ]);
    assert_eq!(
        circles,
        vec![strings(&[
            "a",
            "b",
            "a.rs -> b.rs: a.rs:3 `crate::b::g`",
            "b.rs -> a/x.rs: b.rs:1 `crate::a::x::h`",
        ])]
    );
}

#[test]
fn modules_side_by_side_inside_one_module_and_separate_circles() {
    let circles = circles_of(&[
        ("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\nmod p;\n"),
        ("a.rs", "fn f() { crate::b::x(); }\n"),
        ("b.rs", "use crate::c::{y as z};\n"),
        ("c.rs", "use crate::{a::*, e};\n"),
        ("d.rs", "use crate::e::{self, Q};\n"),
        ("e.rs", "use super::d::R;\n"),
        ("p.rs", "mod one;\nmod two;\n"),
        ("p/one.rs", "use super::two::T;\n"),
        ("p/two.rs", "pub fn t() -> super::one::O { todo!() }\n"),
    ]);
    assert_eq!(
        circles,
        vec![
            strings(&[
                "a",
                "b",
                "c",
                "a.rs -> b.rs: a.rs:1 `crate::b::x`",
                "b.rs -> c.rs: b.rs:1 `crate::c::y`",
                "c.rs -> a.rs: c.rs:1 `crate::a::*`",
            ]),
            strings(&[
                "d",
                "e",
                "d.rs -> e.rs: d.rs:1 `crate::e::Q`",
                "e.rs -> d.rs: e.rs:1 `super::d::R`",
            ]),
            strings(&[
                "p::one",
                "p::two",
                "p/one.rs -> p/two.rs: p/one.rs:1 `super::two::T`",
                "p/two.rs -> p/one.rs: p/two.rs:1 `super::one::O`",
            ]),
        ]
    );
}

#[test]
fn comments_strings_and_test_code_draw_no_arrow() {
    let circles = circles_of(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            r##"// crate::b::X
/* nested /* crate::b::X */ crate::b::X */
const S: &str = "crate::b::X \" crate::b::X";
const R: &str = r#"use crate::b::X; "#;
const B: &[u8] = b"crate::b::X";
const C: char = '"';
const D: char = '\'';
fn f<'a>(x: &'a str) -> &'a str { x }
pub struct T;
#[cfg(test)]
mod tests {
    use crate::b::X;
    #[test]
    fn t() { crate::b::f(); }
}
#[cfg(test)]
use crate::b::Y;
"##,
        ),
        (
            "b.rs",
            "pub fn f() -> crate::a::T { crate::a::T }\n#[cfg(test)]\nmod tests;\n",
        ),
        ("b/tests.rs", "use crate::b::*;\nuse crate::a::*;\n"),
    ]);
    assert_eq!(circles, Vec::<Vec<String>>::new());

    // Without the test gate the same module is in a circle: the reader sees these paths.
    let circles = circles_of(&[
        ("lib.rs", "mod a;\nmod b;\n"),
        (
            "a.rs",
            "pub struct T;\nmod tests {\n    use crate::b::X;\n}\n",
        ),
        ("b.rs", "pub fn f() -> crate::a::T { crate::a::T }\n"),
    ]);
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert_eq!(circles[0][..2], strings(&["a", "b"]));
}

#[test]
fn an_imported_module_draws_arrows_where_it_is_used() {
    // one imports module m and uses m::two; two uses one: a circle inside m, not one between one and m.rs.
    let circles = circles_of(&[
        ("lib.rs", "mod m;\n"),
        ("m.rs", "mod one;\nmod two;\n"),
        ("m/one.rs", "use crate::m;\npub fn g() { m::two::f() }\n"),
        ("m/two.rs", "pub fn f() { super::one::g() }\n"),
    ]);
    assert_eq!(
        circles,
        vec![strings(&[
            "m::one",
            "m::two",
            "m/one.rs -> m/two.rs: m/one.rs:2 `m::two::f`",
            "m/two.rs -> m/one.rs: m/two.rs:1 `super::one::g`",
        ])]
    );
}

#[test]
fn another_crate_under_a_local_name_and_inline_modules_resolve() {
    let circles = circles_of(&[
        (
            "lib.rs",
            "mod a;\nmod b;\n#[path = \"elsewhere/c_file.rs\"]\npub(crate) mod c;\nmod d;\n",
        ),
        // `crate::a::s::…` is serde, not a.
        ("a.rs", "pub use serde as s;\nfn f() { crate::b::g() }\n"),
        ("b.rs", "pub fn g() {}\nuse crate::a::s::Serialize;\n"),
        // An inline module is its file, and #[path] names the file.
        (
            "elsewhere/c_file.rs",
            "pub mod inner {\n    pub fn x() {\n        super::super::d::y()\n    }\n}\n",
        ),
        ("d.rs", "pub fn y() {}\nfn z() { crate::c::inner::x() }\n"),
    ]);
    assert_eq!(
        circles,
        vec![strings(&[
            "c",
            "d",
            "d.rs -> elsewhere/c_file.rs: d.rs:2 `crate::c::inner::x`",
            "elsewhere/c_file.rs -> d.rs: elsewhere/c_file.rs:3 `super::super::d::y`",
        ])]
    );
}

#[test]
fn a_missing_module_file_is_an_error_that_names_both_places() {
    let dir =
        std::env::temp_dir().join(format!("ferry-module-graph-{}-missing", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod gone;\n").unwrap();
    let error = ModuleGraph::read(&dir, Path::new("lib.rs"))
        .err()
        .expect("a missing file is an error");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        error,
        "lib.rs declares `mod gone;`, but neither gone.rs nor gone/mod.rs exists"
    );
}
