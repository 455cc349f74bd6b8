//! Differential tests of the query service on a running `tidemark up`: random queries from a
//! grammar over fleet-like metrics, answered with the result cache and without it (the JSON
//! byte for byte), also after new samples arrive for the last steps and after a late sample
//! inside `allowed_lateness`; and each range step against an instant query at that time.

mod support;

use support::fleet::{lines, query, HOSTS};
use support::{enc, now_ms, Rng, Tidemark};

const STEP_MS: i64 = 60_000;

fn range_body(t: &Tidemark, q: &str, start: i64, end: i64, extra: &str) -> String {
    let (status, body) = t.get(&format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60{extra}",
        enc(q),
        start / 1000,
        end / 1000
    ));
    assert_eq!(status, 200, "{q}: {body}");
    body
}

fn push(t: &Tidemark, body: &str) {
    let (status, resp) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
}

#[test]
fn cached_and_uncached_answers_are_byte_identical_through_new_and_late_samples() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(dir.path(), "[rules]\nenabled = false\n", 2);
    let base = (now_ms() / STEP_MS - 50) * STEP_MS;
    let end = base + 40 * STEP_MS;
    push(&t, &lines(base, end + 10_000));
    let per_tick = 3.0 * HOSTS as f64;
    let sent = per_tick * ((end + 10_000 - base) / 10_000) as f64;
    t.eventually("the first 40 minutes in the hot index", || {
        (t.metric("tidemark_hot_samples") >= sent).then_some(())
    });
    let mut r = Rng(0x5eed_cafe);
    let queries: Vec<String> = (0..40).map(|i| query(&mut r, i % 3)).collect();
    let start = base + 10 * STEP_MS;
    let hits0 = t.metric(r#"tidemark_query_cache_requests_total{result="hit"}"#);
    // Round 1: uncached, the cache's first answer (a miss, kept), its second (a hit).
    let mut first = Vec::new();
    for q in &queries {
        let plain = range_body(&t, q, start, end, "&nocache=1");
        assert_eq!(
            range_body(&t, q, start, end, ""),
            plain,
            "first answer of {q}"
        );
        assert_eq!(
            range_body(&t, q, start, end, ""),
            plain,
            "cached answer of {q}"
        );
        first.push(plain);
    }
    let hits1 = t.metric(r#"tidemark_query_cache_requests_total{result="hit"}"#);
    assert!(
        hits1 - hits0 >= queries.len() as f64,
        "every second request reused kept steps: {hits0} -> {hits1}"
    );
    assert!(t.metric("tidemark_query_cache_bytes") > 0.0);

    // Round 2: three more minutes arrive; the dashboard's window moves with them.
    let end2 = end + 3 * STEP_MS;
    push(&t, &lines(end + 10_000, end2 + 10_000));
    let sent2 = sent + per_tick * ((end2 - end) / 10_000) as f64;
    t.eventually("three more minutes in the hot index", || {
        (t.metric("tidemark_hot_samples") >= sent2).then_some(())
    });
    let start2 = start + 3 * STEP_MS;
    for q in &queries {
        let cached = range_body(&t, q, start2, end2, "");
        assert_eq!(
            cached,
            range_body(&t, q, start2, end2, "&nocache=1"),
            "after new samples: {q}"
        );
    }
    let hits2 = t.metric(r#"tidemark_query_cache_requests_total{result="hit"}"#);
    assert!(
        hits2 - hits1 >= queries.len() as f64 / 2.0,
        "{hits1} -> {hits2}"
    );

    // Round 3: a late sample inside allowed_lateness (5 minutes behind the watermark), at a
    // time no sample had, for one host: it changes the steps after it.
    let probe = r#"max_over_time(cpu_load{host="h1"}[2m])"#;
    let before = range_body(&t, probe, start2, end2, "");
    let late_before = t.metric(r#"tidemark_late_samples_total{action="accepted"}"#);
    let late_ts = end2 - 2 * STEP_MS - 5_000;
    push(
        &t,
        &format!("cpu,host=h1,region=us,env=dev load=999 {late_ts}\n"),
    );
    t.eventually("the late sample accepted", || {
        (t.metric(r#"tidemark_late_samples_total{action="accepted"}"#) > late_before).then_some(())
    });
    t.eventually("the late sample in the hot index", || {
        (t.metric("tidemark_hot_samples") > sent2).then_some(())
    });
    let after = range_body(&t, probe, start2, end2, "");
    assert_ne!(
        before, after,
        "the late sample changed the probe's last steps"
    );
    assert!(after.contains(r#""999""#), "{after}");
    assert_eq!(after, range_body(&t, probe, start2, end2, "&nocache=1"));
    for q in &queries {
        assert_eq!(
            range_body(&t, q, start2, end2, ""),
            range_body(&t, q, start2, end2, "&nocache=1"),
            "after a late sample: {q}"
        );
    }

    // Each range step is the instant query at that time (3 steps of each query).
    for q in queries.iter().take(20) {
        let v: serde_json::Value =
            serde_json::from_str(&range_body(&t, q, start2, end2, "&nocache=1")).unwrap();
        for k in [0, 17, 30] {
            let at = start2 + k * STEP_MS;
            let inst = t.api(&format!(
                "/api/v1/query?query={}&time={}",
                enc(q),
                at / 1000
            ));
            let mut want: Vec<(String, String)> = inst["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{q} at {at}: {inst}"))
                .iter()
                .map(|s| {
                    (
                        s["metric"].to_string(),
                        s["value"][1].as_str().unwrap().into(),
                    )
                })
                .collect();
            let mut got: Vec<(String, String)> = v["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| {
                    let p = s["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p[0].as_f64() == Some((at / 1000) as f64))?;
                    Some((s["metric"].to_string(), p[1].as_str().unwrap().into()))
                })
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{q} at step {k}");
        }
    }
}
