//! `tidemark import`: bringing existing data over from a Prometheus server (remote read), an
//! OpenMetrics or Prometheus text file with timestamps, or an InfluxDB 1.x export, into a
//! running `tidemark up`.
//!
//! | module | what |
//! |---|---|
//! | [`source`] | the sources, read an hour at a time in time order (files spilled by hour) |
//! | [`push`] | the target: its status, and recent hours pushed over remote write |
//! | [`cold`] | old hours written straight to the cold tiers, with their rollups |
//!
//! **What goes where.** With `newest` the later of the target's newest sample and the
//! source's, the hot index keeps samples from `newest - hot retention`; the *cut* is the first
//! hour boundary at or after that (where queries switch from the cold tiers to the hot index,
//! [`crate::store::tiered`]). Hours before the cut, and one more (so that a target whose newest
//! sample moves on during the import still finds them), are written to the cold tiers as raw
//! samples, 1-minute and 1-hour rollups, within each tier's retention; samples from the cut on
//! are pushed, so the job builds their rollups as it does for live data.
//!
//! **Resuming.** A state file (`--state`, by default `tidemark-import.state.json`) records the
//! source, the cut, the file stamp and the hours done; a second run of the same import skips
//! those hours (the cold files of an hour are rewritten under the same names, and a sample
//! pushed twice is stored once), and a finished import is not run again.

pub mod cold;
pub mod push;
pub mod source;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::store::cold::layout::{DAY_MS, HOUR_MS};
use crate::store::cold::{ColdError, ColdStore};
use source::{hour_of, Source};

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {what}: {reason}")]
    Source { what: String, reason: String },
    #[error("target {url}: {reason}")]
    Target { url: String, reason: String },
    #[error("writing the cold tiers: {0}")]
    Cold(#[from] ColdError),
    #[error("state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

/// The resume state, a JSON file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The source this state belongs to ([`Source::key`]).
    pub source: String,
    /// Samples at or after this are pushed; hours before `cold_until` go to the cold tiers.
    pub cut: i64,
    pub cold_until: i64,
    /// Names the cold files (`c<stamp>`).
    pub stamp: i64,
    /// Every hour before this is done.
    pub done_through: i64,
    pub finished: bool,
    pub pushed: u64,
    pub cold_samples: u64,
    pub rejected: u64,
}

impl State {
    fn load(path: &Path) -> Result<Option<State>, ImportError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ImportError::State {
                    path: path.to_path_buf(),
                    reason: format!("{e}; delete it to start the import afresh"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImportError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        }
    }

    /// Written to a temporary file and renamed: a kill leaves the old state or the new one.
    fn save(&self, path: &Path) -> Result<(), ImportError> {
        let tmp = path.with_extension("tmp");
        let io = |e| ImportError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Where to import from.
pub enum From {
    Prometheus {
        url: String,
        matches: Vec<String>,
        start: i64,
        end: i64,
    },
    File {
        path: PathBuf,
        format: Option<source::FileFormat>,
        precision: crate::ingest::influx::Precision,
    },
}

/// An import's settings.
pub struct Options {
    pub from: From,
    /// The target `tidemark up`.
    pub url: String,
    pub token: Option<String>,
    /// Overrides the cold tiers' URL the target reports.
    pub cold_url: Option<String>,
    pub state: PathBuf,
    /// Samples per remote-write request.
    pub batch: usize,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// What an import did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub source: String,
    pub resumed_from: Option<i64>,
    pub already_finished: bool,
    pub hours: u64,
    pub hours_skipped: u64,
    pub pushed: u64,
    pub requests: u64,
    pub cold: cold::ColdWritten,
    pub cold_samples: u64,
    pub rejected_by_target: u64,
    pub rejected_lines: u64,
    pub errors: Vec<String>,
    pub cut: i64,
    pub elapsed: Duration,
}

impl Summary {
    /// The lines `tidemark import` prints.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.already_finished {
            s.push_str(&format!(
                "already imported: {} (delete the state file to import again)\n",
                self.source
            ));
            return s;
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let total = self.pushed + self.cold_samples;
        s.push_str(&format!(
            "imported {total} samples in {secs:.1}s ({:.0} samples/s): {} pushed to the hot index in {} requests (the samples from {} on), {} written to the cold tiers ({} files, {} bytes: {} raw rows, {} 1-minute and {} 1-hour rollups)\n",
            total as f64 / secs,
            self.pushed,
            self.requests,
            crate::time::rfc3339(self.cut),
            self.cold_samples,
            self.cold.files,
            self.cold.bytes,
            self.cold.raw_rows,
            self.cold.minute_rows,
            self.cold.hour_rows,
        ));
        if let Some(t) = self.resumed_from {
            s.push_str(&format!(
                "resumed: {} hours before {} were done by an earlier run and skipped\n",
                self.hours_skipped,
                crate::time::rfc3339(t)
            ));
        }
        if self.rejected_lines > 0 {
            s.push_str(&format!(
                "{} input lines rejected (the lines around them were imported):\n",
                self.rejected_lines
            ));
        }
        if self.rejected_by_target > 0 {
            s.push_str(&format!(
                "{} samples refused by the target:\n",
                self.rejected_by_target
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("  {e}\n"));
        }
        s
    }
}

/// The start of the day holding `ts` (`i64::MIN` stays: nothing done yet).
fn day_of(ts: i64) -> i64 {
    if ts == i64::MIN {
        return ts;
    }
    ts.div_euclid(DAY_MS) * DAY_MS
}

/// A test hook: a pause after each hour (`TIDEMARK_TEST_IMPORT_HOUR_PAUSE_MS`), so that the
/// fault test can kill an import between two hours.
fn hour_pause() -> Option<Duration> {
    std::env::var("TIDEMARK_TEST_IMPORT_HOUR_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Runs an import to the end (or to its first error, leaving the state to resume from).
pub fn run(opts: &Options) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let target = push::Target::new(&opts.url, opts.token.clone(), opts.batch);
    let status = target.status()?;
    let prev = State::load(&opts.state)?;
    if let (
        Some(p),
        From::File {
            path,
            format,
            precision,
        },
    ) = (&prev, &opts.from)
    {
        // A finished import of the same file is not read again.
        if p.finished && source::file_key(path, *format, *precision)?.0 == p.source {
            return Ok(Summary {
                source: p.source.clone(),
                already_finished: true,
                ..Summary::default()
            });
        }
    }
    let mut rejected = (0, Vec::new());
    let mut src: Box<dyn Source> = match &opts.from {
        From::Prometheus {
            url,
            matches,
            start,
            end,
        } => Box::new(source::RemoteRead::new(url, matches, *start, *end)?),
        From::File {
            path,
            format,
            precision,
        } => {
            // A resumed import re-reads the file but spills only the days not finished.
            let skip = prev
                .as_ref()
                .filter(|p| !p.finished)
                .map_or(i64::MIN, |p| day_of(p.done_through));
            let spill = opts.state.with_extension("spill");
            tracing::info!(target: "tidemark::import", file = %path.display(), "reading the file");
            let f = source::FileSource::open(path, *format, *precision, &spill, skip)?;
            rejected = (f.rejected, f.errors.clone());
            Box::new(f)
        }
    };
    let result = import(opts, &target, &status, prev, src.as_mut(), started).map(|mut s| {
        s.rejected_lines = rejected.0;
        let mut errors = rejected.1;
        errors.append(&mut s.errors);
        errors.truncate(2 * source::SHOWN_ERRORS);
        s.errors = errors;
        s
    });
    if let From::File { .. } = opts.from {
        let _ = std::fs::remove_dir_all(opts.state.with_extension("spill"));
    }
    result
}

fn import(
    opts: &Options,
    target: &push::Target,
    status: &push::TargetStatus,
    prev: Option<State>,
    src: &mut dyn Source,
    started: Instant,
) -> Result<Summary, ImportError> {
    let key = src.key();
    let mut summary = Summary {
        source: key.clone(),
        ..Summary::default()
    };
    let Some((first, last)) = src.span() else {
        summary.elapsed = started.elapsed();
        return Ok(summary);
    };
    let mut state = match prev {
        Some(p) if p.source == key => {
            if p.finished {
                summary.already_finished = true;
                return Ok(summary);
            }
            summary.resumed_from = Some(p.done_through);
            p
        }
        other => {
            if let Some(o) = other {
                tracing::warn!(target: "tidemark::import", state = %opts.state.display(), previous = o.source.as_str(), "the state file belongs to another import; starting afresh");
            }
            let newest = status.newest.unwrap_or(i64::MIN).max(last);
            let from = newest.saturating_sub(status.hot_retention_ms);
            let cut = match from.rem_euclid(HOUR_MS) {
                0 => from,
                r => from + (HOUR_MS - r),
            };
            State {
                source: key.clone(),
                cut,
                cold_until: cut + HOUR_MS,
                stamp: crate::time::now_ms(),
                done_through: i64::MIN,
                ..State::default()
            }
        }
    };
    summary.cut = state.cut;
    // The state's totals include earlier runs'.
    let base = (state.pushed, state.cold_samples, state.rejected);
    let newest = status.newest.unwrap_or(i64::MIN).max(last);
    let cold_store = if hour_of(first - 1) < state.cold_until {
        let url = opts
            .cold_url
            .clone()
            .or_else(|| status.cold_url.clone())
            .ok_or_else(|| {
                ImportError::Usage(
                    "the data reaches back past the target's hot retention, and the target has no cold tiers; give --cold-url".into(),
                )
            })?;
        if url.starts_with("memory://") {
            return Err(ImportError::Usage(format!(
                "the target's cold tiers are {url}, in its own memory: the import cannot write them; give the target a file:// or s3:// [cold] url"
            )));
        }
        Some(ColdStore::open(&url)?)
    } else {
        None
    };
    let expired = [
        newest.saturating_sub(status.raw_retention_ms),
        newest.saturating_sub(status.minute_retention_ms),
        newest.saturating_sub(status.hour_retention_ms),
    ];
    let mut cold = cold_store
        .as_ref()
        .map(|s| cold::ColdImport::new(s, state.stamp, expired));
    // Hours from the one whose last window holds the first sample to the one holding the last.
    let first_hour = hour_of(first - 1);
    let last_hour = hour_of(last);
    let hours_total = ((last_hour - first_hour) / HOUR_MS + 1) as u64;
    let bar = opts.progress.then(|| match src.total_samples() {
        Some(n) => {
            let b = crate::logging::progress_bar("samples");
            b.set_length(n);
            b
        }
        None => {
            let b = crate::logging::progress_bar("hours");
            b.set_length(hours_total);
            b
        }
    });
    let pause = hour_pause();
    // A resumed import rebuilds the 1-hour rollups of its unfinished day from that day's
    // earlier hours (written by the earlier run, so not written again).
    let redo_from = day_of(state.done_through);
    let mut h = first_hour;
    while h <= last_hour {
        let done = h < state.done_through;
        if done && (h < redo_from || h >= state.cold_until) {
            summary.hours_skipped += 1;
            h += HOUR_MS;
            continue;
        }
        if !src.has_hour(h) {
            h += HOUR_MS;
            continue;
        }
        let hour = src.hour(h)?;
        let in_hour = hour.samples.iter().filter(|s| s.1 < hour.end()).count() as u64;
        if h < state.cold_until {
            if let Some(c) = cold.as_mut() {
                c.add_hour(&hour, !done)?;
            }
            if !done && h < state.cut {
                summary.cold_samples += in_hour;
            }
        }
        if done {
            summary.hours_skipped += 1;
            h += HOUR_MS;
            continue;
        }
        if hour.end() > state.cut {
            let p = target.push_hour(&hour, state.cut)?;
            summary.pushed += p.samples;
            summary.requests += p.requests;
            summary.rejected_by_target += p.rejected;
            for e in p.errors {
                if summary.errors.len() < source::SHOWN_ERRORS {
                    summary.errors.push(e);
                }
            }
        }
        // The day's 1-hour rollups are written once its last cold hour is in.
        if let Some(c) = cold.as_mut() {
            let next = h + HOUR_MS;
            if next >= state.cold_until || next.div_euclid(DAY_MS) != h.div_euclid(DAY_MS) {
                c.finish_day()?;
            }
        }
        summary.hours += 1;
        state.done_through = h + HOUR_MS;
        state.pushed = base.0 + summary.pushed;
        state.cold_samples = base.1 + summary.cold_samples;
        state.rejected = base.2 + summary.rejected_by_target;
        state.save(&opts.state)?;
        if let Some(b) = &bar {
            match src.total_samples() {
                Some(_) => b.inc(in_hour),
                None => b.inc(1),
            }
        }
        tracing::debug!(target: "tidemark::import", hour = %crate::time::rfc3339(h), samples = in_hour, "hour imported");
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        h += HOUR_MS;
    }
    if let Some(c) = cold.as_mut() {
        c.finish_day()?;
        summary.cold = c.written;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    state.finished = true;
    state.save(&opts.state)?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}
