//! Where cold data lives: tiers, their partitions, and the Hive-style paths of their files
//! (DESIGN.md section 6):
//!
//! ```text
//! tier=raw/date=2026-11-22/hour=07/part-<job>-w<worker>-<kind>.parquet   raw samples, hourly
//! tier=1m/date=2026-11-22/hour=07/part-<job>-w<worker>-<kind>.parquet    1-minute rollups, hourly
//! tier=1h/date=2026-11-22/part-<job>-w<worker>-<kind>.parquet            1-hour rollups, daily
//! ```
//!
//! `<kind>` is `m` for the file written when the partition is sealed, `c<ms>` for late
//! corrections sent at event time `<ms>`'s hour, and `x<ms>` for a compacted file (the newest
//! input it merged). Every name is a function of the data, so writing a file again after a
//! crash replaces it instead of adding a copy.

use std::fmt;

/// One hour and one day in ms.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A cold tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Raw,
    Minute,
    Hour,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    /// The `tier=` value.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Minute => "1m",
            Tier::Hour => "1h",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Width of one partition: an hour for raw and 1m, a day for 1h.
    pub fn partition_width(self) -> i64 {
        match self {
            Tier::Raw | Tier::Minute => HOUR_MS,
            Tier::Hour => DAY_MS,
        }
    }

    /// Width of one rollup row (0 for raw samples).
    pub fn resolution(self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::Minute => 60_000,
            Tier::Hour => HOUR_MS,
        }
    }

    /// The partition holding event time `ts`.
    pub fn partition(self, ts: i64) -> Partition {
        let w = self.partition_width();
        Partition {
            tier: self,
            start: ts.div_euclid(w) * w,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One partition of a tier: `[start, start + width)` of event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub tier: Tier,
    pub start: i64,
}

impl Partition {
    pub fn end(&self) -> i64 {
        self.start + self.tier.partition_width()
    }

    /// The directory: `tier=raw/date=YYYY-MM-DD/hour=HH` (no `hour=` for the 1h tier).
    pub fn dir(&self) -> String {
        let date = crate::time::date(self.start);
        match self.tier {
            Tier::Hour => format!("tier={}/date={date}", self.tier.name()),
            _ => format!(
                "tier={}/date={date}/hour={:02}",
                self.tier.name(),
                crate::time::civil(self.start).hour
            ),
        }
    }

    /// Parses a directory (or a file path inside one) back into its partition.
    pub fn parse(path: &str) -> Option<Partition> {
        let mut tier = None;
        let mut date = None;
        let mut hour = None;
        for part in path.split('/') {
            if let Some(t) = part.strip_prefix("tier=") {
                tier = Tier::parse(t);
            } else if let Some(d) = part.strip_prefix("date=") {
                date = crate::time::parse_date(d);
            } else if let Some(h) = part.strip_prefix("hour=") {
                hour = h.parse::<i64>().ok().filter(|h| (0..24).contains(h));
            }
        }
        let tier = tier?;
        let day = date?;
        let start = match (tier, hour) {
            (Tier::Hour, None) => day,
            (Tier::Hour, Some(_)) => return None,
            (_, Some(h)) => day + h * HOUR_MS,
            (_, None) => return None,
        };
        Some(Partition { tier, start })
    }

    /// A file of this partition.
    pub fn file(&self, job: &str, worker: usize, kind: FileKind) -> String {
        format!("{}/part-{job}-w{worker}-{kind}.parquet", self.dir())
    }
}

/// What a file holds (the last part of its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// Written when the partition was sealed.
    Main,
    /// Late samples for a sealed partition, sent during the hour starting at this time.
    Correction(i64),
    /// The compaction of every file of the partition, the newest input at this time.
    Compacted(i64),
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileKind::Main => f.write_str("m"),
            FileKind::Correction(t) => write!(f, "c{t}"),
            FileKind::Compacted(t) => write!(f, "x{t}"),
        }
    }
}

impl FileKind {
    /// Parses the `<kind>` of `part-<job>-w<worker>-<kind>.parquet`.
    pub fn parse_file_name(name: &str) -> Option<(String, usize, FileKind)> {
        let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
        let (rest, kind) = stem.rsplit_once('-')?;
        let (job, worker) = rest.rsplit_once("-w")?;
        let worker = worker.parse().ok()?;
        let kind = match kind.as_bytes().first()? {
            b'm' if kind == "m" => FileKind::Main,
            b'c' => FileKind::Correction(kind[1..].parse().ok()?),
            b'x' => FileKind::Compacted(kind[1..].parse().ok()?),
            _ => return None,
        };
        Some((job.to_string(), worker, kind))
    }

    /// Order of precedence when rows collide: later kinds win (main < corrections by time <
    /// compacted by time; a compacted file written after a correction includes it).
    pub fn precedence(&self) -> (u8, i64) {
        match self {
            FileKind::Main => (0, 0),
            FileKind::Correction(t) => (1, *t),
            FileKind::Compacted(t) => (1, *t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let t = 1_795_305_600_000 + 7 * HOUR_MS + 12_345; // 2026-11-22T07:00:12.345Z
        let p = Tier::Raw.partition(t);
        assert_eq!(p.dir(), "tier=raw/date=2026-11-22/hour=07");
        assert_eq!(p.end() - p.start, HOUR_MS);
        let f = p.file("infra", 1, FileKind::Correction(p.start));
        assert_eq!(Partition::parse(&f), Some(p));
        let name = f.rsplit('/').next().unwrap();
        assert_eq!(
            FileKind::parse_file_name(name),
            Some(("infra".into(), 1, FileKind::Correction(p.start)))
        );
        let h = Tier::Hour.partition(t);
        assert_eq!(h.dir(), "tier=1h/date=2026-11-22");
        assert_eq!(Partition::parse(&h.dir()), Some(h));
        assert_eq!(h.start, 1_795_305_600_000);
        assert_eq!(
            Partition::parse("tier=1m/date=2026-11-22/hour=07/part-a-b-w0-m.parquet"),
            Some(Tier::Minute.partition(t))
        );
        assert_eq!(
            FileKind::parse_file_name("part-a-b-w0-m.parquet"),
            Some(("a-b".into(), 0, FileKind::Main))
        );
        assert_eq!(Partition::parse("tier=raw/date=2026-11-22"), None);
        assert_eq!(Partition::parse("tier=zz/date=2026-11-22/hour=01"), None);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        for (date, ms) in [
            ("1970-01-01", 0),
            ("2000-02-29", 951_782_400_000),
            ("2026-11-22", 1_795_305_600_000),
        ] {
            let p = Partition {
                tier: Tier::Raw,
                start: ms,
            };
            assert_eq!(p.dir(), format!("tier=raw/date={date}/hour=00"));
            assert_eq!(Partition::parse(&p.dir()), Some(p));
        }
    }
}
