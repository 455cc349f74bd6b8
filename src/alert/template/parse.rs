//! Lexing and parsing: actions into pipelines, the text into nodes (`if`, `range`, `with`,
//! `define`, `template`, `block`).

use super::*;

/// Tokens inside `{{ }}`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Var(String, Vec<String>),
    Field(Vec<String>),
    /// `.a.b` right after `)`: fields of the parenthesized value.
    Chain(Vec<String>),
    Str(String),
    Num(String),
    Pipe,
    Open,
    Close,
    Declare,
    Assign,
    Comma,
}

pub(super) fn lex_action(src: &str) -> Result<Vec<Tok>, TemplateError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let fields = |i: &mut usize| -> Vec<String> {
        let mut f = Vec::new();
        while *i < b.len() && b[*i] == b'.' {
            let s = *i + 1;
            let mut e = s;
            while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                e += 1;
            }
            if e == s {
                break;
            }
            f.push(src[s..e].to_string());
            *i = e;
        }
        f
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' | b'(' | b')' | b',' | b'=' => {
                out.push(match c {
                    b'|' => Tok::Pipe,
                    b'(' => Tok::Open,
                    b')' => Tok::Close,
                    b',' => Tok::Comma,
                    _ => Tok::Assign,
                });
                i += 1
            }
            b':' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&c) = b.get(i) else {
                        return err("unterminated quoted string");
                    };
                    match c {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            let Some(&n) = b.get(i + 1) else {
                                return err("unterminated quoted string");
                            };
                            s.push(match n {
                                b'n' => '\n',
                                b't' => '\t',
                                b'r' => '\r',
                                b'\\' => '\\',
                                b'"' => '"',
                                _ => return err(format!("unknown escape \\{}", n as char)),
                            });
                            i += 2;
                        }
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('?');
                            s.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            b'`' => {
                let Some(end) = src[i + 1..].find('`') else {
                    return err("unterminated raw string");
                };
                out.push(Tok::Str(src[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'$' => {
                let s = i + 1;
                let mut e = s;
                while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                    e += 1;
                }
                let name = src[s..e].to_string();
                i = e;
                let f = fields(&mut i);
                out.push(Tok::Var(name, f));
            }
            b'.' => {
                if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let s = i;
                    i += 1;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                        i += 1;
                    }
                    out.push(Tok::Num(src[s..i].to_string()));
                    continue;
                }
                let chained = i > 0 && b[i - 1] == b')';
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(if chained && !f.is_empty() {
                    Tok::Chain(f)
                } else {
                    Tok::Field(f)
                });
            }
            b'-' | b'+' | b'0'..=b'9' => {
                let s = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                out.push(Tok::Num(src[s..i].to_string()));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(src[s..i].to_string()));
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(format!("unexpected {ch:?} in action"));
            }
        }
    }
    Ok(out)
}

pub(super) struct PipeParser<'t> {
    pub(super) toks: &'t [Tok],
    pub(super) pos: usize,
}

impl PipeParser<'_> {
    pub(super) fn pipeline(&mut self, allow_decl: bool) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        if allow_decl {
            // `$x :=`, `$x =`, `$k, $v :=`
            let mut j = self.pos;
            let mut names = Vec::new();
            while let Some(Tok::Var(n, f)) = self.toks.get(j) {
                if !f.is_empty() {
                    break;
                }
                names.push(n.clone());
                j += 1;
                if self.toks.get(j) == Some(&Tok::Comma) {
                    j += 1;
                } else {
                    break;
                }
            }
            match self.toks.get(j) {
                Some(Tok::Declare) if !names.is_empty() => {
                    decl = names;
                    self.pos = j + 1;
                }
                Some(Tok::Assign) if names.len() == 1 => {
                    decl = names;
                    assign = true;
                    self.pos = j + 1;
                }
                _ => {}
            }
        }
        let mut cmds = Vec::new();
        loop {
            let mut args = Vec::new();
            while let Some(t) = self.toks.get(self.pos) {
                let a = match t {
                    Tok::Pipe | Tok::Close => break,
                    Tok::Open => {
                        self.pos += 1;
                        let p = self.pipeline(false)?;
                        if self.toks.get(self.pos) != Some(&Tok::Close) {
                            return err("unclosed left paren");
                        }
                        if let Some(Tok::Chain(f)) = self.toks.get(self.pos + 1) {
                            self.pos += 1;
                            Arg::Chain(Box::new(Arg::Pipe(Box::new(p))), f.clone())
                        } else {
                            Arg::Pipe(Box::new(p))
                        }
                    }
                    Tok::Ident(n) => match n.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "nil" => Arg::Nil,
                        f if FUNCS.contains(&f) => Arg::Func(f.to_string()),
                        f => return err(format!("function {f:?} not defined")),
                    },
                    Tok::Var(n, f) => Arg::Var(n.clone(), f.clone()),
                    Tok::Field(f) => Arg::Field(f.clone()),
                    Tok::Str(s) => Arg::Str(s.clone()),
                    Tok::Num(s) => parse_num(s)?,
                    Tok::Chain(f) => {
                        return err(format!(
                            "unexpected .{} (fields follow a value in parentheses)",
                            f.join(".")
                        ))
                    }
                    Tok::Declare | Tok::Assign | Tok::Comma => {
                        return err("unexpected declaration in the middle of a command")
                    }
                };
                args.push(a);
                self.pos += 1;
            }
            if args.is_empty() {
                return err("missing value for command");
            }
            cmds.push(args);
            if self.toks.get(self.pos) == Some(&Tok::Pipe) {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(Pipeline { decl, assign, cmds })
    }
}

pub(super) fn parse_num(s: &str) -> Result<Arg, TemplateError> {
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Arg::Int(i));
    }
    s.parse::<f64>()
        .map(Arg::Num)
        .or_else(|_| err(format!("bad number syntax: {s:?}")))
}

pub(super) fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let toks = lex_action(src)?;
    let mut p = PipeParser {
        toks: &toks,
        pos: 0,
    };
    let pipe = p.pipeline(true)?;
    if p.pos != toks.len() {
        return err(format!("unexpected {:?} in command", toks[p.pos]));
    }
    Ok(pipe)
}

/// One `{{ }}` (with its line) or run of text.
pub(super) enum Piece {
    Text(String),
    Action(String, usize),
}

pub(super) fn split(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut line = 1;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text.truncate(text.trim_end().len());
            inner = &inner[1..];
        }
        line += rest[..open].matches('\n').count();
        let close = if inner.trim_start().starts_with("/*") {
            inner
                .find("*/")
                .and_then(|c| inner[c..].find("}}").map(|d| c + d))
        } else {
            find_close(inner)
        };
        let Some(close) = close else {
            return err(format!("line {line}: unclosed action"));
        };
        let mut body = &inner[..close];
        let mut after = &inner[close + 2..];
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            after = after.trim_start();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Piece::Action(body.to_string(), line));
        }
        line += inner[..close].matches('\n').count();
        rest = after;
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// The `}}` closing an action, skipping quoted strings.
pub(super) fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

pub(super) fn keyword(action: &str) -> (&str, &str) {
    let word_end = action
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(action.len());
    let (w, rest) = action.split_at(word_end);
    match w {
        "if" | "else" | "end" | "with" | "range" | "define" | "template" | "block" | "break"
        | "continue" => (w, rest.trim()),
        _ => ("", action),
    }
}

/// The name of `{{ define "x" }}`, `{{ template "x" ... }}`, `{{ block "x" ... }}` and what
/// follows it.
pub(super) fn template_name<'a>(
    kw: &str,
    rest: &'a str,
) -> Result<(String, &'a str), TemplateError> {
    let toks = lex_action(rest)?;
    let Some(Tok::Str(name)) = toks.first() else {
        return err(format!("{{{{{kw}}}}} needs a quoted template name"));
    };
    // The name is the first token: find where it ends in `rest`.
    let q = rest.trim_start();
    let close = q[1..]
        .find(if q.starts_with('`') { '`' } else { '"' })
        .map_or(q.len(), |i| i + 2);
    Ok((name.clone(), q[close..].trim()))
}

pub(super) fn unclosed(kw: &str) -> TemplateError {
    TemplateError(format!("unexpected EOF: {{{{{kw}}}}} has no {{{{end}}}}"))
}

pub(super) struct NodeParser {
    pub(super) pieces: std::iter::Peekable<std::vec::IntoIter<Piece>>,
    pub(super) defs: Defs,
}

impl NodeParser {
    /// Nodes up to the `{{end}}`/`{{else}}` closing `depth` (returned with its line), or to
    /// the end of the input at depth 0.
    pub(super) fn nodes(
        &mut self,
        depth: usize,
    ) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(p) = self.pieces.next() {
            match p {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Action(a, line) => {
                    let at = |e: TemplateError| TemplateError(format!("line {line}: {}", e.0));
                    let (kw, rest) = keyword(&a);
                    match kw {
                        "" => nodes.push(Node::Action(parse_pipeline(rest).map_err(at)?)),
                        "end" | "else" => {
                            if depth == 0 {
                                return Err(at(TemplateError(format!("unexpected {{{{{kw}}}}}"))));
                            }
                            return Ok((nodes, Some(a)));
                        }
                        "if" => {
                            let mut arms = vec![];
                            let mut cond = parse_pipeline(rest).map_err(at)?;
                            let mut otherwise = Vec::new();
                            loop {
                                let (body, stop) = self.nodes(depth + 1)?;
                                arms.push((cond, body));
                                let Some(stop) = stop else {
                                    return Err(at(unclosed(kw)));
                                };
                                let (k, r) = keyword(&stop);
                                if k == "end" {
                                    break;
                                }
                                if k == "else" && r.starts_with("if") {
                                    cond = parse_pipeline(&r[2..]).map_err(at)?;
                                    continue;
                                }
                                let (body, stop) = self.nodes(depth + 1)?;
                                let Some(stop) = stop else {
                                    return Err(at(unclosed(kw)));
                                };
                                if keyword(&stop).0 != "end" {
                                    return Err(at(TemplateError(
                                        "expected {{end}} after {{else}}".into(),
                                    )));
                                }
                                otherwise = body;
                                break;
                            }
                            nodes.push(Node::If(arms, otherwise));
                        }
                        "with" | "range" => {
                            let pipe = parse_pipeline(rest).map_err(at)?;
                            let (body, stop) = self.nodes(depth + 1)?;
                            let Some(stop) = stop else {
                                return Err(at(unclosed(kw)));
                            };
                            let mut otherwise = Vec::new();
                            if keyword(&stop).0 == "else" {
                                let (b, s) = self.nodes(depth + 1)?;
                                let Some(s) = s else {
                                    return Err(at(unclosed(kw)));
                                };
                                if keyword(&s).0 != "end" {
                                    return Err(at(TemplateError(format!(
                                        "expected {{{{end}}}} after {{{{{kw}}}}}"
                                    ))));
                                }
                                otherwise = b;
                            } else if keyword(&stop).0 != "end" {
                                return Err(at(TemplateError(format!("unclosed {{{{{kw}}}}}"))));
                            }
                            nodes.push(if kw == "with" {
                                Node::With(pipe, body, otherwise)
                            } else {
                                Node::Range(pipe, body, otherwise)
                            });
                        }
                        "define" | "block" => {
                            if kw == "define" && depth > 0 {
                                return Err(at(TemplateError(
                                    "{{define}} is only allowed at the top level".into(),
                                )));
                            }
                            let (name, rest) = template_name(kw, rest).map_err(at)?;
                            let pipe = if kw == "block" {
                                Some(parse_pipeline(rest).map_err(at)?)
                            } else if !rest.is_empty() {
                                return Err(at(TemplateError(format!(
                                    "unexpected {rest:?} after the name in {{{{define}}}}"
                                ))));
                            } else {
                                None
                            };
                            let (body, stop) = self.nodes(depth + 1)?;
                            if keyword(stop.as_deref().unwrap_or("")).0 != "end" {
                                return Err(at(TemplateError(format!(
                                    "{{{{{kw} {name:?}}}}} has no {{{{end}}}}"
                                ))));
                            }
                            self.defs.map.insert(name.clone(), Arc::new(body));
                            if kw == "block" {
                                nodes.push(Node::Call(name, pipe));
                            }
                        }
                        "template" => {
                            let (name, rest) = template_name(kw, rest).map_err(at)?;
                            let pipe = if rest.is_empty() {
                                None
                            } else {
                                Some(parse_pipeline(rest).map_err(at)?)
                            };
                            nodes.push(Node::Call(name, pipe));
                        }
                        k => {
                            return Err(at(TemplateError(format!("{{{{{k}}}}} is not supported"))))
                        }
                    }
                }
            }
        }
        // At depth > 0 the caller reports the unclosed action with its line.
        Ok((nodes, None))
    }
}
