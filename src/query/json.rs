//! The query API's response encoder: Prometheus's JSON for a [`QueryValue`], written straight
//! into bytes. A range query over the fleet returns 2,500 series x 60 points; building that as
//! a `serde_json::Value` tree (an allocation per point, per number string and per label) and
//! then serialising it took about 70 % of the request's CPU (`benches/README.md`, "Query
//! speed"). Here each point is a few `memcpy`s into one buffer.
//!
//! Numbers are written as Prometheus writes them: timestamps as seconds with the milliseconds
//! as a three-digit fraction when not zero (`jsonutil.MarshalTimestamp`), values as strings of
//! Go's `strconv.FormatFloat(v, 'f', -1, 64)` ([`super::aggregate::go_float`]).

use super::QueryValue;
use crate::model::Labels;

/// Appends `s` as a JSON string (escaped as `serde_json` escapes: `"`, `\`, and control
/// characters; everything else as it is).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
}

/// Appends a timestamp in ms as Prometheus's seconds: `1435781451` or `1435781451.781`.
pub fn write_ts(out: &mut Vec<u8>, ms: i64) {
    let mut buf = itoa::Buffer::new();
    let t = if ms < 0 {
        out.push(b'-');
        ms.unsigned_abs()
    } else {
        ms as u64
    };
    out.extend_from_slice(buf.format(t / 1000).as_bytes());
    let frac = t % 1000;
    if frac != 0 {
        out.push(b'.');
        if frac < 100 {
            out.push(b'0');
        }
        if frac < 10 {
            out.push(b'0');
        }
        out.extend_from_slice(buf.format(frac).as_bytes());
    }
}

/// Appends a sample value as Prometheus's quoted string: the shortest decimal that reads back
/// as `v`, never in exponent form; `NaN`, `+Inf`, `-Inf`.
pub fn write_value(out: &mut Vec<u8>, v: f64) {
    out.push(b'"');
    write_float(out, v);
    out.push(b'"');
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` without allocating: integers below 2^53 by
/// `itoa`, others by `ryu`'s shortest digits, expanded when `ryu` chose an exponent.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v == v.trunc() && v.abs() < 9_007_199_254_740_992.0 {
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
        }
    } else {
        let mut buf = ryu::Buffer::new();
        let s = buf.format_finite(v);
        match s.find('e') {
            // Integers from 2^53 to 1e16 come as `9007199254740992.0`.
            None => out.extend_from_slice(s.strip_suffix(".0").unwrap_or(s).as_bytes()),
            Some(e) => expand_exponent(out, &s[..e], s[e + 1..].parse().unwrap_or(0)),
        }
    }
}

/// Writes `mantissa x 10^exp` (`mantissa` as `ryu` prints it: `-1.2345` or `5`) in plain
/// decimal form.
fn expand_exponent(out: &mut Vec<u8>, mantissa: &str, exp: i32) {
    let (neg, m) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    // The decimal point sits after `point` digits.
    let point = int.len() as i32 + exp;
    if neg {
        out.push(b'-');
    }
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-point) as usize));
        out.extend_from_slice(&digits);
    } else if point as usize >= digits.len() {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
    } else {
        out.extend_from_slice(&digits[..point as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[point as usize..]);
    }
}

/// Appends a label set as a JSON object, in label order.
pub fn write_labels(out: &mut Vec<u8>, l: &Labels) {
    out.push(b'{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
    out.push(b'}');
}

/// Appends `[ts, "value"]`.
fn write_point(out: &mut Vec<u8>, t: i64, v: f64) {
    out.push(b'[');
    write_ts(out, t);
    out.push(b',');
    write_value(out, v);
    out.push(b']');
}

/// Appends a string list as a JSON array.
fn write_strs(out: &mut Vec<u8>, list: &[String]) {
    out.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, s);
    }
    out.push(b']');
}

/// Appends Prometheus's `data` object for a result.
pub fn write_data(out: &mut Vec<u8>, v: &QueryValue) {
    match v {
        QueryValue::Vector(s) => {
            out.extend_from_slice(br#"{"resultType":"vector","result":["#);
            for (i, (l, t, v)) in s.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, l);
                out.extend_from_slice(br#","value":"#);
                write_point(out, *t, *v);
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
        }
        QueryValue::Matrix(m) => {
            out.extend_from_slice(br#"{"resultType":"matrix","result":["#);
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"metric":"#);
                write_labels(out, &s.labels);
                out.extend_from_slice(br#","values":["#);
                for (j, (t, v)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_point(out, *t, *v);
                }
                out.extend_from_slice(b"]}");
            }
            out.extend_from_slice(b"]}");
        }
        QueryValue::Scalar(t, v) => {
            out.extend_from_slice(br#"{"resultType":"scalar","result":"#);
            write_point(out, *t, *v);
            out.push(b'}');
        }
        QueryValue::String(t, s) => {
            out.extend_from_slice(br#"{"resultType":"string","result":["#);
            write_ts(out, *t);
            out.push(b',');
            write_str(out, s);
            out.extend_from_slice(b"]}");
        }
    }
}

/// The whole success response: `status`, `data`, and `warnings` / `infos` when not empty.
pub fn success(v: &QueryValue, warnings: &[String], infos: &[String]) -> Vec<u8> {
    success_with_stats(v, warnings, infos, None)
}

/// As [`success`], with `stats` (a JSON object) as `data.stats`, Prometheus's place for the
/// `stats` request parameter's answer.
pub fn success_with_stats(
    v: &QueryValue,
    warnings: &[String],
    infos: &[String],
    stats: Option<&serde_json::Value>,
) -> Vec<u8> {
    let points = match v {
        QueryValue::Matrix(m) => m.iter().map(|s| s.samples.len() + 4).sum(),
        QueryValue::Vector(s) => s.len() * 4,
        _ => 1,
    };
    let mut out = Vec::with_capacity(64 + points * 32);
    out.extend_from_slice(br#"{"status":"success","data":"#);
    write_data(&mut out, v);
    if let Some(s) = stats {
        // Inside `data`: its closing brace comes after.
        if out.last() == Some(&b'}') {
            out.pop();
            out.extend_from_slice(br#","stats":"#);
            out.extend_from_slice(s.to_string().as_bytes());
            out.push(b'}');
        }
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        write_strs(&mut out, warnings);
    }
    if !infos.is_empty() {
        out.extend_from_slice(br#","infos":"#);
        write_strs(&mut out, infos);
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Series;

    /// The oracle is Rust's `Display` for `f64`, which prints the shortest round-tripping
    /// digits without an exponent (Go's `'f', -1`), computed by a different algorithm (Grisu
    /// with a Dragon fallback) than `ryu`.
    fn display(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            format!("{v}")
        }
    }

    #[test]
    fn floats_print_as_go_f_minus_one() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            2.0266111999999996,
            1e21,
            1e22,
            1.5e300,
            -2.5e-300,
            1e-7,
            123456789012345680.0,
            9007199254740993.0,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.30000000000000004,
            1e15,
            1e16,
            1e17,
            12345.678e-20,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if !v.is_nan() {
                cases.push(v);
            }
            cases.push((x % 100_000_000) as f64 / 1000.0);
        }
        let mut ties = 0;
        for v in cases {
            let mut out = Vec::new();
            write_float(&mut out, v);
            let got = String::from_utf8(out).unwrap();
            let want = display(v);
            if got != want {
                // Where two shortest decimals are equally near (`…562.25` -> `.2` or `.3`),
                // Go and ryu round half to even and Rust's `Display` rounds up: the same
                // length, both read back as `v`, and ours ends in an even digit.
                assert_eq!(got.len(), want.len(), "{v:e}: {got} vs {want}");
                assert_eq!(got.parse::<f64>().unwrap(), v, "{v:e}: {got}");
                assert!(got.ends_with(['0', '2', '4', '6', '8']), "{v:e}: {got}");
                ties += 1;
            }
        }
        assert!(ties < 100, "{ties} differences from Display");
    }

    #[test]
    fn timestamps_print_as_prometheus() {
        for (ms, want) in [
            (1_435_781_451_781, "1435781451.781"),
            (1_435_781_451_000, "1435781451"),
            (1_500, "1.500"),
            (1_005, "1.005"),
            (50, "0.050"),
            (0, "0"),
            (-1_500, "-1.500"),
        ] {
            let mut out = Vec::new();
            write_ts(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn strings_escape_as_serde_json() {
        for s in [
            "plain",
            "q\"uote\\",
            "tab\tnl\ncr\r",
            "\u{1}\u{8}\u{c}\u{1f}",
            "ünï €",
            "",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn responses_parse_back_to_what_they_encode() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        let v = QueryValue::Matrix(vec![
            Series {
                labels: l.clone(),
                samples: vec![(1_000, 1.5), (61_500, f64::NAN)],
            },
            Series {
                labels: Labels::default(),
                samples: vec![],
            },
        ]);
        let body = success(&v, &["w".into()], &[]);
        let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
                {"metric": {"__name__": "up", "job": "a\"b"}, "values": [[1, "1.5"], [61.5, "NaN"]]},
                {"metric": {}, "values": []}]}, "warnings": ["w"]})
        );
        let v = QueryValue::Vector(vec![(l, 2_000, -0.25)]);
        let j: serde_json::Value = serde_json::from_slice(&success(&v, &[], &[])).unwrap();
        assert_eq!(
            j["data"],
            serde_json::json!({"resultType": "vector", "result": [{"metric": {"__name__": "up", "job": "a\"b"}, "value": [2, "-0.25"]}]})
        );
        let j: serde_json::Value = serde_json::from_slice(&success(
            &QueryValue::Scalar(3_000, 7.0),
            &[],
            &["i".into()],
        ))
        .unwrap();
        assert_eq!(j["data"]["result"], serde_json::json!([3, "7"]));
        assert_eq!(j["infos"], serde_json::json!(["i"]));
        let j: serde_json::Value =
            serde_json::from_slice(&success(&QueryValue::String(3_000, "x".into()), &[], &[]))
                .unwrap();
        assert_eq!(j["data"]["result"], serde_json::json!([3, "x"]));
    }
}
