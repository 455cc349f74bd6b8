//! Prometheus text exposition format: `name{label="value",...} value [timestamp_ms]`.
//! `# HELP` / `# TYPE` comment lines are skipped; lines without a timestamp get `now_ms`.

use std::borrow::Cow;

use super::{parse_f64, parse_i64, text_lines, trim, BatchBuilder, SeriesBuf};

/// Parses a whole body into `out`.
pub fn parse(body: &[u8], now_ms: i64, out: &mut BatchBuilder<'_>) {
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
        match parse_line(line, now_ms, &mut buf) {
            Ok((ts, v)) => out.add(&mut buf, ts, v, n),
            Err(reason) => out.error(n, reason),
        }
    }
}

fn parse_line<'a>(
    line: &'a str,
    now_ms: i64,
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
    let rest = trim(&b[pos..]);
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
        Some(t) if !t.is_empty() => parse_i64(t).ok_or_else(|| {
            format!(
                "invalid timestamp {:?}: expected integer milliseconds",
                String::from_utf8_lossy(t)
            )
        })?,
        _ => now_ms,
    };
    Ok((ts, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    #[test]
    fn parses_exposition() {
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
