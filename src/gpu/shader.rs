//! WGSL templates. Every shader is `shaders/prelude.wgsl` (layouts, flags and helpers shared by all kernels)
//! followed by its family's file (the two conv families also share `shaders/conv_common.wgsl`; the registry is
//! [`kernels::FAMILIES`](super::kernels::FAMILIES)), expanded by [`expand`]:
//!
//! * `const NAME: u32 = ...;` declarations named in the substitution list get the host's value. Substituting a
//!   name the shader does not declare is an error, so a renamed constant can never silently keep its old value.
//! * `//@for VAR in COUNT {` … `//@}` repeats its lines COUNT times (COUNT is a number, a constant or `${expr}`),
//!   replacing `$VAR` by the index. `${expr}` is replaced by the value of an integer expression over loop
//!   variables and constants (`+ - * / %`, parentheses). Loops nest. Register tiles are written this way, so that
//!   every array index is a compile-time constant: dynamically indexed local arrays become memory on CPU
//!   rasterisers.
//! * `//@if NAME {` … `//@}` keeps its lines only if the constant NAME is non-zero (`//@if !NAME {` if zero).

use anyhow::{anyhow, ensure, Result};
use std::collections::HashMap;

/// The full, expanded source of `family` (see [`kernels::FAMILIES`](super::kernels::FAMILIES)): the prelude, what
/// the family prepends, and its file, with `consts` substituted.
pub fn source(family_name: &str, consts: &[(&str, u32)]) -> Result<String> {
    let family = super::kernels::family(family_name)?;
    let mut text = format!("{}\n", super::kernels::prelude::PRELUDE);
    for part in family.prepend {
        text.push_str(part);
        text.push('\n');
    }
    text.push_str(family.source);
    expand(&text, consts).map_err(|e| anyhow!("shaders/{family_name}.wgsl: {e}"))
}

/// Expands the template (see the module documentation).
pub fn expand(src: &str, consts: &[(&str, u32)]) -> Result<String> {
    // Constants: the shader's declared defaults, overridden by the host.
    let mut values: HashMap<String, i64> = HashMap::new();
    for line in src.lines() {
        if let Some((name, value)) = const_decl(line) {
            values.insert(name.to_string(), value);
        }
    }
    for (name, v) in consts {
        ensure!(
            values.contains_key(*name),
            "the host substitutes `{name}`, but the shader declares no `const {name}: u32`"
        );
        values.insert(name.to_string(), *v as i64);
    }
    let lines: Vec<&str> = src.lines().collect();
    let mut out = String::with_capacity(src.len() * 2);
    let mut pos = 0;
    expand_block(&lines, &mut pos, &values, &mut Vec::new(), &mut out, false)?;
    Ok(out)
}

/// `const NAME: u32 = 12u;` → (NAME, 12).
fn const_decl(line: &str) -> Option<(&str, i64)> {
    let rest = line.trim().strip_prefix("const ")?;
    let (name, rest) = rest.split_once(':')?;
    let value = rest.trim().strip_prefix("u32")?.trim().strip_prefix('=')?;
    let value = value.trim().strip_suffix(';')?.trim().trim_end_matches('u');
    Some((name.trim(), value.parse().ok()?))
}

fn expand_block(
    lines: &[&str],
    pos: &mut usize,
    consts: &HashMap<String, i64>,
    vars: &mut Vec<(String, i64)>,
    out: &mut String,
    nested: bool,
) -> Result<()> {
    while *pos < lines.len() {
        let line = lines[*pos];
        let t = line.trim();
        *pos += 1;
        if t == "//@}" {
            ensure!(nested, "line {}: `//@}}` without an opening block", *pos);
            return Ok(());
        }
        if let Some(head) = t.strip_prefix("//@for ") {
            let head = head
                .strip_suffix('{')
                .ok_or_else(|| anyhow!("line {}: expected `{{`", *pos))?;
            let (var, count) = head
                .split_once(" in ")
                .ok_or_else(|| anyhow!("line {}: expected `//@for VAR in COUNT {{`", *pos))?;
            let count = count.trim();
            let count = count
                .strip_prefix("${")
                .and_then(|c| c.strip_suffix('}'))
                .unwrap_or(count);
            let count = eval(count, consts, vars).map_err(|e| anyhow!("line {}: {e}", *pos))?;
            let start = *pos;
            if count <= 0 {
                skip_block(lines, pos)?;
            }
            for i in 0..count {
                *pos = start;
                vars.push((var.trim().to_string(), i));
                expand_block(lines, pos, consts, vars, out, true)?;
                vars.pop();
            }
            continue;
        }
        if let Some(head) = t.strip_prefix("//@if ") {
            let head = head
                .strip_suffix('{')
                .ok_or_else(|| anyhow!("line {}: expected `{{`", *pos))?
                .trim();
            let (negate, name) = match head.strip_prefix('!') {
                Some(n) => (true, n.trim()),
                None => (false, head),
            };
            let v = *consts
                .get(name)
                .ok_or_else(|| anyhow!("line {}: `//@if {name}` names no declared constant", *pos))?;
            if (v != 0) != negate {
                expand_block(lines, pos, consts, vars, out, true)?;
            } else {
                skip_block(lines, pos)?;
            }
            continue;
        }
        // A substituted constant's declaration takes the host's value.
        if let Some((name, _)) = const_decl(line) {
            out.push_str(&format!("const {name}: u32 = {}u;\n", consts[name]));
            continue;
        }
        out.push_str(&substitute(line, consts, vars).map_err(|e| anyhow!("line {}: {e}", *pos))?);
        out.push('\n');
    }
    ensure!(!nested, "unterminated `//@for` or `//@if` block");
    Ok(())
}

/// Moves past a block that is not kept (a false `//@if`, a `//@for` of count 0) and its closing `//@}`, without
/// expanding it: its lines may name loop variables or expressions that only make sense where it is kept (a loop
/// over TN / 2 inside `//@if GATE`, where TN may be 1).
fn skip_block(lines: &[&str], pos: &mut usize) -> Result<()> {
    let mut depth = 1;
    while *pos < lines.len() {
        let t = lines[*pos].trim();
        *pos += 1;
        if t == "//@}" {
            depth -= 1;
            if depth == 0 {
                return Ok(());
            }
        } else if t.starts_with("//@for ") || t.starts_with("//@if ") {
            depth += 1;
        }
    }
    Err(anyhow!("unterminated `//@for` or `//@if` block"))
}

/// Replaces `${expr}` and `$var` in a line.
fn substitute(line: &str, consts: &HashMap<String, i64>, vars: &[(String, i64)]) -> Result<String> {
    if !line.contains('$') {
        return Ok(line.to_string());
    }
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').ok_or_else(|| anyhow!("unterminated `${{`"))?;
            out.push_str(&eval(&r[..end], consts, vars)?.to_string());
            rest = &r[end + 1..];
        } else {
            let len = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
            // The longest loop variable that prefixes the identifier (`$m_$n`, `$mx`).
            let name = vars
                .iter()
                .rev()
                .filter(|(v, _)| rest[..len].starts_with(v.as_str()))
                .max_by_key(|(v, _)| v.len())
                .ok_or_else(|| anyhow!("`${}` is not a loop variable", &rest[..len]))?;
            out.push_str(&name.1.to_string());
            rest = &rest[name.0.len()..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Integer expression: numbers, loop variables, constants, `+ - * / %` and parentheses.
fn eval(expr: &str, consts: &HashMap<String, i64>, vars: &[(String, i64)]) -> Result<i64> {
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        let mut cur = String::new();
        for c in expr.chars() {
            if c.is_ascii_alphanumeric() || c == '_' {
                cur.push(c);
            } else {
                if !cur.is_empty() {
                    t.push(std::mem::take(&mut cur));
                }
                if !c.is_whitespace() {
                    t.push(c.to_string());
                }
            }
        }
        if !cur.is_empty() {
            t.push(cur);
        }
        t
    };
    let mut p = 0;
    let v = parse_sum(&tokens, &mut p, consts, vars)?;
    ensure!(p == tokens.len(), "cannot parse `{expr}`");
    Ok(v)
}

type Env<'a> = (&'a HashMap<String, i64>, &'a [(String, i64)]);

fn parse_sum(t: &[String], p: &mut usize, c: &HashMap<String, i64>, v: &[(String, i64)]) -> Result<i64> {
    let mut acc = parse_product(t, p, (c, v))?;
    while *p < t.len() && (t[*p] == "+" || t[*p] == "-") {
        let op = t[*p].clone();
        *p += 1;
        let r = parse_product(t, p, (c, v))?;
        acc = if op == "+" { acc + r } else { acc - r };
    }
    Ok(acc)
}

fn parse_product(t: &[String], p: &mut usize, env: Env) -> Result<i64> {
    let mut acc = parse_atom(t, p, env)?;
    while *p < t.len() && (t[*p] == "*" || t[*p] == "/" || t[*p] == "%") {
        let op = t[*p].clone();
        *p += 1;
        let r = parse_atom(t, p, env)?;
        ensure!(op == "*" || r != 0, "division by zero");
        acc = match op.as_str() {
            "*" => acc * r,
            "/" => acc / r,
            _ => acc % r,
        };
    }
    Ok(acc)
}

fn parse_atom(t: &[String], p: &mut usize, env: Env) -> Result<i64> {
    let tok = t
        .get(*p)
        .ok_or_else(|| anyhow!("unexpected end of expression"))?
        .clone();
    *p += 1;
    if tok == "(" {
        let v = parse_sum(t, p, env.0, env.1)?;
        ensure!(t.get(*p).map(String::as_str) == Some(")"), "missing `)`");
        *p += 1;
        return Ok(v);
    }
    if let Ok(n) = tok.parse::<i64>() {
        return Ok(n);
    }
    if let Some((_, v)) = env.1.iter().rev().find(|(n, _)| *n == tok) {
        return Ok(*v);
    }
    env.0
        .get(&tok)
        .copied()
        .ok_or_else(|| anyhow!("`{tok}` is neither a loop variable nor a declared constant"))
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn templates_expand_loops_conditions_and_constants() {
        let src = "const TN: u32 = 2u;\nconst BYTES: u32 = 0u;\n//@for m in 2 {\n//@for n in TN {\nacc_$m_$n ${m*TN+n}\n//@}\n//@}\n//@if BYTES {\nbytes\n//@}\n//@if !BYTES {\nfloats\n//@}\n";
        let got = expand(src, &[("TN", 3)]).unwrap();
        let want = "const TN: u32 = 3u;\nconst BYTES: u32 = 0u;\nacc_0_0 0\nacc_0_1 1\nacc_0_2 2\nacc_1_0 3\nacc_1_1 4\nacc_1_2 5\nfloats\n";
        assert_eq!(got, want);
        assert!(expand(src, &[("TM", 1)])
            .unwrap_err()
            .to_string()
            .contains("declares no"));
        assert!(expand("//@for m in 2 {\nx\n", &[]).is_err());
        assert!(expand("$q\n", &[]).is_err());
    }

    #[test]
    fn blocks_that_are_not_kept_are_not_expanded() {
        // A loop over TN / 2 = 0 names its variable nowhere it is kept, inside a false `//@if` or on its own.
        let src = "const TN: u32 = 1u;\nconst GATE: u32 = 0u;\n//@if GATE {\n//@for n in ${TN/2} {\na_$n\n//@}\n//@}\n//@for n in ${TN/2} {\n//@if !GATE {\nb_$n\n//@}\n//@}\nend\n";
        assert_eq!(
            expand(src, &[]).unwrap(),
            "const TN: u32 = 1u;\nconst GATE: u32 = 0u;\nend\n"
        );
        let unterminated = expand("const X: u32 = 0u;\n//@if !X {\n", &[("X", 1)]).unwrap_err();
        assert!(unterminated.to_string().contains("unterminated"), "{unterminated}");
    }
}
