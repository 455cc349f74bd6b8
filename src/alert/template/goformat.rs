//! Go's formatting: `%v`, `%g`, `%e` of floats, `fmt.Sprintf`, and `time.Time.Format` layouts.

use super::*;

/// Shortest decimal digits and exponent of a finite, non-zero `|v|`: `(digits, exp)` with
/// `v = 0.d1d2... * 10^(exp+1)`.
pub(super) fn shortest_digits(v: f64) -> (String, i32) {
    let s = format!("{:e}", v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    (digits, exp.parse().unwrap_or(0))
}

pub(super) fn exp_suffix(exp: i32) -> String {
    format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which `%v` uses: the shortest digits that
/// round-trip, in exponent form below 1e-4 and from 1e6 up (Go decides with precision 6 when
/// the precision is the shortest).
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let (digits, exp) = shortest_digits(v);
    let sign = if v < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{first}{dot}{rest}{}", exp_suffix(exp));
    }
    format!("{sign}{}", plain(&digits, exp))
}

/// Digits `d1d2...` with the decimal point after `exp + 1` of them.
pub(super) fn plain(digits: &str, exp: i32) -> String {
    let point = exp + 1;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    }
}

/// Go's `%.<prec>g` (precision 0 counts as 1): exponent form when the exponent is below -4
/// or at least the precision; trailing zeros removed.
pub fn go_g(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    let prec = prec.max(1);
    if v == 0.0 {
        return "0".into();
    }
    let s = format!("{:.*e}", prec - 1, v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let sign = if v < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= prec as i32 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        return format!("{sign}{first}{dot}{rest}{}", exp_suffix(exp));
    }
    format!("{sign}{}", plain(&digits, exp))
}

/// Go's `%.<prec>e`.
pub(super) fn go_e(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return go_float(v);
    }
    let s = format!("{:.*e}", prec, v);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{mant}{}", exp_suffix(exp.parse().unwrap_or(0)))
}

/// Go's `time.Time.String()` layout.
pub(super) const GO_TIME_STRING: &str = "2006-01-02 15:04:05.999999999 -0700 MST";

/// Formats a UTC time (ms since the epoch) with a Go reference-time layout (`2006-01-02
/// 15:04:05`, `Jan _2`, `Monday`, `3:04PM`, `MST`, `-07:00`, `Z07:00`, `.000`, `.999`...).
pub fn go_time(ms: i64, layout: &str) -> String {
    use crate::time::civil;
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let c = civil(ms);
    let (y, mo, d, h, mi, s, milli, wd) = (
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli, c.weekday,
    );
    let month = MONTHS[(mo - 1) as usize];
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        // Fractions: `.000` (fixed) or `.999` (trailing zeros trimmed), any length.
        if let Some(f) = rest.strip_prefix(['.', ',']) {
            let n = f.chars().take_while(|&c| c == '0').count();
            let m = f.chars().take_while(|&c| c == '9').count();
            let len = n.max(m);
            if len > 0 && !f[len..].starts_with(|c: char| c.is_ascii_digit()) {
                let digits = format!("{milli:03}{}", "0".repeat(len.saturating_sub(3)));
                let digits = &digits[..len.min(digits.len())];
                if n > 0 {
                    let _ = write!(out, "{}{digits}", &rest[..1]);
                } else {
                    let t = digits.trim_end_matches('0');
                    if !t.is_empty() {
                        let _ = write!(out, "{}{t}", &rest[..1]);
                    }
                }
                rest = &f[len..];
                continue;
            }
        }
        for (tok, val) in [
            ("January", month.to_string()),
            ("Jan", month[..3].to_string()),
            ("Monday", DAYS[wd].to_string()),
            ("Mon", DAYS[wd][..3].to_string()),
            ("MST", "UTC".to_string()),
            ("2006", format!("{y:04}")),
            ("-07:00:00", "+00:00:00".to_string()),
            ("-0700", "+0000".to_string()),
            ("-07:00", "+00:00".to_string()),
            ("-07", "+00".to_string()),
            ("Z07:00", "Z".to_string()),
            ("Z0700", "Z".to_string()),
            ("Z07", "Z".to_string()),
            ("002", format!("{:03}", day_of_year(y, mo, d))),
            ("01", format!("{mo:02}")),
            ("02", format!("{d:02}")),
            ("_2", format!("{d:>2}")),
            ("03", format!("{h12:02}")),
            ("04", format!("{mi:02}")),
            ("05", format!("{s:02}")),
            ("06", format!("{:02}", y % 100)),
            ("15", format!("{h:02}")),
            ("PM", if h >= 12 { "PM" } else { "AM" }.to_string()),
            ("pm", if h >= 12 { "pm" } else { "am" }.to_string()),
            ("1", mo.to_string()),
            ("2", d.to_string()),
            ("3", h12.to_string()),
            ("4", mi.to_string()),
            ("5", s.to_string()),
        ] {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(&val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub(super) fn day_of_year(y: i64, mo: i64, d: i64) -> i64 {
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    CUM[(mo - 1) as usize] + d + i64::from(leap && mo > 2)
}

/// Go's `Sprintf` for the verbs templates use: `%s %v %d %f %g %e %x %q %%`, with flags
/// (`-`, `+`, `0`, space), width and precision.
pub(super) fn sprintf(fmt: &str, args: &[Val]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut n = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = it.peek() {
            if "-+ 0#".contains(f) {
                flags.push(f);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(n) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        n += 1;
        let body = match (verb, arg) {
            ('d', Val::Int(i)) => i.to_string(),
            ('d', Val::Num(f)) if f.fract() == 0.0 => format!("{}", *f as i64),
            ('d', other) => format!("%!d({})", other.to_str()),
            ('f' | 'F', x) => match x.to_f64("printf") {
                Ok(f) if f.is_finite() => format!("{:.*}", prec.unwrap_or(6), f),
                Ok(f) => go_float(f),
                Err(_) => format!("%!f({})", x.to_str()),
            },
            ('g', x) => match x.to_f64("printf") {
                Ok(f) => match prec {
                    Some(p) => go_g(f, p),
                    None => go_float(f),
                },
                Err(_) => format!("%!g({})", x.to_str()),
            },
            ('e', x) => match x.to_f64("printf") {
                Ok(f) => go_e(f, prec.unwrap_or(6)),
                Err(_) => format!("%!e({})", x.to_str()),
            },
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('x', x) => x.to_str().bytes().map(|b| format!("{b:02x}")).collect(),
            ('q', x) => format!("{:?}", x.to_str()),
            ('s' | 'v', x) => {
                let s = x.to_str();
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('t', Val::Bool(b)) => b.to_string(),
            (v, x) => format!("%!{v}({})", x.to_str()),
        };
        let body = if flags.contains('+')
            && !body.starts_with('-')
            && matches!(verb, 'd' | 'f' | 'g' | 'e')
        {
            format!("+{body}")
        } else if flags.contains(' ')
            && !body.starts_with('-')
            && matches!(verb, 'd' | 'f' | 'g' | 'e')
        {
            format!(" {body}")
        } else {
            body
        };
        let width: usize = width.parse().unwrap_or(0);
        let len = body.chars().count();
        if len >= width {
            out.push_str(&body);
        } else if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(width - len));
        } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'g' | 'e') {
            let (sign, digits) = match body.strip_prefix(['-', '+', ' ']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.push_str(&"0".repeat(width - len));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(width - len));
            out.push_str(&body);
        }
    }
    if n < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[n..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", type_name(a), a.to_str());
        }
        out.push(')');
    }
    Ok(out)
}
