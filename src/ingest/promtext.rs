//! Prometheus text exposition format: `name{label="value",...} value [timestamp_ms]`.
//! `# HELP` / `# TYPE` comment lines are skipped; lines without a timestamp get `now_ms`.
//! [`parse_with`] also reads OpenMetrics text (timestamps in seconds, exemplars after ` # `),
//! the format `promtool tsdb create-blocks-from openmetrics` takes, for `tidemark import`.

use std::borrow::Cow;

use super::{parse_f64, parse_i64, text_lines, trim, BatchBuilder, SeriesBuf};

/// How a text body's timestamps are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextOptions {
    /// OpenMetrics: timestamps are seconds (with a fraction), and an exemplar may follow the
    /// sample after ` # `. Otherwise: the Prometheus text format, integer milliseconds.
    pub openmetrics: bool,
    /// A line without a timestamp is an error (an import has no "now" to give it).
    pub require_timestamp: bool,
}

impl TextOptions {
    /// The Prometheus text format as pushed: milliseconds, `now` when missing.
    pub const PUSH: TextOptions = TextOptions {
        openmetrics: false,
        require_timestamp: false,
    };
}

/// Parses a whole body into `out`.
pub fn parse(body: &[u8], now_ms: i64, out: &mut BatchBuilder<'_>) {
    parse_with(body, now_ms, TextOptions::PUSH, out)
}

/// Parses a whole body into `out`, with timestamps read as `opts` says.
pub fn parse_with(body: &[u8], now_ms: i64, opts: TextOptions, out: &mut BatchBuilder<'_>) {
    let mut buf = SeriesBuf::default();
    out.reserve(body.len() / 96);
    for (n, line) in text_lines(body) {
        let line = match line {
            Ok(l) => l,
            Err(reason) => {
                out.error(n, reason);
                continue;
            }
        };
        match parse_line(line, now_ms, opts, &mut buf) {
            Ok((ts, v)) => out.add(&mut buf, ts, v, n),
            Err(reason) => out.error(n, reason),
        }
    }
}

/// The metadata of a body's metric families: its `# HELP`, `# TYPE` and `# UNIT` lines
/// (HELP text unescaped), one entry per family in the order the families first appear. Other
/// comments are ignored; so are metadata lines without a family name.
pub fn metadata(body: &str) -> Vec<(String, crate::model::metadata::Metadata)> {
    metadata_lines(body.lines())
}

/// The lines of `body` that start with `#` (found by searching for `\n#`, so a body without
/// comments costs one memchr pass); lines that are not UTF-8 are skipped.
pub fn comment_lines(body: &[u8]) -> impl Iterator<Item = &str> + '_ {
    let first = (body.first() == Some(&b'#')).then_some(0);
    first
        .into_iter()
        .chain(memchr::memmem::find_iter(body, b"\n#").map(|i| i + 1))
        .filter_map(move |start| {
            let rest = &body[start..];
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end])
                .ok()
                .map(|l| l.trim_end_matches('\r'))
        })
}

/// [`metadata`] of a body's lines (or of just its comment lines).
pub fn metadata_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Vec<(String, crate::model::metadata::Metadata)> {
    let mut out: Vec<(String, crate::model::metadata::Metadata)> = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let rest = rest.trim_start();
        let (what, rest) = match rest.split_once([' ', '\t']) {
            Some((w @ ("HELP" | "TYPE" | "UNIT"), r)) => (w, r.trim_start()),
            _ => continue,
        };
        let (name, text) = match rest.split_once([' ', '\t']) {
            Some((n, t)) => (n, t),
            None => (rest, ""),
        };
        if name.is_empty() {
            continue;
        }
        let i = match out.iter().rposition(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                out.push((name.to_string(), Default::default()));
                out.len() - 1
            }
        };
        let m = &mut out[i].1;
        match what {
            "HELP" => m.help = unescape_help(text),
            "TYPE" => m.kind = text.trim().to_ascii_lowercase(),
            _ => m.unit = text.trim().to_string(),
        }
    }
    for (_, m) in &mut out {
        if m.kind.is_empty() {
            m.kind = "unknown".into();
        }
    }
    out
}

/// HELP text escapes: `\\`, `\n` (and OpenMetrics's `\"`).
fn unescape_help(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// Parses one line into `buf`; returns its time (`now_ms` when it has none) and value.
#[inline]
pub fn parse_line<'a>(
    line: &'a str,
    now_ms: i64,
    opts: TextOptions,
    buf: &mut SeriesBuf<'a>,
) -> Result<(i64, f64), String> {
    buf.clear();
    let b = line.as_bytes();
    let name_end = b
        .iter()
        .position(|&c| c == b'{' || c == b' ' || c == b'\t')
        .ok_or("missing value after metric name")?;
    if name_end > 0 {
        buf.set_name(&[&line[..name_end]]);
    } else if b[0] != b'{' {
        return Err("missing metric name".into());
    }
    let mut pos = name_end;
    if b[pos] == b'{' {
        pos += 1;
        loop {
            while pos < b.len() && (b[pos] == b' ' || b[pos] == b',') {
                pos += 1;
            }
            match b.get(pos) {
                None => return Err("unterminated label set: missing '}'".into()),
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => {}
            }
            let eq = b[pos..]
                .iter()
                .position(|&c| c == b'=')
                .ok_or("label without '=\"value\"'")?
                + pos;
            let name = line[pos..eq].trim();
            if b.get(eq + 1) != Some(&b'"') {
                return Err(format!("value of label {name:?} must be a quoted string"));
            }
            let mut p = eq + 2;
            let mut escaped = false;
            loop {
                match b.get(p) {
                    None => return Err(format!("unterminated value of label {name:?}")),
                    Some(b'\\') => {
                        escaped = true;
                        p += 2
                    }
                    Some(b'"') => break,
                    Some(_) => p += 1,
                }
            }
            let raw = line.get(eq + 2..p).ok_or("unterminated label value")?;
            if !escaped {
                buf.push(Cow::Borrowed(name), Cow::Borrowed(raw));
            } else {
                let mut v = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        match chars.next() {
                            Some('n') => v.push('\n'),
                            Some(o) => v.push(o),
                            None => v.push('\\'),
                        }
                    } else {
                        v.push(c);
                    }
                }
                buf.push(Cow::Borrowed(name), Cow::Owned(v));
            }
            pos = p + 1;
        }
    }
    let (ts, v) = parse_value_ts(&b[pos..], opts)?;
    Ok((ts.unwrap_or(now_ms), v))
}

/// Where the series part of a text-format line ends (after `}` or the metric name), quotes in
/// label values taken into account; `None` when the line has no value after it.
pub fn series_end(line: &[u8]) -> Option<usize> {
    let name_end = line
        .iter()
        .position(|&c| c == b'{' || c == b' ' || c == b'\t')?;
    if line[name_end] != b'{' {
        return Some(name_end);
    }
    let mut i = name_end + 1;
    let mut quoted = false;
    while i < line.len() {
        match line[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The value and optional timestamp after a line's series part (`opts` says the timestamp's
/// unit; an OpenMetrics exemplar after ` #` is dropped).
#[inline]
pub fn parse_value_ts(rest: &[u8], opts: TextOptions) -> Result<(Option<i64>, f64), String> {
    let mut rest = trim(rest);
    if opts.openmetrics {
        // `value [timestamp] # {exemplar labels} value [timestamp]`: the exemplar is dropped.
        if let Some(h) = rest.windows(2).position(|w| w == b" #") {
            rest = trim(&rest[..h]);
        }
    }
    let (val, ts) = match rest.iter().position(|&c| c == b' ' || c == b'\t') {
        Some(sp) => (&rest[..sp], Some(trim(&rest[sp..]))),
        None => (rest, None),
    };
    if val.is_empty() {
        return Err("missing sample value".into());
    }
    let v = parse_f64(val)
        .ok_or_else(|| format!("invalid sample value {:?}", String::from_utf8_lossy(val)))?;
    let ts = match ts {
        Some(t) if !t.is_empty() && opts.openmetrics => Some(
            parse_f64(t)
                .filter(|s| s.is_finite())
                .map(|s| (s * 1000.0).round() as i64)
                .ok_or_else(|| {
                    format!(
                        "invalid timestamp {:?}: OpenMetrics timestamps are seconds since the epoch (such as 1764547200.5)",
                        String::from_utf8_lossy(t)
                    )
                })?,
        ),
        Some(t) if !t.is_empty() => Some(parse_i64(t).ok_or_else(|| {
            format!(
                "invalid timestamp {:?}: expected integer milliseconds",
                String::from_utf8_lossy(t)
            )
        })?),
        _ if opts.require_timestamp => {
            return Err(
                "sample without a timestamp: an import needs one on every sample (add it after the value)"
                    .into(),
            )
        }
        _ => None,
    };
    Ok((ts, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    #[test]
    fn parses_exposition() {
        let body = b"# TYPE a gauge\na 1\n# HELP a The a.\nb 2\n";
        let c: Vec<&str> = comment_lines(body).collect();
        assert_eq!(c, vec!["# TYPE a gauge", "# HELP a The a."]);
        let meta = metadata("# HELP x y \\\\ z\\nw\n# TYPE x counter\n# UNIT x seconds\n# a comment\n# TYPE g gauge\ng 1\n");
        assert_eq!(meta.len(), 2);
        assert_eq!(
            (
                meta[0].0.as_str(),
                meta[0].1.kind.as_str(),
                meta[0].1.help.as_str(),
                meta[0].1.unit.as_str()
            ),
            ("x", "counter", "y \\ z\nw", "seconds")
        );
        assert_eq!(
            (meta[1].0.as_str(), meta[1].1.kind.as_str()),
            ("g", "gauge")
        );
        let body = "# HELP x y\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uo\\\\te\\n\"} 12.5 1000\nup 1\nbad{ 1\nnan_metric NaN 5\n";
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        parse(body.as_bytes(), 7, &mut b);
        let (batch, errs, _) = b.finish();
        assert_eq!(batch.samples.len(), 3);
        assert_eq!(batch.labels(0).get("b"), Some("q\"uo\\te\n"));
        assert_eq!(batch.samples[0].ts, 1000);
        assert_eq!(batch.samples[1].ts, 7);
        assert!(batch.samples[2].value.is_nan());
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 5);
    }

    #[test]
    fn parses_openmetrics_with_seconds_and_exemplars() {
        let body = "# TYPE a counter\na_total{x=\"1\"} 3 1764547200.25 # {trace_id=\"t\"} 1 1764547200\nb 1\nc 2 12x\n# EOF\n";
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let opts = TextOptions {
            openmetrics: true,
            require_timestamp: true,
        };
        parse_with(body.as_bytes(), 7, opts, &mut b);
        let (batch, errs, _) = b.finish();
        assert_eq!(batch.samples.len(), 1);
        assert_eq!(batch.samples[0].ts, 1_764_547_200_250);
        assert_eq!(batch.samples[0].value, 3.0);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].line, 3);
        assert!(
            errs[0].reason.contains("without a timestamp"),
            "{}",
            errs[0].reason
        );
        assert_eq!(errs[1].line, 4);
        assert!(
            errs[1].reason.contains("seconds since the epoch"),
            "{}",
            errs[1].reason
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        let limits = Limits::default();
        let mut seed = 0x9876_5432_u64;
        let alphabet = b"a{}=\",\\ \n1.e+#_:";
        for _ in 0..3000 {
            let mut body = Vec::new();
            for _ in 0..(seed % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let mut b = BatchBuilder::new(&limits);
            parse(&body, 0, &mut b);
            let mut b = BatchBuilder::new(&limits);
            let shifted: Vec<u8> = body
                .iter()
                .map(|c| c.wrapping_mul(seed as u8 | 1))
                .collect();
            parse(&shifted, 0, &mut b);
        }
    }
}
