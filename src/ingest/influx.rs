//! Influx line protocol: `measurement[,tag=v...] field=v[,field=v...] [timestamp]`.
//!
//! Measurement `m` and field `f` become metric `m_f` (field `value` becomes `m`); tags become
//! labels; float, integer (`1i`), unsigned (`1u`) and boolean fields become samples; string fields
//! are rejected with an error that names the line. Characters Prometheus does not allow in names
//! are replaced by `_`, as Telegraf's Prometheus serializer does. Zero-copy unless a token is
//! escaped.

use std::borrow::Cow;

use super::{parse_f64, parse_i64, BatchBuilder, SeriesBuf};

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
    let mut buf = SeriesBuf::default();
    let mut scratch = Scratch::default();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = trim(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        if let Err(reason) = parse_line(line, precision, now_ms, i + 1, &mut buf, &mut scratch, out)
        {
            out.error(i + 1, reason);
        }
    }
}

#[derive(Default)]
struct Scratch {
    name: String,
    fields: Vec<(usize, usize, usize, usize)>,
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

/// Scans from `pos` to the first unescaped byte in `stops`; returns the end index and whether an
/// escape was seen.
#[inline]
fn scan(line: &[u8], mut pos: usize, stops: &[u8]) -> (usize, bool) {
    let mut escaped = false;
    while pos < line.len() {
        let c = line[pos];
        if c == b'\\' && pos + 1 < line.len() {
            escaped = true;
            pos += 2;
            continue;
        }
        if stops.contains(&c) {
            break;
        }
        pos += 1;
    }
    (pos, escaped)
}

fn unescape(s: &[u8], escaped: bool) -> Result<Cow<'_, str>, String> {
    let text = std::str::from_utf8(s).map_err(|_| "invalid UTF-8".to_string())?;
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
fn sanitize(s: &str, metric: bool) -> Cow<'_, str> {
    let ok = |i: usize, c: u8| {
        c.is_ascii_alphabetic()
            || c == b'_'
            || (metric && c == b':')
            || (i > 0 && c.is_ascii_digit())
    };
    if s.bytes().enumerate().all(|(i, c)| ok(i, c)) && !s.is_empty() {
        return Cow::Borrowed(s);
    }
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

fn parse_line(
    line: &[u8],
    precision: Precision,
    now_ms: i64,
    lineno: usize,
    buf: &mut SeriesBuf,
    scratch: &mut Scratch,
    out: &mut BatchBuilder<'_>,
) -> Result<(), String> {
    // Measurement.
    let (end, esc) = scan(line, 0, b", ");
    if end == 0 {
        return Err("missing measurement name".into());
    }
    let measurement = unescape(&line[..end], esc)?;
    let measurement = sanitize(&measurement, true).into_owned();
    buf.clear();
    let mut pos = end;
    // Tags.
    while pos < line.len() && line[pos] == b',' {
        let (keq, kesc) = scan(line, pos + 1, b"=, ");
        if keq >= line.len() || line[keq] != b'=' {
            return Err(format!("tag at byte {} has no '=value'", pos + 1));
        }
        let (vend, vesc) = scan(line, keq + 1, b", ");
        let key = unescape(&line[pos + 1..keq], kesc)?;
        let val = unescape(&line[keq + 1..vend], vesc)?;
        if key.is_empty() {
            return Err(format!("empty tag key at byte {}", pos + 1));
        }
        if key == "__name__" {
            return Err("tag key __name__ is reserved".into());
        }
        buf.push(&sanitize(&key, false), &val);
        pos = vend;
    }
    if pos >= line.len() {
        return Err("missing fields (expected a space, then field=value)".into());
    }
    pos += 1; // the space
              // Fields: collect positions first, then the timestamp, then emit.
    scratch.fields.clear();
    loop {
        let (keq, kesc) = scan(line, pos, b"=, ");
        if keq >= line.len() || line[keq] != b'=' {
            return Err(format!("field at byte {} has no '=value'", pos + 1));
        }
        if keq == pos {
            return Err(format!("empty field key at byte {}", pos + 1));
        }
        let vstart = keq + 1;
        let vend = if line.get(vstart) == Some(&b'"') {
            // Quoted string: find the closing unescaped quote.
            let mut p = vstart + 1;
            loop {
                match line.get(p) {
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
            scan(line, vstart, b", ").0
        };
        scratch.fields.push((pos, keq, vend, usize::from(kesc)));
        pos = vend;
        if pos < line.len() && line[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    // Timestamp.
    let ts = if pos < line.len() {
        let t = trim(&line[pos..]);
        if t.is_empty() {
            now_ms
        } else {
            let raw = parse_i64(t).ok_or_else(|| {
                format!(
                    "invalid timestamp {:?}: expected an integer",
                    String::from_utf8_lossy(t)
                )
            })?;
            precision.to_ms(raw)
        }
    } else {
        now_ms
    };
    // Emit one sample per field.
    let mut first_err = None;
    let fields = std::mem::take(&mut scratch.fields);
    for &(kstart, keq, vend, kesc) in &fields {
        let key = unescape(&line[kstart..keq], kesc != 0)?;
        let raw = &line[keq + 1..vend];
        let value = match field_value(raw) {
            Ok(v) => v,
            Err(e) => {
                first_err.get_or_insert(format!("field {key:?}: {e}"));
                continue;
            }
        };
        if key == "value" {
            buf.set_joined_name(&measurement, "", "");
        } else {
            scratch.name.clear();
            scratch.name.push_str(&sanitize(&key, true));
            buf.set_joined_name(&measurement, "_", &scratch.name);
        }
        out.add(buf, ts, value, lineno);
    }
    scratch.fields = fields;
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

    fn run(body: &str) -> (crate::ingest::WriteBatch, Vec<crate::ingest::LineError>) {
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
