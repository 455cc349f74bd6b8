//! The cluster's command-line clients: `submit`, `jobs`, `cancel`, `replay` (also against
//! `tidemark up`'s embedded log).

use crate::time::rfc3339;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::spec::JobSpec;

/// Client errors: what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Spec(#[from] super::spec::SpecError),
    #[error("cannot reach {url}: {reason} (is `tidemark worker --process 0` running there?)")]
    Unreachable { url: String, reason: String },
    #[error("{url} refused: {reason}")]
    Refused { url: String, reason: String },
}

fn base(to: &str) -> String {
    to.trim_end_matches('/').to_string()
}

fn call(method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> Result<Json, ClientError> {
    let agent = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    );
    // `TIDEMARK_TOKEN`: the bearer token for servers with `[auth] tokens` (jobs, replays and
    // reloads need an `admin` one).
    let auth = std::env::var("TIDEMARK_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(|t| format!("Bearer {t}"));
    let res = match (method, body, auth) {
        ("POST", Some((ct, b)), Some(a)) => agent
            .post(url)
            .header("authorization", a)
            .header("content-type", ct)
            .send(&b[..]),
        ("POST", Some((ct, b)), None) => agent.post(url).header("content-type", ct).send(&b[..]),
        ("POST", None, Some(a)) => agent.post(url).header("authorization", a).send_empty(),
        ("POST", None, None) => agent.post(url).send_empty(),
        ("DELETE", _, Some(a)) => agent.delete(url).header("authorization", a).call(),
        ("DELETE", _, None) => agent.delete(url).call(),
        (_, _, Some(a)) => agent.get(url).header("authorization", a).call(),
        _ => agent.get(url).call(),
    };
    let mut resp = res.map_err(|e| ClientError::Unreachable {
        url: url.into(),
        reason: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: Json = serde_json::from_str(&text).unwrap_or(Json::String(text.clone()));
    if status >= 300 {
        let reason = v
            .get("error")
            .and_then(Json::as_str)
            .map(str::to_string)
            .unwrap_or(text);
        return Err(ClientError::Refused {
            url: url.into(),
            reason: format!("HTTP {status}: {reason}"),
        });
    }
    Ok(v)
}

/// `tidemark submit FILE --to URL`: validates locally (errors name line, key and fix), then
/// sends the spec to worker 0, which validates it again and checks its topics exist.
pub fn submit(file: &Path, to: &str) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(file).map_err(|source| ClientError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let spec = JobSpec::parse(&text, &file.display().to_string())?;
    call(
        "POST",
        &format!("{}/api/v1/jobs", base(to)),
        Some(("application/toml", text.into_bytes())),
    )?;
    Ok(format!("submitted job {:?} to {to}", spec.name))
}

/// `tidemark jobs --to URL`: one line per job.
pub fn jobs(to: &str) -> Result<String, ClientError> {
    let v = call("GET", &format!("{}/api/v1/jobs", base(to)), None)?;
    let mut out = format!(
        "{:<20} {:<10} {:>5} {:>24} {:>10} {:>12}\n",
        "NAME", "STATE", "EPOCH", "WATERMARK", "LAG", "SAMPLES"
    );
    for j in v["data"].as_array().cloned().unwrap_or_default() {
        let wm = j["watermark"].as_i64().unwrap_or(0);
        out.push_str(&format!(
            "{:<20} {:<10} {:>5} {:>24} {:>10} {:>12}\n",
            j["name"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["epoch"].as_u64().unwrap_or(0),
            rfc3339(wm),
            j["lag"].as_i64().unwrap_or(0),
            j["samples"].as_u64().unwrap_or(0),
        ));
        for p in j["problems"].as_array().cloned().unwrap_or_default() {
            out.push_str(&format!("  problem: {}\n", p.as_str().unwrap_or("")));
        }
        if let Some(parts) = j["partitions"].as_object() {
            for (k, p) in parts {
                out.push_str(&format!(
                    "  {k:<18} worker {:<3} offset {:>10} / {:<10} committed {:>10} malformed {}\n",
                    p["worker"].as_u64().unwrap_or(0),
                    p["position"].as_i64().unwrap_or(-1),
                    p["high"].as_i64().unwrap_or(-1),
                    p["committed"].as_i64().unwrap_or(0),
                    p["malformed"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    Ok(out)
}

/// `tidemark cancel NAME --to URL`.
pub fn cancel(name: &str, to: &str) -> Result<String, ClientError> {
    call("DELETE", &format!("{}/api/v1/jobs/{name}", base(to)), None)?;
    Ok(format!("cancelled job {name:?}"))
}

/// `tidemark replay --job NAME (--from-time T | --from-offsets P:O,...) --to URL`: rewinds
/// and, unless `detach`, shows a progress bar (offsets done, lag, rate) until caught up.
pub fn replay(
    job: &str,
    from_time: Option<&str>,
    from_offsets: Option<&str>,
    to: &str,
    detach: bool,
    timeout: Duration,
) -> Result<String, ClientError> {
    let q = match (from_time, from_offsets) {
        (Some(t), None) => format!("from_time={}", urlencode(t)),
        (None, Some(o)) => format!("from_offsets={}", urlencode(o)),
        _ => {
            return Err(ClientError::Refused {
                url: to.into(),
                reason: "give exactly one of --from-time or --from-offsets".into(),
            })
        }
    };
    let epoch_of = |v: &Json| {
        v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == job))
            .and_then(|j| j["epoch"].as_u64())
            .unwrap_or(0)
    };
    let before = epoch_of(&call("GET", &format!("{}/api/v1/jobs", base(to)), None)?);
    let v = call(
        "POST",
        &format!("{}/api/v1/jobs/{job}/replay?{q}", base(to)),
        None,
    )?;
    let start: std::collections::BTreeMap<String, i64> =
        serde_json::from_value(v["data"]["offsets"].clone()).unwrap_or_default();
    let mut out = format!(
        "replaying job {job:?} from {}\n",
        start
            .iter()
            .map(|(k, o)| format!("{k}@{o}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if detach {
        return Ok(out);
    }
    follow(&mut out, "messages", "`tidemark jobs`", timeout, || {
        let v = call("GET", &format!("{}/api/v1/jobs", base(to)), None)?;
        let j = v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == job).cloned())
            .unwrap_or_default();
        let parts = j["partitions"].as_object().cloned().unwrap_or_default();
        let (mut done, mut total) = (0i64, 0i64);
        // Every process has started the new epoch and every rewound partition has reported
        // since (a partition whose worker has not polled it yet is not caught up).
        let mut reported = j["epoch"].as_u64().unwrap_or(0) > before
            && start.keys().all(|k| parts.contains_key(k));
        for (k, p) in &parts {
            let from = start.get(k).copied().unwrap_or(0);
            let pos = p["position"].as_i64().unwrap_or(-1).max(from);
            let high = p["high"].as_i64().unwrap_or(-1);
            reported &= high >= 0;
            let high = high.max(pos);
            done += pos - from;
            total += high - from;
        }
        let finished =
            reported && total > 0 && done == total && j["watermark"].as_i64().unwrap_or(0) > 0;
        Ok((done, total, finished))
    })?;
    Ok(out)
}

/// Polls `step` (done, total, finished) every 200 ms and draws a progress bar (done/total, lag,
/// rate) until it is finished or `timeout` passes; says which in `out`.
fn follow(
    out: &mut String,
    unit: &str,
    where_to_look: &str,
    timeout: Duration,
    mut step: impl FnMut() -> Result<(i64, i64, bool), ClientError>,
) -> Result<(), ClientError> {
    let t0 = Instant::now();
    let bar = crate::logging::progress_bar(unit);
    loop {
        let (done, total, finished) = step()?;
        bar.set_length(total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
        if finished {
            bar.finish_and_clear();
            out.push_str(&format!(
                "caught up: {done} {unit} in {:.1}s\n",
                t0.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if t0.elapsed() > timeout {
            bar.abandon();
            out.push_str(&format!(
                "still replaying; follow it with {where_to_look}\n"
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `tidemark replay --from-offset N | --from-time T` against `tidemark up`: restarts its job
/// from that point of the embedded log and shows progress until it has caught up.
pub fn replay_log(
    from_time: Option<&str>,
    from_offset: Option<u64>,
    to: &str,
    detach: bool,
    timeout: Duration,
) -> Result<String, ClientError> {
    let q = match (from_time, from_offset) {
        (Some(t), None) => format!("from_time={}", urlencode(t)),
        (None, Some(o)) => format!("from_offset={o}"),
        _ => {
            return Err(ClientError::Refused {
                url: to.into(),
                reason: "give exactly one of --from-time or --from-offset".into(),
            })
        }
    };
    let url = format!("{}/api/v1/replay", base(to));
    let v = call("POST", &format!("{url}?{q}"), None)?;
    let from = v["data"]["from"].as_i64().unwrap_or(0);
    let target = v["data"]["target"].as_i64().unwrap_or(0);
    let windows = match v["data"]["rollups_from"].as_i64() {
        Some(t) if t != i64::MIN => format!("rollups rebuilt from {}", rfc3339(t)),
        _ => "every rollup rebuilt".into(),
    };
    let mut out = format!("replaying the log from offset {from} to {target}, {windows}\n");
    if detach {
        return Ok(out);
    }
    follow(&mut out, "records", "GET /api/v1/replay", timeout, || {
        let d = call("GET", &url, None)?["data"].clone();
        let pos = d["position"]
            .as_i64()
            .unwrap_or(from)
            .clamp(from, target.max(from));
        Ok((
            pos - from,
            target - from,
            d["caught_up"].as_bool() == Some(true),
        ))
    })?;
    Ok(out)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
