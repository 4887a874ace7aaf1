//! The documentation against the code (no GPU needed): every `pixelcnn …` command line in the fenced code blocks
//! of README.md and docs/*.md parses with the real command-line parser, and every relative link and image in them
//! points at a file that exists, and at a heading of it when the link names an `#anchor`.
//!
//! A command line is a line of a fenced code block (after a leading `$ `) whose command, after any `NAME=value`
//! environment prefixes, is `pixelcnn` or `cargo run … -- <args>`; `\` continues a line, `&&`, `||`, `;` and `|`
//! separate commands, and an unquoted `#` starts a comment. A line whose second word starts with `(` is prose (the
//! diagram in docs/models.md names the architectures `pixelcnn (--arch pixelcnn, …)`), not a command.

use clap::error::ErrorKind;
use clap::Parser;
use pixelcnn::cli::Cli;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md, as paths relative to the root.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("reading docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| p.strip_prefix(root()).expect("under the root").to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(rel: &Path) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {}: {e}", rel.display()))
}

/// A line of a document: its 1-based number, whether it lies inside a fenced code block, and its text.
struct Line<'a> {
    number: usize,
    in_code: bool,
    text: &'a str,
}

/// The lines of `text`, each marked as inside a fenced code block or not (the fences themselves count as code).
fn lines(text: &str) -> Vec<Line<'_>> {
    let mut fence: Option<String> = None;
    let mut out = Vec::new();
    for (i, text) in text.lines().enumerate() {
        let t = text.trim_start();
        let marker: String = t.chars().take_while(|&c| c == '`' || c == '~').collect();
        let is_fence = marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap());
        let in_code = match &fence {
            Some(open) => {
                // A closing fence: the same character, at least as long, nothing after it.
                if is_fence && marker.starts_with(open.as_str()) && t[marker.len()..].trim().is_empty() {
                    fence = None;
                }
                true
            }
            None => {
                if is_fence {
                    fence = Some(marker);
                }
                is_fence
            }
        };
        out.push(Line {
            number: i + 1,
            in_code,
            text,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Command lines

/// A word of a shell line, or an operator that separates commands.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Operator,
}

/// Splits a shell line the way a POSIX shell does for simple commands: single quotes keep everything, double quotes
/// keep everything but `\"`, `\\`, `\$` and `` \` ``, a backslash outside quotes escapes the next character; an
/// unquoted `#` at the start of a word begins a comment; `&&`, `||`, `;` and `|` are operators. An unterminated
/// quote is an error.
fn shell_split(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
            }
            '#' if word.is_none() => break,
            '&' | '|' | ';' => {
                if let Some(w) = word.take() {
                    tokens.push(Token::Word(w));
                }
                // `&&` and `||` are one operator; a lone `&` (a background job) or `|` also ends the command.
                if c != ';' && chars.peek() == Some(&c) {
                    chars.next();
                }
                tokens.push(Token::Operator);
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                if let Some(c) = chars.next() {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        tokens.push(Token::Word(w));
    }
    Ok(tokens)
}

/// Whether `word` is an environment assignment `NAME=value`.
fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// The arguments `pixelcnn` gets from one command (its words), if it runs pixelcnn: `pixelcnn ARGS` or
/// `cargo run … -- ARGS`, after any environment assignments. None for other commands and for prose that begins
/// with the word pixelcnn (`pixelcnn (--arch pixelcnn, …)`).
fn pixelcnn_args(words: &[String]) -> Option<Vec<String>> {
    let start = words.iter().position(|w| !is_assignment(w))?;
    let words = &words[start..];
    match words.first()?.as_str() {
        "pixelcnn" => {
            if words.get(1).is_some_and(|w| w.starts_with('(')) {
                return None;
            }
            Some(words[1..].to_vec())
        }
        "cargo" if words.get(1).is_some_and(|w| w == "run") => {
            let dashes = words.iter().position(|w| w == "--")?;
            Some(words[dashes + 1..].to_vec())
        }
        _ => None,
    }
}

/// A command line found in a document.
struct CommandLine {
    file: PathBuf,
    line: usize,
    text: String,
    args: Vec<String>,
}

/// Every pixelcnn command line in the fenced code blocks of `file`; a line that cannot be split is an error.
fn command_lines(file: &Path, errors: &mut Vec<String>) -> Vec<CommandLine> {
    let text = read(file);
    let all = lines(&text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let first = &all[i];
        i += 1;
        if !first.in_code {
            continue;
        }
        // Join `\` continuations.
        let mut joined = first.text.to_string();
        while joined.trim_end().ends_with('\\') && i < all.len() && all[i].in_code {
            let t = joined.trim_end();
            joined = format!("{} {}", &t[..t.len() - 1], all[i].text);
            i += 1;
        }
        let trimmed = joined.trim_start();
        let trimmed = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        let tokens = match shell_split(trimmed) {
            Ok(t) => t,
            Err(e) => {
                // Only a line that runs pixelcnn has to be a valid shell line.
                if trimmed.contains("pixelcnn ") {
                    errors.push(format!("{}:{}: {e}: {trimmed}", file.display(), first.number));
                }
                continue;
            }
        };
        for command in tokens.split(|t| *t == Token::Operator) {
            let words: Vec<String> = command
                .iter()
                .map(|t| match t {
                    Token::Word(w) => w.clone(),
                    Token::Operator => unreachable!("split on operators"),
                })
                .collect();
            if let Some(args) = pixelcnn_args(&words) {
                out.push(CommandLine {
                    file: file.to_path_buf(),
                    line: first.number,
                    text: words.join(" "),
                    args,
                });
            }
        }
    }
    out
}

#[test]
fn shell_lines_split_like_a_shell() {
    let words = |line: &str| -> Vec<Vec<String>> {
        shell_split(line)
            .unwrap()
            .split(|t| *t == Token::Operator)
            .map(|c| {
                c.iter()
                    .map(|t| match t {
                        Token::Word(w) => w.clone(),
                        Token::Operator => unreachable!(),
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        words(r#"A=1 pixelcnn score 'my shoe.png' --out "a b.png"   # a comment"#),
        [["A=1", "pixelcnn", "score", "my shoe.png", "--out", "a b.png"]]
    );
    assert_eq!(
        words("pixelcnn download && pixelcnn train#x"),
        [vec!["pixelcnn", "download"], vec!["pixelcnn", "train#x"]]
    );
    assert_eq!(words(r"a\ b c"), [["a b", "c"]]);
    assert!(shell_split("pixelcnn 'open").is_err());
    let args = |line: &str| {
        let w = &words(line)[0];
        pixelcnn_args(w)
    };
    assert_eq!(
        args("FOO=bar pixelcnn sample --count 4"),
        Some(vec!["sample".to_string(), "--count".into(), "4".into()])
    );
    assert_eq!(
        args("cargo run --release -- sample --out s.png"),
        Some(vec!["sample".to_string(), "--out".into(), "s.png".into()])
    );
    assert_eq!(args("cargo test --release --locked"), None);
    assert_eq!(args("pixelcnn (--arch pixelcnn, F channels)"), None);
    assert_eq!(args("scripts/gpu-bench.sh target/release/pixelcnn"), None);
}

#[test]
fn every_command_line_in_the_docs_parses() {
    let mut errors = Vec::new();
    let mut commands = Vec::new();
    for file in doc_files() {
        commands.extend(command_lines(&file, &mut errors));
    }
    for c in &commands {
        let argv = std::iter::once("pixelcnn".to_string()).chain(c.args.iter().cloned());
        match Cli::try_parse_from(argv) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {}
            Err(e) => errors.push(format!(
                "{}:{}: `{}` does not parse:\n{}",
                c.file.display(),
                c.line,
                c.text,
                e.render().to_string().trim_end()
            )),
        }
    }
    eprintln!(
        "{} pixelcnn command lines in {} documents",
        commands.len(),
        doc_files().len()
    );
    // The extraction itself must keep working: the docs hold far more than this.
    assert!(commands.len() >= 20, "only {} command lines found", commands.len());
    assert!(
        errors.is_empty(),
        "{} command line(s) in the docs fail:\n\n{}",
        errors.len(),
        errors.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// Links and anchors

/// GitHub's anchor for a heading's text: inline markup dropped (code spans, emphasis, link targets), lowercase,
/// every character but letters, digits, spaces, `-` and `_` removed, spaces turned into `-`.
fn slug(heading: &str) -> String {
    let text = strip_links(heading);
    text.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` → `text`, `![alt](target)` → `alt` (a link inside a link's text too).
fn strip_links(s: &str) -> String {
    let mut links = links_in(s);
    links.sort_by_key(|l| l.start);
    let mut out = String::new();
    let mut at = 0;
    for link in links {
        // Links inside one already replaced are part of its text.
        if link.start < at {
            continue;
        }
        out.push_str(&s[at..link.start]);
        out.push_str(&strip_links(&link.text));
        at = link.end;
    }
    out.push_str(&s[at..]);
    out
}

/// The anchors of `file`'s headings (outside code blocks): each heading's slug, the n-th repeat of a slug getting
/// `-n`.
fn anchors(file: &Path) -> HashSet<String> {
    let text = read(file);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for line in lines(&text).iter().filter(|l| !l.in_code) {
        let t = line.text.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !t[hashes..].starts_with([' ', '\t']) {
            continue;
        }
        let title = t[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
        *n += 1;
        out.insert(anchor);
    }
    out
}

/// A link or image in a line: its byte range, its text, and its target.
struct Link {
    start: usize,
    end: usize,
    text: String,
    target: String,
}

/// The inline links `[text](target)` and images `![alt](target)` of one line, outside code spans (an image inside
/// a link's text counts too).
fn links_in(line: &str) -> Vec<Link> {
    let bytes = line.as_bytes();
    // Byte ranges of code spans, which hold no links.
    let mut code = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'`' {
            let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
            let fence = &line[i..i + run];
            match line[i + run..].find(fence) {
                Some(j) => {
                    code.push(i..i + run + j + run);
                    i += run + j + run;
                }
                None => i += run,
            }
        } else {
            i += 1;
        }
    }
    let in_code = |k: usize| code.iter().any(|r| r.contains(&k));
    let mut out = Vec::new();
    for (close, _) in line.match_indices("](") {
        if in_code(close) {
            continue;
        }
        // The matching `[` of the text.
        let mut depth = 0;
        let mut open = None;
        for (k, b) in line[..close].bytes().enumerate().rev() {
            match b {
                b']' => depth += 1,
                b'[' if depth == 0 => {
                    open = Some(k);
                    break;
                }
                b'[' => depth -= 1,
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        // The target, up to the `)` that balances the `(`.
        let mut depth = 0;
        let mut end = None;
        for (k, b) in line[close + 2..].bytes().enumerate() {
            match b {
                b'(' => depth += 1,
                b')' if depth == 0 => {
                    end = Some(close + 2 + k);
                    break;
                }
                b')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { continue };
        let start = if open > 0 && bytes[open - 1] == b'!' {
            open - 1
        } else {
            open
        };
        // The target without a title (`"…"`) or angle brackets.
        let raw = line[close + 2..end].trim();
        let target = raw.split_whitespace().next().unwrap_or("");
        let target = target.trim_start_matches('<').trim_end_matches('>').to_string();
        out.push(Link {
            start,
            end: end + 1,
            text: line[open + 1..close].to_string(),
            target,
        });
    }
    out
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(slug("Running it"), "running-it");
    assert_eq!(slug("The blind spot, shown"), "the-blind-spot-shown");
    assert_eq!(slug("Flags, inputs and outputs"), "flags-inputs-and-outputs");
    assert_eq!(slug("`pixelcnn` and [docs](x.md): 2.0_b"), "pixelcnn-and-docs-20_b");
    assert_eq!(slug("Épreuve à 28×28"), "épreuve-à-2828");
    let links = links_in("see [a](b.md#c) and ![i](../x.png \"t\") but not `[d](e)`; [![x](y.png)](z.md)");
    let targets: Vec<&str> = links.iter().map(|l| l.target.as_str()).collect();
    assert_eq!(targets, ["b.md#c", "../x.png", "y.png", "z.md"]);
    assert_eq!(strip_links("a [![x](y.png) b](z.md) c"), "a x b c");
}

#[test]
fn every_link_and_image_in_the_docs_resolves() {
    let mut errors = Vec::new();
    let mut checked = 0;
    for file in doc_files() {
        let text = read(&file);
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        for line in lines(&text).iter().filter(|l| !l.in_code) {
            for link in links_in(line.text) {
                let target = link.target.as_str();
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let where_ = format!("{}:{}", file.display(), line.number);
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    let rel = normalize(&dir.join(path));
                    if !root().join(&rel).exists() {
                        errors.push(format!("{where_}: {target} — {} does not exist", rel.display()));
                        continue;
                    }
                    rel
                };
                if let Some(anchor) = anchor {
                    if linked.extension().is_some_and(|e| e == "md") {
                        let found = anchors(&linked);
                        if !found.contains(anchor) {
                            let mut known: Vec<&String> = found.iter().collect();
                            known.sort();
                            errors.push(format!(
                                "{where_}: {target} — {} has no heading with the anchor #{anchor} (its anchors: {})",
                                linked.display(),
                                known.iter().map(|a| format!("#{a}")).collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!("{checked} relative links and images checked");
    assert!(checked >= 20, "only {checked} links found");
    assert!(
        errors.is_empty(),
        "{} broken link(s) in the docs:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

/// `a/b/../c` → `a/c` (without touching the file system); a path that leaves the root keeps its `..`.
fn normalize(p: &Path) -> PathBuf {
    let mut out: Vec<std::path::Component> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if matches!(out.last(), Some(std::path::Component::Normal(_))) => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.iter().collect()
}
