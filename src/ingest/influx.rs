//! Influx line protocol: `measurement[,tag=v...] field=v[,field=v...] [timestamp]`.
//!
//! Measurement `m` and field `f` become metric `m_f` (field `value` becomes `m`); tags become
//! labels; float, integer (`1i`), unsigned (`1u`) and boolean fields become samples; string fields
//! are rejected with an error that names the line. Characters Prometheus does not allow in names
//! are replaced by `_`, as Telegraf's Prometheus serializer does. Zero-copy unless a token is
//! escaped.

use std::borrow::Cow;

use super::{parse_f64, parse_i64, text_lines, trim, BatchBuilder, SeriesBuf};
use crate::model::{is_valid_label_name, is_valid_metric_name};

/// Timestamp unit of the `precision` query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    /// Parses `ns`, `us` (or `u`), `ms`, `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ns" | "n" | "" => Precision::Ns,
            "us" | "u" | "µs" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            _ => return None,
        })
    }
    fn to_ms(self, t: i64) -> i64 {
        match self {
            Precision::Ns => t.div_euclid(1_000_000),
            Precision::Us => t.div_euclid(1_000),
            Precision::Ms => t,
            Precision::S => t.saturating_mul(1000),
        }
    }
}

/// Parses a whole body into `out`; `now_ms` stamps lines without a timestamp.
pub fn parse(body: &[u8], precision: Precision, now_ms: i64, out: &mut BatchBuilder<'_>) {
    parse_body(body, precision, Some(now_ms), out)
}

/// Parses a whole body into `out`, rejecting lines without a timestamp (an import has no
/// "now" to give them).
pub fn parse_timestamped(body: &[u8], precision: Precision, out: &mut BatchBuilder<'_>) {
    parse_body(body, precision, None, out)
}

fn parse_body(body: &[u8], precision: Precision, now_ms: Option<i64>, out: &mut BatchBuilder<'_>) {
    // Names are sanitized here, so the builder need not validate them again.
    let mut buf = SeriesBuf {
        names_prevalidated: true,
        ..SeriesBuf::default()
    };
    let mut fields: Vec<Field> = Vec::new();
    out.reserve(body.len() / 96);
    for (n, line) in text_lines(body) {
        let line = match line {
            Ok(l) => l,
            Err(reason) => {
                out.error(n, reason);
                continue;
            }
        };
        if let Err(reason) = parse_line(line, precision, now_ms, n, &mut buf, &mut fields, out) {
            out.error(n, reason);
        }
    }
}

/// A field's key range, value range and whether the key has escapes.
struct Field {
    key: (usize, usize),
    value: (usize, usize),
    escaped: bool,
}

/// Stop at a space or comma.
const SPACE_COMMA: bool = false;
/// Stop at a space, comma or equals sign.
const KEY_END: bool = true;

/// Scans from `pos` to the first unescaped space or comma (and `=` when `key`); returns the end
/// index and whether an escape was seen.
#[inline(always)]
fn scan(line: &[u8], mut pos: usize, key: bool) -> (usize, bool) {
    let mut escaped = false;
    while let Some(&c) = line.get(pos) {
        match c {
            b' ' | b',' => break,
            b'=' if key => break,
            b'\\' if pos + 1 < line.len() => {
                escaped = true;
                pos += 2;
            }
            _ => pos += 1,
        }
    }
    (pos.min(line.len()), escaped)
}

/// The token `line[a..b]`, unescaped when needed. Bounds are at ASCII delimiters, so they are
/// char boundaries; `get` keeps a malformed escape from ever panicking.
fn token(line: &str, a: usize, b: usize, escaped: bool) -> Result<Cow<'_, str>, String> {
    let text = line
        .get(a..b)
        .ok_or_else(|| format!("malformed escape near byte {}", a + 1))?;
    if !escaped {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '=' | ' ' | '"' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(Cow::Owned(out))
}

/// Replaces characters that are invalid in a Prometheus name with `_`.
fn sanitize(s: Cow<'_, str>, metric: bool) -> Cow<'_, str> {
    let valid = if metric {
        is_valid_metric_name(&s)
    } else {
        is_valid_label_name(&s)
    };
    if valid {
        return s;
    }
    let ok = |i: usize, c: u8| {
        c.is_ascii_alphabetic()
            || c == b'_'
            || (metric && c == b':')
            || (i > 0 && c.is_ascii_digit())
    };
    let mut out = String::with_capacity(s.len() + 1);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii() && ok(i, c as u8) {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    Cow::Owned(out)
}

fn parse_line<'a>(
    line: &'a str,
    precision: Precision,
    now_ms: Option<i64>,
    lineno: usize,
    buf: &mut SeriesBuf<'a>,
    fields: &mut Vec<Field>,
    out: &mut BatchBuilder<'_>,
) -> Result<(), String> {
    let b = line.as_bytes();
    // Measurement.
    let (end, esc) = scan(b, 0, SPACE_COMMA);
    if end == 0 {
        return Err("missing measurement name".into());
    }
    let measurement = sanitize(token(line, 0, end, esc)?, true);
    buf.clear();
    let mut pos = end;
    // Tags.
    while pos < b.len() && b[pos] == b',' {
        let (keq, kesc) = scan(b, pos + 1, KEY_END);
        if keq >= b.len() || b[keq] != b'=' {
            return Err(format!("tag at byte {} has no '=value'", pos + 1));
        }
        let (vend, vesc) = scan(b, keq + 1, SPACE_COMMA);
        let key = token(line, pos + 1, keq, kesc)?;
        if key.is_empty() {
            return Err(format!("empty tag key at byte {}", pos + 1));
        }
        if key.len() == 8 && key == "__name__" {
            return Err("tag key __name__ is reserved".into());
        }
        let val = token(line, keq + 1, vend, vesc)?;
        buf.push_label(sanitize(key, false), val);
        pos = vend;
    }
    if pos >= b.len() {
        return Err("missing fields (expected a space, then field=value)".into());
    }
    pos += 1; // the space
              // Fields: collect positions first, then the timestamp, then emit.
    fields.clear();
    loop {
        let (keq, kesc) = scan(b, pos, KEY_END);
        if keq >= b.len() || b[keq] != b'=' {
            return Err(format!("field at byte {} has no '=value'", pos + 1));
        }
        if keq == pos {
            return Err(format!("empty field key at byte {}", pos + 1));
        }
        let vstart = keq + 1;
        let vend = if b.get(vstart) == Some(&b'"') {
            // Quoted string: find the closing unescaped quote.
            let mut p = vstart + 1;
            loop {
                match b.get(p) {
                    None => {
                        return Err(format!(
                            "unterminated string field value at byte {}",
                            vstart + 1
                        ))
                    }
                    Some(b'\\') => p += 2,
                    Some(b'"') => break p + 1,
                    Some(_) => p += 1,
                }
            }
        } else {
            scan(b, vstart, SPACE_COMMA).0
        };
        fields.push(Field {
            key: (pos, keq),
            value: (vstart, vend.min(b.len())),
            escaped: kesc,
        });
        pos = vend;
        if pos < b.len() && b[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    // Timestamp.
    let ts = match b.get(pos..).map(trim) {
        Some(t) if !t.is_empty() => {
            let raw = parse_i64(t).ok_or_else(|| {
                format!(
                    "invalid timestamp {:?}: expected an integer",
                    String::from_utf8_lossy(t)
                )
            })?;
            precision.to_ms(raw)
        }
        _ => now_ms.ok_or(
            "line without a timestamp: an import needs one on every line (influx_inspect export writes them)",
        )?,
    };
    // One sample per field.
    let mut first_err = None;
    for f in fields.iter() {
        let key = token(line, f.key.0, f.key.1, f.escaped)?;
        let value = match field_value(&b[f.value.0..f.value.1]) {
            Ok(v) => v,
            Err(e) => {
                first_err.get_or_insert(format!("field {key:?}: {e}"));
                continue;
            }
        };
        if key.len() == 5 && key == "value" {
            buf.set_name(&[&measurement]);
        } else {
            buf.set_name(&[&measurement, "_", &sanitize(key, true)]);
        }
        out.add(buf, ts, value, lineno);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn field_value(raw: &[u8]) -> Result<f64, String> {
    match raw {
        [] => Err("empty field value".into()),
        [b'"', ..] => Err("string field values are not supported: only float, integer and boolean fields become samples".into()),
        b"t" | b"T" | b"true" | b"True" | b"TRUE" => Ok(1.0),
        b"f" | b"F" | b"false" | b"False" | b"FALSE" => Ok(0.0),
        [rest @ .., b'i' | b'u'] => parse_i64(rest)
            .map(|v| v as f64)
            .ok_or_else(|| format!("invalid integer field value {:?}", String::from_utf8_lossy(raw))),
        _ => parse_f64(raw).ok_or_else(|| format!("invalid field value {:?}: expected a number, 1i, 1u, or a boolean", String::from_utf8_lossy(raw))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    fn run(body: &str) -> (crate::model::WriteBatch, Vec<crate::ingest::LineError>) {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        parse(body.as_bytes(), Precision::Ns, 42, &mut b);
        let (batch, errs, _) = b.finish();
        (batch, errs)
    }

    #[test]
    fn basic_fields_and_tags() {
        let (b, errs) =
            run("cpu,host=a,region=eu value=0.5,idle=3i 1700000000000000000\nmem,host=a used=1u\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(b.series.len(), 3);
        assert_eq!(b.labels(0).to_string(), "cpu{host=\"a\", region=\"eu\"}");
        assert_eq!(
            b.labels(1).to_string(),
            "cpu_idle{host=\"a\", region=\"eu\"}"
        );
        assert_eq!(b.samples[0].ts, 1_700_000_000_000);
        assert_eq!(b.samples[2].ts, 42);
        assert_eq!(b.samples[1].value, 3.0);
    }

    #[test]
    fn escapes() {
        let (b, errs) = run(r#"my\ meas,ta\,g=v\ 1\=x value=1 1"#);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(b.labels(0).get("__name__"), Some("my_meas"));
        assert_eq!(b.labels(0).get("ta_g"), Some("v 1=x"));
    }

    #[test]
    fn bad_lines_keep_good_ones() {
        let (b, errs) =
            run("ok value=1 1\nbad value=abc 1\nstr,x=y s=\"hi\",v=2 1\nnofields\nok value=2 2\n");
        assert_eq!(b.samples.len(), 3, "{b:?}");
        assert_eq!(
            errs.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(
            errs[1].reason.contains("string field"),
            "{}",
            errs[1].reason
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let limits = Limits::default();
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut body = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let alphabet = b"a=, \\\"\n1i.tf-";
                body.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let mut b = BatchBuilder::new(&limits);
            parse(&body, Precision::Ms, 0, &mut b);
            let mut b = BatchBuilder::new(&limits);
            parse(
                &body
                    .iter()
                    .map(|c| c.wrapping_add(seed as u8))
                    .collect::<Vec<_>>(),
                Precision::Ms,
                0,
                &mut b,
            );
        }
    }
}
