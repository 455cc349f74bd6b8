//! Time, in one place: the wall clock in ms, RFC 3339 formatting and parsing, and UTC dates
//! broken down, all through `chrono` (built anyway for arrow and parquet). Times are `i64`
//! milliseconds since the Unix epoch everywhere in Tidemark.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer};

/// Wall-clock time in ms since the epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis().max(0)
}

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// RFC 3339 in UTC with the fraction trimmed as Go's `time.RFC3339Nano` writes it
/// (`2023-11-14T22:13:20.5Z`, `2023-11-14T22:13:20Z`): what Prometheus's and Alertmanager's
/// APIs return.
pub fn rfc3339(ms: i64) -> String {
    let s = utc(ms).to_rfc3339_opts(SecondsFormat::Millis, true);
    // `...SS.mmmZ`: trailing zeros of the fraction, then a bare dot, go.
    match s.strip_suffix('Z') {
        Some(body) if body.contains('.') => {
            format!("{}Z", body.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => s,
    }
}

/// RFC 3339 in UTC with exactly three fraction digits (`2023-11-14T22:13:20.500Z`): log lines,
/// which line up.
pub fn rfc3339_ms(ms: i64) -> String {
    utc(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (`T`, `t` or a space between date and time; `Z` or an offset;
/// any number of fraction digits, cut to ms) into ms.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("cannot parse {s:?} to a valid timestamp");
    let t = if s.len() > 10 && matches!(s.as_bytes()[10], b't' | b' ') {
        format!("{}T{}", &s[..10], &s[11..])
    } else {
        s.to_string()
    };
    DateTime::parse_from_rfc3339(&t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| bad())
}

/// A UTC time broken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1-12.
    pub month: i64,
    /// 1-31.
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub milli: i64,
    /// 0 = Sunday.
    pub weekday: usize,
}

/// `ms` since the epoch, broken down in UTC.
pub fn civil(ms: i64) -> Civil {
    let d = utc(ms);
    Civil {
        year: i64::from(d.year()),
        month: i64::from(d.month()),
        day: i64::from(d.day()),
        hour: i64::from(d.hour()),
        minute: i64::from(d.minute()),
        second: i64::from(d.second()),
        milli: i64::from(d.timestamp_subsec_millis()),
        weekday: d.weekday().num_days_from_sunday() as usize,
    }
}

/// Days in the month of `ms` (UTC).
pub fn days_in_month(ms: i64) -> i64 {
    let c = civil(ms);
    let (y, m) = if c.month == 12 {
        (c.year + 1, 1)
    } else {
        (c.year, c.month + 1)
    };
    let first = |y: i64, m: i64| NaiveDate::from_ymd_opt(y as i32, m as u32, 1);
    match (first(c.year, c.month), first(y, m)) {
        (Some(a), Some(b)) => (b - a).num_days(),
        _ => 31,
    }
}

/// Day of the year of `ms` (UTC), 1-366.
pub fn day_of_year(ms: i64) -> i64 {
    i64::from(utc(ms).ordinal())
}

/// ms at midnight UTC of `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<i64> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// `YYYY-MM-DD` of `ms` (UTC).
pub fn date(ms: i64) -> String {
    utc(ms).format("%Y-%m-%d").to_string()
}

/// Parses a PromQL duration (`5m`, `1h30m`, `500ms`) or plain seconds into ms.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return Some((secs * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A duration as PromQL writes one: `"2m"`, `"1h30m"`, `"1d"`, `"500ms"`, `"0s"`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= len {
            out.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    out
}

/// A duration in milliseconds, written as `"5s"`, `"1h30m"`, `"500ms"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub i64);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration_ms(&s)
            .filter(|_| s.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .map(Millis)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: use a number with a unit, e.g. \"5s\", \"26h\""
                ))
            })
    }
}

impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration_ms(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_as_promql_writes_them() {
        assert_eq!(format_duration_ms(120_000), "2m");
        assert_eq!(format_duration_ms(5_400_500), "1h30m500ms");
        assert_eq!(format_duration_ms(86_400_000), "1d");
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(
            parse_duration_ms(&format_duration_ms(5_400_500)),
            Some(5_400_500)
        );
    }

    #[test]
    fn formats_as_go_and_as_logs() {
        assert_eq!(rfc3339(1_700_000_000_500), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(1_700_000_000_500), "2023-11-14T22:13:20.500Z");
    }

    #[test]
    fn parses_rfc3339_with_offsets_fractions_and_separators() {
        let z = 1_700_000_000_000;
        for s in [
            "2023-11-14T22:13:20Z",
            "2023-11-14t22:13:20z",
            "2023-11-14 22:13:20Z",
            "2023-11-14T23:13:20+01:00",
            "2023-11-14T21:13:20-01:00",
            "2023-11-14T22:13:20.000000000Z",
        ] {
            assert_eq!(parse_rfc3339(s), Ok(z), "{s}");
        }
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.1239Z"), Ok(z + 123));
        for s in ["2023-11-14", "2023-13-14T22:13:20Z", "yesterday", ""] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
    }

    #[test]
    fn breaks_dates_down_in_utc() {
        let c = civil(1_700_000_000_500);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.milli),
            (2023, 11, 14, 22, 13, 20, 500)
        );
        assert_eq!(c.weekday, 2); // a Tuesday
        assert_eq!(civil(-1).year, 1969);
        assert_eq!(days_in_month(parse_date("2024-02-10").unwrap()), 29);
        assert_eq!(days_in_month(parse_date("2023-02-10").unwrap()), 28);
        assert_eq!(day_of_year(parse_date("2024-12-31").unwrap()), 366);
        assert_eq!(parse_date("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_date("1970-02-30"), None);
        assert_eq!(date(86_400_000), "1970-01-02");
    }
}
