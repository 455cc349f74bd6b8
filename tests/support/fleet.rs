//! A small fleet for differential query tests: line protocol over event times, and random
//! PromQL queries from a grammar over its metrics.

use super::Rng;

/// Hosts of the fleet.
pub const HOSTS: usize = 12;

/// The fleet's lines for event times `[from, to)` at 10 s: `cpu_load` (a gauge),
/// `http_requests_total` (a counter, a reset for one host) and `mem_used_bytes`.
pub fn lines(from: i64, to: i64) -> String {
    let mut out = String::new();
    let mut t = from;
    while t < to {
        let i = (t / 10_000) as f64;
        for h in 0..HOSTS {
            let (region, env) = (["eu", "us", "ap"][h % 3], ["prod", "dev"][h % 2]);
            let tags = format!("host=h{h},region={region},env={env}");
            let load = ((i * 0.37 + h as f64).sin() * 2.0 + 3.0 * (h % 4) as f64).abs();
            let reqs = if h == 5 && t % 1_800_000 < 10_000 {
                0.0
            } else {
                (i * (h + 1) as f64).floor() + (t % 1_800_000) as f64 / 1000.0
            };
            out.push_str(&format!("cpu,{tags} load={load:.3} {t}\n"));
            out.push_str(&format!("http_requests,{tags} total={reqs} {t}\n"));
            out.push_str(&format!(
                "mem,{tags} used_bytes={} {t}\n",
                (1 << 30) + h as i64 * 4096 * (i as i64 % 97)
            ));
        }
        t += 10_000;
    }
    out
}

/// A random query over the fleet's metrics.
pub fn query(r: &mut Rng, depth: u32) -> String {
    let metric = ["cpu_load", "http_requests_total", "mem_used_bytes"][r.below(3) as usize];
    let matcher = [
        "",
        r#"{env="prod"}"#,
        r#"{region=~"eu|us"}"#,
        r#"{host!="h3"}"#,
    ][r.below(4) as usize];
    let sel = format!("{metric}{matcher}");
    let range = ["1m", "2m", "5m", "10m"][r.below(4) as usize];
    let by = ["", " by (region)", " by (env, region)", " without (host)"][r.below(4) as usize];
    let leaf = match r.below(9) {
        0 => sel,
        1 => format!("rate({sel}[{range}])"),
        2 => format!("increase({sel}[{range}])"),
        3 => format!("max_over_time({sel}[{range}])"),
        4 => format!("avg_over_time({sel}[{range}])"),
        5 => format!("deriv({sel}[{range}])"),
        6 => format!("{sel} offset 3m"),
        7 => format!("changes({sel}[{range}])"),
        _ => format!("quantile_over_time(0.9, {sel}[{range}])"),
    };
    if depth == 0 {
        return leaf;
    }
    match r.below(7) {
        0 => format!("sum{by} ({})", query(r, depth - 1)),
        1 => format!("avg{by} ({})", query(r, depth - 1)),
        2 => format!("topk(3, {})", query(r, depth - 1)),
        3 => format!("quantile{by} (0.5, {})", query(r, depth - 1)),
        4 => format!("{} * 2 + 1", query(r, depth - 1)),
        5 => format!("count{by} ({} > 1)", query(r, depth - 1)),
        _ => format!("max_over_time(({leaf})[5m:1m])"),
    }
}
