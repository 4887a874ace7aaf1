//! The modules are layered (no GPU needed): every file under src/ may import only from top-level modules of a lower
//! layer than its own (or from its own module), so that no module reaches up, and no two top-level modules import
//! each other, directly or round a longer circle.
//!
//! How: each file is read with its comments, strings and character literals blanked out; every crate-internal path
//! in what is left is a reference: `crate::x…` (and a macro's `$crate::x…`), `super::…` (resolved against the
//! file's module path and the inline `mod` blocks it is in), and `pixelcnn::x…` (the library seen from
//! src/main.rs); grouped imports `use crate::{a, b::c}` name each of their members. Each reference maps to the
//! top-level module it lands in, which is checked against [`LAYERS`]. src/lib.rs only declares the modules and is
//! not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first. A module may import from modules of lower layers only: not from its
/// own layer (the modules of one layer are independent of each other) and not from above. Every module under src/
/// must be listed.
const LAYERS: &[&[&str]] = &[
    // Leaves: no crate-internal imports.
    &["rng", "fsio", "runtime_dir", "metrics", "device"],
    // File formats and the model description.
    &["dir_lock", "image_out", "model"],
    // Data and the CPU reference.
    &["data", "cpu"],
    // Checkpoints and the GPU backend.
    &["checkpoint", "gpu"],
    &["evaluate", "plot"],
    &["grid", "bench", "baselines", "download"],
    // The training loop, then what samples.
    &["train"],
    &["sampling"],
    &["inspect"],
    // The command line, then the binary.
    &["cli"],
    &["main"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every .rs file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of the file `rel` (relative to src/): `gpu/kernels/conv.rs` → [gpu, kernels, conv],
/// `gpu/mod.rs` → [gpu], `main.rs` → [main].
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

/// `text` with every comment, string literal and character literal replaced by spaces (newlines kept, so that
/// byte offsets and line numbers stay those of the file).
fn blank_non_code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && ident(b[i - 1]);
        if b[i..].starts_with(b"//") {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !prev_ident && (b[i] == b'r' || b[i..].starts_with(b"br")) && {
            let k = i + if b[i] == b'r' { 1 } else { 2 };
            let hashes = b[k..].iter().take_while(|&&c| c == b'#').count();
            b.get(k + hashes) == Some(&b'"')
        } {
            // A raw string r#"…"#.
            let k = i + if b[i] == b'r' { 1 } else { 2 };
            let hashes = b[k..].iter().take_while(|&&c| c == b'#').count();
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let start = k + hashes + 1;
            let end = (start..b.len())
                .find(|&j| b[j..].starts_with(&close))
                .map_or(b.len(), |j| j + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{…}', '"') or a lifetime ('a, which is left alone).
            let end = if b.get(i + 1) == Some(&b'\\') {
                // The escaped character itself may be a quote: the closing one comes after it.
                (i + 3..b.len()).find(|&j| b[j] == b'\'').map(|j| j + 1)
            } else {
                let ch = text[i + 1..].chars().next().map_or(0, char::len_utf8);
                (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// One crate-internal reference: where it is, what it says, and the top-level module it lands in.
#[derive(Clone, Debug)]
struct Reference {
    file: PathBuf,
    line: usize,
    /// The source line, trimmed.
    text: String,
    /// The top-level module of the file.
    from: String,
    /// The top-level module referred to.
    to: String,
}

/// The identifier starting at byte `i` of `code`, if any.
fn ident_at(code: &str, i: usize) -> Option<&str> {
    let rest = &code[i..];
    let n = rest
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(rest.len(), |(k, _)| k);
    (n > 0).then(|| &rest[..n])
}

/// Skips whitespace from byte `i`.
fn skip_ws(code: &str, mut i: usize) -> usize {
    while code[i..].starts_with(char::is_whitespace) {
        i += code[i..].chars().next().unwrap().len_utf8();
    }
    i
}

/// The first segments of the members of a group `{a, b::c, self, d as e}` that starts at byte `open` (the `{`).
fn group_members(code: &str, open: usize) -> Vec<String> {
    let mut depth = 0;
    let mut members = Vec::new();
    let mut expect_member = true;
    for (k, c) in code[open..].char_indices() {
        let at = open + k;
        match c {
            '{' => {
                depth += 1;
                expect_member = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_member = true,
            c if depth == 1 && expect_member && (c.is_alphabetic() || c == '_') => {
                if let Some(id) = ident_at(code, at) {
                    members.push(id.to_string());
                }
                expect_member = false;
            }
            _ => {}
        }
    }
    members
}

/// The crate-internal references of one file.
fn references(src: &Path, file: &Path) -> Vec<Reference> {
    let rel = file.strip_prefix(src).expect("under src/");
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let code = blank_non_code(&text);
    let file_module = module_path(rel);
    let top = file_module[0].clone();
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let source_line = |line: usize| text.lines().nth(line - 1).unwrap_or("").trim().to_string();

    // Inline `mod name { … }` blocks: (name, the brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    let bytes = code.as_bytes();
    while i < code.len() {
        let c = bytes[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        let boundary =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let Some(word) = ident_at(&code, i).filter(|_| boundary && (c.is_ascii_alphabetic() || c == b'_')) else {
            i += code[i..].chars().next().unwrap().len_utf8();
            continue;
        };
        let after = i + word.len();
        if word == "mod" {
            let j = skip_ws(&code, after);
            if let Some(name) = ident_at(&code, j) {
                let k = skip_ws(&code, j + name.len());
                if code[k..].starts_with('{') {
                    inline.push((name.to_string(), depth + 1));
                }
            }
            i = after;
            continue;
        }
        let crate_like = word == "crate" || word == "pixelcnn";
        if !(crate_like || word == "super") || !code[after..].starts_with("::") {
            i = after;
            continue;
        }
        // The absolute module path the reference starts from, and where its next segment begins.
        let (mut base, mut j) = if crate_like {
            (Vec::new(), after + 2)
        } else {
            let mut m = file_module.clone();
            m.extend(inline.iter().map(|(n, _)| n.clone()));
            let mut j = i;
            while code[j..].starts_with("super::") {
                m.pop();
                j += "super::".len();
            }
            (m, j)
        };
        j = skip_ws(&code, j);
        let firsts: Vec<String> = if !base.is_empty() {
            vec![base.remove(0)]
        } else if code[j..].starts_with('{') {
            group_members(&code, j)
        } else {
            ident_at(&code, j).map(str::to_string).into_iter().collect()
        };
        let line = line_of(i);
        for to in firsts {
            out.push(Reference {
                file: Path::new("src").join(rel),
                line,
                text: source_line(line),
                from: top.clone(),
                to,
            });
        }
        i = j.max(after);
    }
    out
}

/// Every reference between two different top-level modules under src/ (src/lib.rs excluded).
fn all_references() -> Vec<Reference> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    rust_files(&src)
        .iter()
        .filter(|f| f.strip_prefix(&src).unwrap() != Path::new("lib.rs"))
        .flat_map(|f| references(&src, f))
        .filter(|r| r.from != r.to && r.to != "self")
        .collect()
}

/// The import circles between top-level modules: each strongly connected component of more than one module, with
/// one reference per edge inside it.
fn circles(refs: &[Reference]) -> Vec<Vec<&Reference>> {
    let mut edges: BTreeMap<&str, BTreeMap<&str, &Reference>> = BTreeMap::new();
    for r in refs {
        edges.entry(&r.from).or_default().entry(&r.to).or_insert(r);
    }
    let nodes: BTreeSet<&str> = refs.iter().flat_map(|r| [r.from.as_str(), r.to.as_str()]).collect();
    let reach = |start: &str| -> BTreeSet<&str> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for &m in edges.get(n).map(|e| e.keys().collect::<Vec<_>>()).unwrap_or_default() {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = nodes.iter().map(|&n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for &n in &nodes {
        if done.contains(n) || !reachable[n].contains(n) {
            continue;
        }
        let component: BTreeSet<&str> = nodes
            .iter()
            .copied()
            .filter(|&m| reachable[n].contains(m) && reachable[m].contains(n))
            .collect();
        let mut inside = Vec::new();
        for &a in &component {
            for (&b, r) in edges.get(a).into_iter().flatten() {
                if component.contains(b) {
                    inside.push(*r);
                }
            }
        }
        done.extend(component);
        out.push(inside);
    }
    out
}

#[test]
fn no_module_imports_from_a_higher_layer_or_its_own() {
    let refs = all_references();
    assert!(
        refs.len() > 50,
        "only {} references found: is the scanner broken?",
        refs.len()
    );
    let mut errors = Vec::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = rust_files(&src)
        .iter()
        .map(|f| module_path(f.strip_prefix(&src).unwrap())[0].clone())
        .filter(|m| m != "lib")
        .collect();
    for m in &modules {
        if layer_of(m).is_none() {
            errors.push(format!(
                "src/{m}: the module is in no layer of LAYERS (tests/layers.rs); add it"
            ));
        }
    }
    for r in &refs {
        let (Some(from), Some(to)) = (layer_of(&r.from), layer_of(&r.to)) else {
            // A file of a module in no layer is reported above, once.
            if layer_of(&r.to).is_none() {
                errors.push(format!(
                    "{}:{}: `{}` — `{}` is no module in LAYERS",
                    r.file.display(),
                    r.line,
                    r.text,
                    r.to
                ));
            }
            continue;
        };
        if to >= from {
            let how = if to == from {
                "a module of its own layer"
            } else {
                "a higher layer"
            };
            errors.push(format!(
                "{}:{}: `{}` — {} (layer {from}) imports {} (layer {to}), {how}",
                r.file.display(),
                r.line,
                r.text,
                r.from,
                r.to
            ));
        }
    }
    let mut per_module: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &refs {
        per_module.entry(&r.from).or_default().insert(&r.to);
    }
    for (m, uses) in &per_module {
        eprintln!(
            "{m:<12} imports {}",
            uses.iter().copied().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(
        errors.is_empty(),
        "{} import(s) break the layering (lowest first: {}):\n{}",
        errors.len(),
        LAYERS.iter().map(|l| l.join("/")).collect::<Vec<_>>().join(" < "),
        errors.join("\n")
    );
}

#[test]
fn no_import_circles_between_top_level_modules() {
    let refs = all_references();
    let found = circles(&refs);
    let report: Vec<String> = found
        .iter()
        .map(|edges| {
            let modules: BTreeSet<&str> = edges.iter().map(|r| r.from.as_str()).collect();
            let lines: Vec<String> = edges
                .iter()
                .map(|r| format!("  {} → {}: {}:{}: `{}`", r.from, r.to, r.file.display(), r.line, r.text))
                .collect();
            format!(
                "a circle between {}:\n{}",
                modules.into_iter().collect::<Vec<_>>().join(", "),
                lines.join("\n")
            )
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_scanner_reads_paths_the_way_rust_does() {
    let code = "use crate::{a, b::{self, c}, d as e};\n// crate::comment\nlet s = \"crate::string\";\n\
                fn f<'a>(x: &'a str) -> char { '{' }\nmod tests {\n    use super::*;\n    use super::super::g::h;\n}\n\
                use super::k;\nuse pixelcnn::m::N;\nlet q = '\\'';\n";
    let dir = std::env::temp_dir().join(format!("pixelcnn-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("x/y")).unwrap();
    let file = dir.join("x/y/z.rs");
    std::fs::write(&file, code).unwrap();
    let refs = references(&dir, &file);
    std::fs::remove_dir_all(&dir).unwrap();
    let got: Vec<(usize, &str)> = refs.iter().map(|r| (r.line, r.to.as_str())).collect();
    // `super::*` in `mod tests` of x/y/z.rs is x::y::z, `super::super::g` x::y::g, `super::k` x::y::k.
    assert_eq!(
        got,
        [(1, "a"), (1, "b"), (1, "d"), (6, "x"), (7, "x"), (9, "x"), (10, "m")],
        "{refs:#?}"
    );
    assert!(refs.iter().all(|r| r.from == "x"));
}
