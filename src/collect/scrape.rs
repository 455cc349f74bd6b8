//! One target: its labels from a discovered group (Prometheus's `populateLabels`), and one
//! scrape of it turned into samples as Prometheus's scrape loop does: target labels attached
//! (`honor_labels`, `exported_` on conflict), `metric_relabel_configs`, `sample_limit` and
//! `label_limit` (exceeded: the scrape fails), `honor_timestamps`, staleness markers for the
//! series that disappeared since the last scrape (all of them when a scrape fails or the target
//! goes away), and the report series `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling`, `scrape_series_added`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::config::ScrapeJob;
use super::relabel;
use crate::ingest::promtext::{self, TextOptions};
use crate::ingest::{BatchBuilder, SeriesBuf};
use crate::model::metadata::Metadata;
use crate::model::{stale_nan, IdSet, SeriesId};

/// A group of targets with common labels, as service discovery hands them out.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
pub struct TargetGroup {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

pub type Pairs = Vec<(String, String)>;

/// A target to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub job: String,
    pub scrape_url: String,
    /// Its labels after relabeling (without `__` labels), sorted.
    pub labels: Pairs,
    /// Its labels as discovered, before relabeling, sorted.
    pub discovered: Pairs,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    /// Identity: job, URL and labels hashed (spreads scrapes over the interval, places the
    /// target on the ring).
    pub key: u64,
}

impl Target {
    /// Where in each interval this target is scraped: a stable offset from its key.
    pub fn offset_ms(&self) -> i64 {
        (self.key % self.interval_ms.max(1) as u64) as i64
    }
}

fn get<'a>(l: &'a Pairs, name: &str) -> Option<&'a str> {
    l.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn put(l: &mut Pairs, name: &str, value: &str) {
    match l.iter_mut().find(|(n, _)| n == name) {
        Some(p) => p.1 = value.to_string(),
        None => l.push((name.to_string(), value.to_string())),
    }
}

fn secs(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The targets of `job` from discovered `groups`, and the discovered label sets relabeling
/// dropped.
pub fn targets_of(job: &ScrapeJob, groups: &[TargetGroup]) -> (Vec<Target>, Vec<Pairs>) {
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for g in groups {
        for addr in &g.targets {
            let mut l: Pairs = g
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            put(&mut l, "__address__", addr);
            for (k, v) in [
                ("job", job.name.as_str()),
                ("__scheme__", job.scheme.as_str()),
                ("__metrics_path__", job.metrics_path.as_str()),
            ] {
                if get(&l, k).is_none() {
                    put(&mut l, k, v);
                }
            }
            for (k, v) in [
                ("__scrape_interval__", secs(job.interval_ms)),
                ("__scrape_timeout__", secs(job.timeout_ms)),
            ] {
                if get(&l, k).is_none() {
                    put(&mut l, k, &v);
                }
            }
            for (k, vs) in &job.params {
                let name = format!("__param_{k}");
                if let (None, Some(v)) = (get(&l, &name), vs.first()) {
                    put(&mut l, &name, v);
                }
            }
            l.sort();
            let discovered = l.clone();
            if !relabel::process(&job.relabel, &mut l) {
                dropped.push(discovered);
                continue;
            }
            let Some(address) = get(&l, "__address__").map(str::to_string) else {
                dropped.push(discovered);
                continue;
            };
            if get(&l, "instance").is_none() {
                put(&mut l, "instance", &address);
            }
            let interval = get(&l, "__scrape_interval__")
                .and_then(crate::time::parse_duration_ms)
                .unwrap_or(job.interval_ms);
            let timeout = get(&l, "__scrape_timeout__")
                .and_then(crate::time::parse_duration_ms)
                .unwrap_or(job.timeout_ms)
                .min(interval);
            let scheme = get(&l, "__scheme__").unwrap_or("http").to_string();
            let path = get(&l, "__metrics_path__")
                .unwrap_or("/metrics")
                .to_string();
            let mut query: Vec<String> = Vec::new();
            for (k, vs) in &job.params {
                let first = get(&l, &format!("__param_{k}")).map(str::to_string);
                for (i, v) in vs.iter().enumerate() {
                    let v = if i == 0 {
                        first.clone().unwrap_or_else(|| v.clone())
                    } else {
                        v.clone()
                    };
                    query.push(format!("{}={}", enc(k), enc(&v)));
                }
            }
            let url = format!(
                "{scheme}://{address}{path}{}{}",
                if query.is_empty() { "" } else { "?" },
                query.join("&")
            );
            l.retain(|(n, _)| !n.starts_with("__"));
            l.sort();
            let key = {
                let mut s = format!("{}\u{0}{url}", job.name);
                for (k, v) in &l {
                    s.push('\u{0}');
                    s.push_str(k);
                    s.push('=');
                    s.push_str(v);
                }
                xxhash_rust::xxh3::xxh3_64(s.as_bytes())
            };
            active.push(Target {
                job: job.name.clone(),
                scrape_url: url,
                labels: l,
                discovered,
                interval_ms: interval,
                timeout_ms: timeout,
                key,
            });
        }
    }
    (active, dropped)
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A scraped series as it is stored: its id and canonical bytes, or why the ingest limits
/// refuse it.
struct Stored {
    id: SeriesId,
    canon: Box<[u8]>,
    refused: Option<String>,
}

/// What a target's scrapes remember: the stored series of each raw series text (`None`:
/// dropped by metric relabeling), computed once, and the series of the last scrape (for
/// staleness markers and `scrape_series_added`).
pub struct Cache {
    raw: HashMap<Box<[u8]>, Option<u32>, xxhash_rust::xxh3::Xxh3Builder>,
    series: Vec<Stored>,
    /// The last scrape's series: indexes into `series`, and their ids.
    prev: Vec<u32>,
    prev_ids: IdSet,
    /// How often the series map was rebuilt (it is cleared when it grows past 4x the scrape).
    pub resets: u64,
    /// The metric families' `# TYPE`/`# HELP`/`# UNIT` of the last successful scrape, and
    /// whether that scrape changed them.
    pub metadata: std::sync::Arc<Vec<(String, Metadata)>>,
    pub metadata_changed: bool,
    metadata_digest: u64,
    /// The target's [`REPORT_SERIES`], encoded at its first scrape (empty until then, or
    /// while the limits refuse one of them).
    report: Vec<(SeriesId, Box<[u8]>)>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            raw: HashMap::with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
            series: Vec::new(),
            prev: Vec::new(),
            prev_ids: IdSet::default(),
            resets: 0,
            metadata: Default::default(),
            metadata_changed: false,
            metadata_digest: 0,
            report: Vec::new(),
        }
    }
}

impl Cache {
    /// Keeps only the series of the last scrape (the raw map is refilled as lines come).
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.series);
        let mut kept: Vec<Option<Stored>> = old.into_iter().map(Some).collect();
        for i in self.prev.iter_mut() {
            if let Some(s) = kept.get_mut(*i as usize).and_then(Option::take) {
                self.series.push(s);
            }
            *i = (self.series.len() - 1) as u32;
        }
        self.raw.clear();
        self.resets += 1;
    }
}

/// What one scrape did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub up: bool,
    pub error: Option<String>,
    pub duration_s: f64,
    pub scraped: u64,
    pub post_relabel: u64,
    pub added: u64,
    pub stale: u64,
}

/// A fetched body: its bytes, and whether it is OpenMetrics (by its `Content-Type`).
pub struct Body<'a> {
    pub bytes: &'a [u8],
    pub openmetrics: bool,
}

/// Adds one scrape of `target` at `ts` to `out`: the samples of `body` (or, when fetching
/// failed, `Err(reason)`), the staleness markers, and the report series.
pub fn scrape_samples(
    job: &ScrapeJob,
    target: &Target,
    body: Result<Body<'_>, String>,
    ts: i64,
    duration_s: f64,
    cache: &mut Cache,
    out: &mut BatchBuilder<'_>,
) -> Report {
    let mut rep = Report {
        duration_s,
        ..Report::default()
    };
    let result = body.and_then(|b| parse_body(job, target, &b, ts, cache, out, &mut rep));
    let (current, now_ids) = match result {
        Ok(c) => {
            rep.up = true;
            c
        }
        Err(e) => {
            rep.error = Some(e);
            rep.post_relabel = 0;
            Default::default()
        }
    };
    // The samples, then staleness: series of the last scrape not in this one.
    out.reserve(current.len() + 8);
    for &(i, t, v) in &current {
        let st = &cache.series[i as usize];
        if !cache.prev_ids.contains(&st.id) {
            rep.added += 1;
        }
        match &st.refused {
            None => out.add_encoded(st.id, &st.canon, t, v, 0),
            Some(why) => out.reject(crate::ops::Reject::Limit, 0, why.clone()),
        }
    }
    for &i in &cache.prev {
        let st = &cache.series[i as usize];
        if !now_ids.contains(&st.id) && st.refused.is_none() {
            out.add_encoded(st.id, &st.canon, ts, stale_nan(), 0);
            rep.stale += 1;
        }
    }
    cache.prev = current.iter().map(|c| c.0).collect();
    cache.prev_ids = now_ids;
    if cache.raw.len() > 4 * current.len().max(1024) {
        cache.compact();
    }
    let values = [
        if rep.up { 1.0 } else { 0.0 },
        rep.duration_s,
        rep.scraped as f64,
        rep.post_relabel as f64,
        rep.added as f64,
    ];
    if cache.report.is_empty() {
        cache.report = REPORT_SERIES
            .iter()
            .map(|name| {
                let l = report_labels(target, name);
                out.encode_series(&l)
                    .map(|(id, c)| (id, c.into_boxed_slice()))
            })
            .collect::<Result<_, _>>()
            .unwrap_or_default();
    }
    if cache.report.len() == REPORT_SERIES.len() {
        for ((id, canon), v) in cache.report.iter().zip(values) {
            out.add_encoded(*id, canon, ts, v, 0);
        }
    } else {
        // The limits refuse a report series: added one by one, so that the batch says why.
        for (name, v) in REPORT_SERIES.iter().zip(values) {
            add(out, &report_labels(target, name), ts, v);
        }
    }
    rep
}

/// The series Prometheus writes per target and scrape, in the order of [`Report`]'s fields.
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The labels of the report series `name` of `target`.
fn report_labels(target: &Target, name: &str) -> Pairs {
    let mut l = target.labels.clone();
    l.push(("__name__".into(), name.into()));
    l.sort();
    l
}

/// Stale markers for every series of the last scrape and the report series: the target went
/// away (Prometheus marks its series stale when it stops scraping a target).
pub fn target_gone(target: &Target, ts: i64, cache: &mut Cache, out: &mut BatchBuilder<'_>) {
    for &i in &cache.prev {
        let st = &cache.series[i as usize];
        if st.refused.is_none() {
            out.add_encoded(st.id, &st.canon, ts, stale_nan(), 0);
        }
    }
    cache.prev.clear();
    cache.prev_ids.clear();
    for name in REPORT_SERIES {
        add(out, &report_labels(target, name), ts, stale_nan());
    }
}

fn add(out: &mut BatchBuilder<'_>, labels: &Pairs, ts: i64, v: f64) {
    let mut buf = SeriesBuf::default();
    for (k, val) in labels {
        buf.push(Cow::Borrowed(k.as_str()), Cow::Borrowed(val.as_str()));
    }
    out.add(&mut buf, ts, v, 0);
}

/// The scrape's samples as `(series index, time, value)` in the order of the body, and the
/// ids of their series.
type Scraped = (Vec<(u32, i64, f64)>, IdSet);

/// Parses a body into (series, time, value) entries; an error fails the whole scrape (as Prometheus's does).
fn parse_body(
    job: &ScrapeJob,
    target: &Target,
    body: &Body<'_>,
    ts: i64,
    cache: &mut Cache,
    out: &BatchBuilder<'_>,
    rep: &mut Report,
) -> Result<Scraped, String> {
    // Sized for a scrape like the last one: no rehash while the sets fill.
    let mut current = Vec::with_capacity(cache.prev.len());
    let text = std::str::from_utf8(body.bytes)
        .map_err(|e| format!("the body is not UTF-8 (byte {})", e.valid_up_to() + 1))?;
    let opts = TextOptions {
        openmetrics: body.openmetrics,
        require_timestamp: false,
    };
    let mut seen = IdSet::with_capacity_and_hasher(cache.prev.len(), Default::default());
    let mut comments: Vec<&str> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            comments.push(line);
            continue;
        }
        let end = promtext::series_end(line.as_bytes())
            .ok_or_else(|| format!("line {}: missing value after the series", n + 1))?;
        let key = &line.as_bytes()[..end];
        let (t, v) = promtext::parse_value_ts(&line.as_bytes()[end..], opts)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        rep.scraped += 1;
        let idx = match cache.raw.get(key) {
            Some(e) => *e,
            None => {
                let e = match final_labels(job, target, line, n + 1)? {
                    None => None,
                    Some((_, labels)) => {
                        let (id, canon, refused) = match out.encode_series(&labels) {
                            Ok((id, canon)) => (id, canon.into_boxed_slice(), None),
                            Err(why) => (
                                crate::model::Labels::from_pairs(
                                    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                                )
                                .series_id(),
                                Box::default(),
                                Some(format!("line {}: {why}", n + 1)),
                            ),
                        };
                        cache.series.push(Stored { id, canon, refused });
                        Some((cache.series.len() - 1) as u32)
                    }
                };
                cache.raw.insert(key.into(), e);
                e
            }
        };
        let Some(idx) = idx else {
            continue; // dropped by metric relabeling
        };
        let id = cache.series[idx as usize].id;
        rep.post_relabel += 1;
        if job.sample_limit > 0 && rep.post_relabel > job.sample_limit {
            return Err(format!(
                "sample_limit exceeded: more than {} samples after metric relabeling (sample_limit of job {:?})",
                job.sample_limit, job.name
            ));
        }
        let t = match t {
            Some(t) if job.honor_timestamps => t,
            _ => ts,
        };
        if !seen.insert(id) {
            // Prometheus keeps the first and counts the rest as duplicates.
            tracing::debug!(target: "tidemark::collect", url = target.scrape_url.as_str(), line = n + 1, "duplicate series in one scrape");
            continue;
        }
        current.push((idx, t, v));
    }
    // The metadata is parsed again only when the comment lines changed.
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for c in &comments {
        h.update(c.as_bytes());
        h.update(b"\n");
    }
    let digest = h.digest();
    cache.metadata_changed = false;
    if digest != cache.metadata_digest {
        cache.metadata_digest = digest;
        let meta = promtext::metadata_lines(comments.into_iter());
        cache.metadata_changed = *cache.metadata != meta;
        cache.metadata = std::sync::Arc::new(meta);
    }
    Ok((current, seen))
}

/// The labels a scraped series is stored with (target labels attached, metric relabeling
/// applied; `None`: dropped), and its series id.
fn final_labels(
    job: &ScrapeJob,
    target: &Target,
    line: &str,
    n: usize,
) -> Result<Option<(SeriesId, Pairs)>, String> {
    let mut buf = SeriesBuf::default();
    promtext::parse_line(line, 0, TextOptions::PUSH, &mut buf)
        .map_err(|e| format!("line {n}: {e}"))?;
    let mut l = buf.sorted_pairs().map_err(|e| format!("line {n}: {e}"))?;
    for (k, v) in &target.labels {
        match l.iter().position(|(n, _)| n == k) {
            Some(_) if job.honor_labels => {}
            Some(i) => {
                // The scraped label is kept as `exported_<name>` (repeatedly, if taken).
                let mut name = format!("exported_{k}");
                while l.iter().any(|(n, _)| *n == name) {
                    name = format!("exported_{name}");
                }
                l[i].0 = name;
                l.push((k.clone(), v.clone()));
            }
            None => l.push((k.clone(), v.clone())),
        }
    }
    l.sort();
    if !relabel::process(&job.metric_relabel, &mut l) {
        return Ok(None);
    }
    if job.label_limit > 0 && l.len() as u64 > job.label_limit {
        return Err(format!(
            "line {n}: label_limit exceeded: {} labels, more than {} (label_limit of job {:?})",
            l.len(),
            job.label_limit,
            job.name
        ));
    }
    let labels = crate::model::Labels::from_pairs(l.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Ok(Some((labels.series_id(), l)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::config::ScrapeConfig;
    use crate::model::{is_stale_nan, Limits};
    use std::path::Path;

    fn job(extra: &str) -> ScrapeJob {
        let text =
            format!("scrape_configs:\n  - job_name: node\n    scrape_interval: 10s\n{extra}");
        ScrapeConfig::parse(Path::new("s.yml"), &text)
            .unwrap()
            .jobs
            .remove(0)
    }

    fn group(addr: &str, labels: &[(&str, &str)]) -> TargetGroup {
        TargetGroup {
            targets: vec![addr.into()],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn targets_get_job_instance_and_url_and_relabeling_drops_some() {
        let j = job("    params:\n      module: [cpu]\n    relabel_configs:\n      - source_labels: [env]\n        regex: dev\n        action: drop\n");
        let (active, dropped) = targets_of(
            &j,
            &[
                group("a:9100", &[("env", "prod"), ("__meta_x", "1")]),
                group("b:9100", &[("env", "dev")]),
            ],
        );
        assert_eq!(dropped.len(), 1);
        assert_eq!(active.len(), 1);
        let t = &active[0];
        assert_eq!(t.scrape_url, "http://a:9100/metrics?module=cpu");
        let names: Vec<&str> = t.labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["env", "instance", "job"]);
        assert_eq!(get(&t.labels, "instance"), Some("a:9100"));
        assert!(get(&t.discovered, "__meta_x").is_some());
        assert!(t.offset_ms() < 10_000);
    }

    fn scrape(
        j: &ScrapeJob,
        t: &Target,
        body: Result<&str, String>,
        ts: i64,
        cache: &mut Cache,
    ) -> (Report, Vec<(String, i64, f64)>) {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        let rep = scrape_samples(
            j,
            t,
            body.map(|s| Body {
                bytes: s.as_bytes(),
                openmetrics: false,
            }),
            ts,
            0.01,
            cache,
            &mut b,
        );
        let (batch, errs, _) = b.finish();
        assert!(errs.is_empty(), "{errs:?}");
        let mut out: Vec<(String, i64, f64)> = batch
            .samples
            .iter()
            .map(|s| (batch.labels(s.series as usize).to_string(), s.ts, s.value))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        (rep, out)
    }

    #[test]
    fn a_scrape_attaches_target_labels_and_reports_then_marks_the_gone_series_stale() {
        let j = job("    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: go_.*\n        action: drop\n");
        let (ts, _) = targets_of(&j, &[group("h:1", &[])]);
        let t = &ts[0];
        let mut cache = Cache::default();
        let body = "# TYPE a counter\na_total{job=\"inner\"} 3\ngo_x 1\nb 2 1000\n";
        let (rep, out) = scrape(&j, t, Ok(body), 5_000, &mut cache);
        assert!(rep.up);
        assert_eq!((rep.scraped, rep.post_relabel, rep.added), (3, 2, 2));
        let a = out.iter().find(|s| s.0.contains("a_total")).unwrap();
        assert!(
            a.0.contains("exported_job=\"inner\"") && a.0.contains("job=\"node\""),
            "{}",
            a.0
        );
        let b = out.iter().find(|s| s.0.starts_with("b{")).unwrap();
        assert_eq!(b.1, 1000, "honor_timestamps is the default");
        assert!(out.iter().any(|s| s.0.starts_with("up{") && s.2 == 1.0));
        assert!(!out.iter().any(|s| s.0.contains("go_x")));
        // Next scrape: `b` is gone and gets a stale marker at the scrape's time.
        let (rep, out) = scrape(&j, t, Ok("a_total{job=\"inner\"} 4\n"), 15_000, &mut cache);
        assert_eq!((rep.added, rep.stale), (0, 1));
        let b = out.iter().find(|s| s.0.starts_with("b{")).unwrap();
        assert!(is_stale_nan(b.2) && b.1 == 15_000);
        // A failed scrape: up 0, everything of the last scrape stale.
        let (rep, out) = scrape(&j, t, Err("connection refused".into()), 25_000, &mut cache);
        assert!(!rep.up && rep.error.as_deref() == Some("connection refused"));
        assert!(out.iter().any(|s| s.0.starts_with("up{") && s.2 == 0.0));
        assert!(out
            .iter()
            .any(|s| s.0.contains("a_total") && is_stale_nan(s.2)));
    }

    #[test]
    fn the_series_cache_is_compacted_and_staleness_survives_it() {
        let j = job("");
        let (ts, _) = targets_of(&j, &[group("h:1", &[])]);
        let mut cache = Cache::default();
        // Series that change every scrape (a counter per request id, say): the cache of raw
        // series grows past 4 x max(scrape, 1024) and is compacted to the last scrape's.
        let page = |k: usize| -> String {
            (0..10)
                .map(|i| format!("r{{id=\"{k}-{i}\"}} 1\n"))
                .collect()
        };
        for k in 0..420 {
            let (rep, out) = scrape(&j, &ts[0], Ok(&page(k)), 1000 * k as i64, &mut cache);
            assert!(rep.up);
            if k > 0 {
                // The previous page's ten series are stale, this page's ten are new.
                assert_eq!((rep.added, rep.stale), (10, 10), "scrape {k}");
                let stale = out.iter().filter(|s| is_stale_nan(s.2)).count();
                assert_eq!(stale, 10, "scrape {k}");
                assert!(out
                    .iter()
                    .any(|s| s.0.contains(&format!("{}-9", k - 1)) && is_stale_nan(s.2)));
            }
        }
        assert_eq!(cache.resets, 1);
    }

    #[test]
    fn limits_and_bad_bodies_fail_the_scrape_with_the_line() {
        let j = job("    sample_limit: 2\n");
        let (ts, _) = targets_of(&j, &[group("h:1", &[])]);
        let mut cache = Cache::default();
        let (rep, _) = scrape(&j, &ts[0], Ok("a 1\nb 2\nc 3\n"), 1, &mut cache);
        assert!(!rep.up);
        assert!(rep.error.unwrap().contains("sample_limit exceeded"));
        let (rep, _) = scrape(&j, &ts[0], Ok("a 1\nb{x=\"1\" 2\n"), 1, &mut cache);
        assert!(rep.error.unwrap().starts_with("line 2: "));
        let j = job("    honor_labels: true\n    honor_timestamps: false\n");
        let (ts, _) = targets_of(&j, &[group("h:1", &[])]);
        let (rep, out) = scrape(
            &j,
            &ts[0],
            Ok("m{job=\"mine\"} 1 1000\nm{job=\"mine\"} 2 2000\n"),
            7,
            &mut Cache::default(),
        );
        assert!(rep.up);
        let m: Vec<_> = out.iter().filter(|s| s.0.starts_with("m{")).collect();
        assert_eq!(m.len(), 1, "a duplicate series keeps the first sample");
        assert!(
            m[0].0.contains("job=\"mine\"") && m[0].1 == 7 && m[0].2 == 1.0,
            "{m:?}"
        );
    }
}
