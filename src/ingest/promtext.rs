//! Prometheus text exposition format: `name{label="value",...} value [timestamp_ms]`.
//! `# HELP` / `# TYPE` comment lines are skipped; lines without a timestamp get `now_ms`.

use super::{parse_f64, parse_i64, BatchBuilder, SeriesBuf};

/// Parses a whole body into `out`.
pub fn parse(body: &[u8], now_ms: i64, out: &mut BatchBuilder<'_>) {
    let mut buf = SeriesBuf::default();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = trim(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        match parse_line(line, now_ms, &mut buf) {
            Ok((ts, v)) => out.add(&mut buf, ts, v, i + 1),
            Err(reason) => out.error(i + 1, reason),
        }
    }
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

fn utf8(s: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(s).map_err(|_| "invalid UTF-8".to_string())
}

fn parse_line(line: &[u8], now_ms: i64, buf: &mut SeriesBuf) -> Result<(i64, f64), String> {
    buf.clear();
    let name_end = line
        .iter()
        .position(|&c| c == b'{' || c == b' ' || c == b'\t')
        .ok_or("missing value after metric name")?;
    if name_end == 0 {
        return Err("missing metric name".into());
    }
    buf.push("__name__", utf8(&line[..name_end])?);
    let mut pos = name_end;
    if line[pos] == b'{' {
        pos += 1;
        loop {
            while pos < line.len() && (line[pos] == b' ' || line[pos] == b',') {
                pos += 1;
            }
            match line.get(pos) {
                None => return Err("unterminated label set: missing '}'".into()),
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => {}
            }
            let eq = line[pos..]
                .iter()
                .position(|&c| c == b'=')
                .ok_or("label without '=\"value\"'")?
                + pos;
            let name = utf8(trim(&line[pos..eq]))?;
            if line.get(eq + 1) != Some(&b'"') {
                return Err(format!("value of label {name:?} must be a quoted string"));
            }
            let mut p = eq + 2;
            let mut escaped = false;
            loop {
                match line.get(p) {
                    None => return Err(format!("unterminated value of label {name:?}")),
                    Some(b'\\') => {
                        escaped = true;
                        p += 2
                    }
                    Some(b'"') => break,
                    Some(_) => p += 1,
                }
            }
            let raw = utf8(line.get(eq + 2..p).ok_or("unterminated label value")?)?;
            buf.push(name, if escaped { "" } else { raw });
            if escaped {
                let v = buf.last_value_mut().expect("just pushed");
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
            }
            pos = p + 1;
        }
    }
    let rest = trim(&line[pos..]);
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
}
