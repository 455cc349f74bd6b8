//! Graphite's plaintext protocol (`path value timestamp` per line, over TCP), with Graphite
//! 1.1 tags (`path;tag=value;...`) and InfluxDB-style templates that turn a dotted path into a
//! metric name and labels (`[ingest] graphite_templates`):
//!
//! ```text
//! [filter] template [tag=value,...]
//! servers.*.cpu.*   .host.measurement.field     dc=eu
//! ```
//!
//! A template's parts name the path's nodes in order: `measurement` (a word of the metric
//! name), `measurement*` (this node and all after it), `field` / `field*` (words appended after
//! the measurement), a label name (`host`), or nothing (the node is skipped). The filter is a
//! dotted pattern where `*` matches one node; the most specific matching filter wins (fewest
//! wildcards, then the order given); a template without a filter matches everything. Words
//! are joined by `_` (Prometheus names have no dots). A path no template matches becomes its
//! nodes joined by `_`, as graphite_exporter names unmapped metrics.

use std::borrow::Cow;

use super::{BatchBuilder, SeriesBuf};

/// One template.
#[derive(Clone, Debug, PartialEq)]
struct Template {
    filter: Vec<String>,
    parts: Vec<String>,
    tags: Vec<(String, String)>,
    order: usize,
}

/// The configured templates.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Templates(Vec<Template>);

impl Templates {
    /// Parses `[ingest] graphite_templates`; an error names the template and what is wrong.
    pub fn parse(specs: &[String]) -> Result<Templates, String> {
        let mut out = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let bad = |r: &str| format!("ingest.graphite_templates[{i}] {spec:?}: {r}");
            let words: Vec<&str> = spec.split_whitespace().collect();
            let (filter, template, tags) = match words.as_slice() {
                [t] => ("", *t, ""),
                [a, b] if b.contains('=') => ("", *a, *b),
                [a, b] => (*a, *b, ""),
                [a, b, c] => (*a, *b, *c),
                _ => return Err(bad("give [filter] template [tag=value,...]")),
            };
            let parts: Vec<String> = template.split('.').map(str::to_string).collect();
            let measurement = parts
                .iter()
                .filter(|p| p.starts_with("measurement"))
                .count();
            if parts
                .iter()
                .any(|p| p.ends_with('*') && !matches!(p.as_str(), "measurement*" | "field*"))
            {
                return Err(bad("only measurement* and field* may end with *"));
            }
            if parts
                .iter()
                .enumerate()
                .any(|(k, p)| p.ends_with('*') && k + 1 != parts.len())
            {
                return Err(bad(
                    "measurement* or field* must be the template's last part",
                ));
            }
            if measurement == 0 && !parts.iter().any(|p| p.starts_with("field")) {
                return Err(bad("the template names no measurement (the metric name)"));
            }
            for p in &parts {
                if !p.is_empty()
                    && !p.starts_with("measurement")
                    && !p.starts_with("field")
                    && !crate::model::is_valid_label_name(p)
                {
                    return Err(bad(&format!("{p:?} is not a valid label name")));
                }
            }
            let mut tag_pairs = Vec::new();
            for t in tags.split(',').filter(|t| !t.is_empty()) {
                let (k, v) = t
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("tag {t:?}: give name=value")))?;
                if !crate::model::is_valid_label_name(k) {
                    return Err(bad(&format!("{k:?} is not a valid label name")));
                }
                tag_pairs.push((k.to_string(), v.to_string()));
            }
            out.push(Template {
                filter: if filter.is_empty() {
                    Vec::new()
                } else {
                    filter.split('.').map(str::to_string).collect()
                },
                parts,
                tags: tag_pairs,
                order: i,
            });
        }
        // Most specific first: longer filters with fewer wildcards, then the order given.
        out.sort_by_key(|t| {
            let wild = t.filter.iter().filter(|p| *p == "*").count();
            (
                t.filter.is_empty(),
                std::cmp::Reverse(t.filter.len() - wild),
                wild,
                t.order,
            )
        });
        Ok(Templates(out))
    }

    fn find(&self, nodes: &[&str]) -> Option<&Template> {
        self.0.iter().find(|t| {
            t.filter.is_empty()
                || (t.filter.len() <= nodes.len()
                    && t.filter.iter().zip(nodes).all(|(f, n)| f == "*" || f == n))
        })
    }
}

/// A metric-name word: characters outside `[a-zA-Z0-9_:]` become `_`.
fn clean(word: &str, out: &mut String) {
    for c in word.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        });
    }
}

/// Parses one line into `buf`; its time (`now_ms` without one) and value.
pub fn parse_line<'a>(
    line: &'a str,
    now_ms: i64,
    templates: &'a Templates,
    buf: &mut SeriesBuf<'a>,
) -> Result<(i64, f64), String> {
    buf.clear();
    let mut f = line.split_whitespace();
    let path = f.next().ok_or("empty line")?;
    let value = f
        .next()
        .ok_or("missing value: a line is `path value [timestamp]`")?;
    let value = super::parse_f64(value.as_bytes())
        .ok_or_else(|| format!("value {value:?} is not a number"))?;
    let ts = match f.next() {
        None => now_ms,
        Some(t) => {
            let secs: f64 = t
                .parse()
                .map_err(|_| format!("timestamp {t:?} is not a number of seconds"))?;
            if secs < 0.0 {
                now_ms
            } else {
                (secs * 1000.0).round() as i64
            }
        }
    };
    if f.next().is_some() {
        return Err("too many fields: a line is `path value [timestamp]`".into());
    }
    // Graphite 1.1 tags.
    let mut pieces = path.split(';');
    let path = pieces.next().unwrap_or_default();
    if path.is_empty() {
        return Err("empty metric path".into());
    }
    let nodes: Vec<&str> = path.split('.').collect();
    if nodes.iter().any(|n| n.is_empty()) {
        return Err(format!("metric path {path:?} has an empty node"));
    }
    let mut name = String::with_capacity(path.len());
    let push_word = |w: &str, name: &mut String| {
        if !name.is_empty() {
            name.push('_');
        }
        clean(w, name);
    };
    match templates.find(&nodes) {
        None => {
            for n in &nodes {
                push_word(n, &mut name);
            }
        }
        Some(t) => {
            let mut fields = String::new();
            for (i, part) in t.parts.iter().enumerate() {
                let rest: &[&str] = if part.ends_with('*') {
                    &nodes[i.min(nodes.len())..]
                } else {
                    nodes.get(i..=i).unwrap_or(&[])
                };
                for n in rest {
                    match part.as_str() {
                        "" => {}
                        p if p.starts_with("measurement") => push_word(n, &mut name),
                        p if p.starts_with("field") => push_word(n, &mut fields),
                        label => buf.push(Cow::Borrowed(label), Cow::Borrowed(n)),
                    }
                }
            }
            if name.is_empty() {
                for n in &nodes {
                    push_word(n, &mut name);
                }
            }
            if !fields.is_empty() {
                name.push('_');
                name.push_str(&fields);
            }
            for (k, v) in &t.tags {
                buf.push(Cow::Borrowed(k), Cow::Borrowed(v));
            }
        }
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    for tag in pieces {
        let (k, v) = tag
            .split_once('=')
            .ok_or_else(|| format!("tag {tag:?}: Graphite tags are `;name=value`"))?;
        buf.push(
            Cow::Owned(k.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")),
            Cow::Borrowed(v),
        );
    }
    buf.set_name(&[&name]);
    Ok((ts, value))
}

/// Parses a chunk of lines into `out` (line numbers from `first_line`); bad lines are errors
/// naming the line, the others are kept.
pub fn parse(
    text: &str,
    first_line: usize,
    now_ms: i64,
    templates: &Templates,
    out: &mut BatchBuilder<'_>,
) {
    let mut buf = SeriesBuf::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, now_ms, templates, &mut buf) {
            Ok((ts, v)) => out.add(&mut buf, ts, v, first_line + i),
            Err(reason) => out.error(first_line + i, reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Limits;

    fn one(t: &Templates, line: &str) -> Result<(String, i64, f64), String> {
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        parse(line, 1, 5_000, t, &mut b);
        let (batch, errs, _) = b.finish();
        if let Some(e) = errs.first() {
            return Err(e.reason.clone());
        }
        let s = &batch.samples[0];
        Ok((batch.labels(s.series as usize).to_string(), s.ts, s.value))
    }

    #[test]
    fn templates_name_and_label() {
        let t = Templates::parse(&[
            "servers.* .host.measurement.field dc=eu".into(),
            "servers.web01.* .host.measurement* role=web".into(),
            "stats.* .measurement*".into(),
        ])
        .unwrap();
        assert_eq!(
            one(&t, "servers.db02.cpu.idle 93.5 1700000000").unwrap(),
            (
                "cpu_idle{dc=\"eu\", host=\"db02\"}".into(),
                1_700_000_000_000,
                93.5
            )
        );
        // The more specific filter wins.
        assert_eq!(
            one(&t, "servers.web01.disk.sda.used 7 1700000000.5")
                .unwrap()
                .0,
            "disk_sda_used{host=\"web01\", role=\"web\"}"
        );
        assert_eq!(
            one(&t, "stats.gauges.queue-depth 3").unwrap().0,
            "gauges_queue_depth{}"
        );
        // Unmatched: the path's nodes joined by _; no timestamp or -1: now.
        assert_eq!(
            one(&t, "app.requests.count 12 -1").unwrap(),
            ("app_requests_count{}".into(), 5_000, 12.0)
        );
        // Graphite 1.1 tags.
        assert_eq!(
            one(&t, "app.latency;env=prod;dc=eu 0.25 1700000000")
                .unwrap()
                .0,
            "app_latency{dc=\"eu\", env=\"prod\"}"
        );
    }

    #[test]
    fn bad_lines_and_templates_are_named() {
        let t = Templates::default();
        assert!(one(&t, "a.b").unwrap_err().contains("missing value"));
        assert!(one(&t, "a.b x 1")
            .unwrap_err()
            .contains("\"x\" is not a number"));
        assert!(one(&t, "a..b 1 1").unwrap_err().contains("empty node"));
        assert!(one(&t, "a.b 1 soon")
            .unwrap_err()
            .contains("timestamp \"soon\""));
        assert!(one(&t, "a.b 1 2 3")
            .unwrap_err()
            .contains("too many fields"));
        let e = Templates::parse(&["a.* .host.bad-label".into()]).unwrap_err();
        assert!(
            e.contains("graphite_templates[0]") && e.contains("no measurement"),
            "{e}"
        );
        let e = Templates::parse(&[".measurement*.host".into()]).unwrap_err();
        assert!(e.contains("last part"), "{e}");
        // A bad line among good ones: the good are kept.
        let limits = Limits::default();
        let mut b = BatchBuilder::new(&limits);
        parse("a.b 1 1\nbroken\nc.d 2 2\n", 10, 0, &t, &mut b);
        let (batch, errs, _) = b.finish();
        assert_eq!(batch.samples.len(), 2);
        assert_eq!(errs[0].line, 11);
    }
}
