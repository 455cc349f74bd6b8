//! The built-in UI in a real headless Chromium (Debian's `chromium` and `chromedriver`, over
//! WebDriver) against a running `tidemark up` with pushed data: the explorer draws a chart with
//! one line per series, a new time range queries again with a new step, drag-to-zoom narrows
//! the range, the table shows the instant result, completion offers metric names from the API,
//! a bad query shows its error, the targets and status pages show the process's own figures,
//! its flags and configuration; dashboards (a Grafana export, the built-in ones, the Hosts
//! dashboard over a real node_exporter); the alerts view with a silence made in it; a worker
//! process's status with its cluster; and no page logs a console error. Screenshots go to
//! `<target>/tmp/ui-screenshots/`.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::cluster::Cluster;
use support::receivers::HttpReceiver;
use support::targets::NodeExporter;
use support::{enc, fleet, now_ms, Tidemark};

fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

/// Selects `value` in the `<select id>` and fires `change`, as a user's pick does.
const PICK: &str = "const s = document.getElementById(arguments[0]); s.value = arguments[1]; \
                    s.dispatchEvent(new Event('change')); return true;";

/// Every panel of the dashboard page as `[id, type, state, series]`.
const PANELS: &str = "return [...document.querySelectorAll('#dash-grid .panel')].map(p => [p.dataset.panel, p.dataset.type, p.dataset.state, Number(p.dataset.series || 0)])";

/// Loads the dashboard at `url` until every panel is ready with data (rates need two scrapes),
/// for up to 30 s; returns the last [`PANELS`] reading, for the caller's assertion.
fn until_every_panel_has_data(b: &Browser, url: &str) -> serde_json::Value {
    let mut last = json!(null);
    for _ in 0..30 {
        b.goto(url);
        b.wait_for(
            "the dashboard",
            "return document.body.dataset.state === 'ready'",
        );
        last = b.js(PANELS, json!([]));
        let all = last
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p[2] == "ready" && p[3].as_u64().unwrap() > 0);
        if all {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    last
}

/// A `dashboards/` directory under `dir` holding the Grafana export fixture as `fleet.json`.
fn boards_with_the_export(dir: &std::path::Path) -> std::path::PathBuf {
    let boards = dir.join("dashboards");
    std::fs::create_dir_all(&boards).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/grafana-fleet-export.json"
        ),
        boards.join("fleet.json"),
    )
    .unwrap();
    boards
}

/// Neither the page's own error list nor the browser's console has an error.
fn assert_no_errors(b: &Browser) {
    assert_eq!(b.js("return window.tidemarkErrors", json!([])), json!([]));
    assert_eq!(
        b.severe_console(),
        Vec::<String>::new(),
        "no console errors"
    );
}

#[test]
fn the_explorer_charts_tables_completes_and_requeries_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    // The self-scrape on: the targets page lists it.
    let t = Tidemark::start(
        dir.path(),
        "[rules]\nenabled = false\n[scrape]\nself_scrape = true\n",
        2,
    );
    let end = now_ms() / 10_000 * 10_000;
    let body = fleet::lines(end - 40 * 60_000, end);
    let (status, resp) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
    // A metric with TYPE and HELP, in the Prometheus text format.
    let (status, resp) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &[],
        b"# HELP ui_help_total Requests the UI test pushed.\n# TYPE ui_help_total counter\nui_help_total 1\n",
    );
    assert!(status < 300, "{resp}");
    let hosts = fleet::HOSTS as i64;
    t.eventually("the fleet queryable", || {
        let v = t.api(&format!("/api/v1/query?query={}", enc("count(cpu_load)")));
        (v["result"][0]["value"][1] == json!(hosts.to_string())).then_some(())
    });

    let b = Browser::start();
    b.goto(&format!("{}/?expr=cpu_load&range=1h", t.url));
    b.wait_for(
        "the first chart",
        "return document.body.dataset.state === 'ready'",
    );
    assert_eq!(
        b.js("return document.body.dataset.series", json!([])),
        json!(hosts.to_string())
    );
    // uPlot's legend: the time row and one row per series; its canvas is drawn.
    assert_eq!(
        b.js(
            "return document.querySelectorAll('#chart .u-legend tr.u-series').length",
            json!([])
        ),
        json!(hosts + 1)
    );
    assert_eq!(
        b.js(
            "return !!document.querySelector('#chart canvas')",
            json!([])
        ),
        json!(true)
    );
    assert_eq!(
        b.js("return document.body.dataset.step", json!([])),
        json!("15"),
        "1 h at about 250 points"
    );
    // The query's stats: series, points, the samples it loaded (`stats=all`), time.
    let stats = b.js(
        "return document.getElementById('stats').textContent",
        json!([]),
    );
    assert!(
        stats
            .as_str()
            .unwrap()
            .starts_with(&format!("{hosts} series, "))
            && stats
                .as_str()
                .unwrap()
                .contains(" samples loaded, step 15s, "),
        "{stats}"
    );
    b.screenshot(&screenshots().join("explorer-graph.png"));

    // A longer range: a new query with a coarser step, and the URL holds it.
    b.js(PICK, json!(["range", "6h"]));
    b.wait_for(
        "the 6 h chart",
        "return document.body.dataset.state === 'ready' && document.body.dataset.step === '120'",
    );
    let url = b.js("return location.search", json!([]));
    assert!(url.as_str().unwrap().contains("range=6h"), "{url}");

    // Drag to zoom (uPlot's selection, as a mouse drag sets it): the selection becomes the
    // range, the query runs again at a finer step.
    b.js(
        "plot.setSelect({left: 200, width: 150, top: 0, height: 100}); return true;",
        json!([]),
    );
    b.wait_for(
        "the zoomed chart",
        "return document.body.dataset.state === 'ready' && document.body.dataset.step !== '120'",
    );
    let zoomed = b.js(
        "return new URLSearchParams(location.search).get('range')",
        json!([]),
    );
    assert_ne!(zoomed, json!("6h"), "the range follows the selection");

    // Stacked, then the table of the instant result.
    b.goto(&format!(
        "{}/?expr={}&range=1h&stacked=1",
        t.url,
        enc("sum by (region) (cpu_load)")
    ));
    b.wait_for(
        "the stacked chart",
        "return document.body.dataset.state === 'ready'",
    );
    assert_eq!(
        b.js("return document.body.dataset.series", json!([])),
        json!("3")
    );
    b.screenshot(&screenshots().join("explorer-stacked.png"));
    b.js(
        "document.querySelector('.tab[data-tab=table]').click(); return true;",
        json!([]),
    );
    b.wait_for(
        "the table",
        "return document.body.dataset.state === 'ready' && location.search.includes('tab=table')",
    );
    let rows = b.js(
        "return [...document.querySelectorAll('#table tbody tr')].map(r => r.cells[0].textContent).sort()",
        json!([]),
    );
    assert_eq!(
        rows,
        json!([r#"{region="ap"}"#, r#"{region="eu"}"#, r#"{region="us"}"#]),
        "one row per region"
    );
    b.screenshot(&screenshots().join("explorer-table.png"));

    // Completion: metric names from /api/v1/label/__name__/values, label values inside braces.
    b.js(
        "const ta = document.getElementById('expr'); ta.focus(); ta.value = 'http_req'; \
         ta.setSelectionRange(8, 8); ta.dispatchEvent(new Event('input')); return true;",
        json!([]),
    );
    b.wait_for(
        "metric-name completion",
        "return [...document.querySelectorAll('#complete li')].some(li => li.firstChild.textContent === 'http_requests_total')",
    );
    // With TYPE and HELP from /api/v1/metadata where the pushes carried them.
    b.js(
        "const ta = document.getElementById('expr'); ta.value = 'ui_help'; \
         ta.setSelectionRange(7, 7); ta.dispatchEvent(new Event('input')); return true;",
        json!([]),
    );
    let note = b.wait_for(
        "the metric's help in the completion",
        "const li = [...document.querySelectorAll('#complete li')].find(li => li.firstChild.textContent === 'ui_help_total'); \
         return li ? li.querySelector('small').textContent : null",
    );
    assert_eq!(note, json!("counter: Requests the UI test pushed."));
    b.js(
        "const ta = document.getElementById('expr'); ta.value = 'cpu_load{region=\"'; \
         ta.setSelectionRange(ta.value.length, ta.value.length); ta.dispatchEvent(new Event('input')); return true;",
        json!([]),
    );
    let values = b.wait_for(
        "label-value completion",
        "const v = [...document.querySelectorAll('#complete li')].map(li => li.firstChild.textContent); \
         return v.length ? v : null",
    );
    assert_eq!(values, json!(["ap", "eu", "us"]));
    assert_eq!(
        b.js("return window.tidemarkErrors", json!([])),
        json!([]),
        "no script errors"
    );
    assert_eq!(
        b.severe_console(),
        Vec::<String>::new(),
        "no console errors"
    );

    // A bad query: the API's error is shown, the page keeps working.
    b.goto(&format!(
        "{}/?expr={}&range=1h",
        t.url,
        enc("sum(rate(cpu_load[5m])")
    ));
    b.wait_for(
        "the error",
        "return document.body.dataset.state === 'error'",
    );
    let shown = b.js(
        "return document.getElementById('error').textContent",
        json!([]),
    );
    // Where it is: Prometheus's "line:col", the line with a caret, the cursor there.
    assert_eq!(
        shown,
        json!("invalid parameter \"query\": 1:23: parse error: unclosed left parenthesis\n\nsum(rate(cpu_load[5m])\n                      ^"),
    );
    assert_eq!(
        b.js(
            "return document.getElementById('expr').selectionStart",
            json!([])
        ),
        json!(22)
    );
    assert_eq!(b.js("return window.tidemarkErrors", json!([])), json!([]));
    // The 400 of the bad query is in the console: read it away.
    assert!(
        !b.severe_console().is_empty(),
        "the bad query's 400 was logged"
    );

    // Targets: the self-scrape (on by default) listed and up once scraped.
    b.goto(&format!("{}/targets", t.url));
    b.wait_for(
        "the self-scrape target up",
        "return document.querySelectorAll('#targets section[data-pool=tidemark] tr[data-health=up]').length === 1",
    );
    b.screenshot(&screenshots().join("targets.png"));

    // Status: the process's figures, and an ingest rate once a second reading came (5 s).
    b.goto(&format!("{}/status", t.url));
    b.wait_for(
        "an ingest rate",
        "const d = document.querySelector('[data-card=Ingest] dd[data-key=\"samples/s\"]'); \
         return !!d && d.textContent !== 'next refresh'",
    );
    let series = b.js(
        "return document.querySelector('[data-card=\"Hot index\"] dd[data-key=series]').textContent",
        json!([]),
    );
    let series: f64 = series.as_str().unwrap().replace(',', "").parse().unwrap();
    assert!(
        series >= (3 * fleet::HOSTS) as f64,
        "{series} hot series shown"
    );
    let log = b.js(
        "return document.querySelector('[data-card=\"Log and checkpoints\"] dd[data-key=\"log on disk\"]').textContent",
        json!([]),
    );
    let log = log.as_str().unwrap();
    assert!(
        (log.contains("KiB in") || log.contains("MiB in")) && log.ends_with(" segments"),
        "the pushed data is in the log: {log}"
    );
    let components = b.js(
        "return document.querySelectorAll('[data-card=\"Memory by component\"] dt').length",
        json!([]),
    );
    assert!(
        components.as_u64().unwrap() >= 3,
        "{components} memory components"
    );
    let top = b.js(
        "return [...document.querySelectorAll('#top-metrics tbody tr')].map(r => r.cells[0].textContent)",
        json!([]),
    );
    assert!(
        top.as_array().unwrap().iter().any(|n| n == "cpu_load"),
        "{top}"
    );
    // The flags as the process was started, and the configuration in effect: the test's
    // file with every default filled in.
    let flags = b.js(
        "return Object.fromEntries([...document.querySelectorAll('#flags tbody tr[data-flag]')].map(r => [r.dataset.flag, r.cells[1].textContent]))",
        json!([]),
    );
    assert_eq!(
        flags["listen"],
        json!(t.url.trim_start_matches("http://")),
        "{flags}"
    );
    assert!(
        flags["config"].as_str().unwrap().ends_with(".toml"),
        "{flags}"
    );
    assert_eq!(flags["insecure"], json!("false"), "{flags}");
    let config = b.js(
        "return document.getElementById('config').textContent",
        json!([]),
    );
    let config = config.as_str().unwrap();
    assert!(
        config.contains("[rules]\nenabled = false") && config.contains("[hot]\nretention = "),
        "{config}"
    );
    b.screenshot(&screenshots().join("status.png"));
    assert_no_errors(&b);
}

/// Pushes `cpu{host}` and `disk{host}` at `value` for `secs` seconds from `b`, then a clock
/// sample 10 s later that moves the watermark past them (rules run on event time).
fn push_hosts(t: &Tidemark, b: i64, secs: i64, cpu: f64, disk: f64) {
    let mut body = String::new();
    for s in 0..secs {
        for host in ["a", "b"] {
            let ts = b + s * 1000;
            body.push_str(&format!(
                "cpu{{host=\"{host}\"}} {cpu} {ts}\ndisk{{host=\"{host}\"}} {disk} {ts}\n"
            ));
        }
    }
    body.push_str(&format!("clock 1 {}\n", b + (secs + 10) * 1000));
    let (status, text) = t.post(
        "/api/v1/import/prometheus",
        "text/plain",
        &[("Authorization", "Bearer wtok")],
        body.as_bytes(),
    );
    assert!(status < 300, "{status} {text}");
}

#[test]
fn the_alerts_view_shows_groups_and_a_silence_made_in_it_mutes_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpReceiver::start();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: hosts\n  rules:\n  - alert: HighCpu\n    expr: cpu > 90\n    labels: {severity: warning}\n    annotations:\n      summary: '{{ $labels.host }} at {{ $value }}%'\n      description: 'CPU above 90 % on {{ $labels.host }}'\n  - alert: DiskFilling\n    expr: disk > 50\n    for: 1h\n  - alert: DiskFull\n    expr: disk > 95\n",
    )
    .unwrap();
    let routing = dir.path().join("alertmanager.yml");
    std::fs::write(
        &routing,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1s\nreceivers:\n- name: hook\n  webhook_configs: [{{url: '{}'}}]\n",
            hook.url("/hook")
        ),
    )
    .unwrap();
    let t = Tidemark::start(
        dir.path(),
        &format!(
            "[rules]\nfiles = [{:?}]\n\n[alerting]\nconfig = {:?}\n\n[auth]\ntokens = [{{ token = \"rtok\", role = \"read\" }}, {{ token = \"atok\", role = \"admin\" }}, {{ token = \"wtok\", role = \"write\" }}]\n",
            rules.display().to_string(),
            routing.display().to_string()
        ),
        2,
    );
    let b = (now_ms() - 3_600_000) / 60_000 * 60_000;
    push_hosts(&t, b, 5, 95.0, 60.0);
    let firing_notes = || {
        hook.at("/hook")
            .iter()
            .filter(|r| r.json().to_string().contains("HighCpu"))
            .count()
    };
    t.eventually("HighCpu notified twice (repeats every second)", || {
        (firing_notes() >= 2).then_some(())
    });

    let br = Browser::start();
    br.goto(&format!("{}/alerts", t.url));
    // The page itself needs no token; its API requests do: without one it says so.
    br.wait_for(
        "the error without a token",
        "return document.body.dataset.state === 'error'",
    );
    br.js(
        "document.getElementById('token').click(); return true;",
        json!([]),
    );
    br.answer_prompt("rtok");
    br.wait_for(
        "the alerts with a read token",
        "return document.body.dataset.state === 'ready' && document.body.dataset.firing === '2'",
    );
    // One group per alertname (the route's group_by), with the receiver; both hosts firing.
    let groups = br.js(
        "return [...document.querySelectorAll('#groups .group')].map(g => g.querySelector('header').textContent)",
        json!([]),
    );
    assert_eq!(groups, json!([r#"hookalertname="HighCpu""#]), "{groups}");
    let summary = br.js(
        "return [...document.querySelectorAll('#groups .alert .summary')].map(e => e.textContent).sort()",
        json!([]),
    );
    assert_eq!(summary, json!(["a at 95%", "b at 95%"]));
    let rule_link = br.js(
        "const a = document.querySelector('#groups .alert a'); \
         return a.pathname + ' ' + new URLSearchParams(a.search).get('expr')",
        json!([]),
    );
    assert_eq!(
        rule_link,
        json!("/ cpu > 90"),
        "the rule's expression in the explorer"
    );
    let pending = br.js(
        "return [...document.querySelectorAll('#pending .alert')].map(e => e.dataset.alertname)",
        json!([]),
    );
    assert_eq!(
        pending,
        json!(["DiskFilling", "DiskFilling"]),
        "for: 1h keeps it pending"
    );
    let rules_shown = br.js(
        "return document.querySelectorAll('#rules tbody tr').length",
        json!([]),
    );
    assert_eq!(rules_shown, json!(3));
    br.screenshot(&screenshots().join("alerts.png"));

    // A silence from the first alert's labels: the read token may not create it.
    br.js(
        "document.querySelector('#groups .alert button.silence').click(); \
         document.getElementById('sil-matchers').value = 'alertname=\"HighCpu\"'; \
         document.getElementById('sil-comment').value = 'maintenance'; \
         document.getElementById('silence-form').requestSubmit(); return true;",
        json!([]),
    );
    br.wait_for(
        "the admin-token error",
        "return document.getElementById('alerts-error').textContent.includes('admin token')",
    );
    br.js(
        "document.getElementById('token').click(); return true;",
        json!([]),
    );
    br.answer_prompt("atok");
    br.wait_for(
        "reloaded with the admin token",
        "return document.body.dataset.state === 'ready'",
    );
    br.js(
        "document.getElementById('silence-form').requestSubmit(); return true;",
        json!([]),
    );
    br.wait_for(
        "the silence listed and the alerts muted",
        "return document.body.dataset.state === 'ready' && document.body.dataset.firing === '0' \
         && document.querySelectorAll('#silences tr[data-state=active]').length === 1",
    );
    // Nothing more about HighCpu reaches the webhook once the silence is in (the repeats
    // stop); another alert created after it still does, so the webhook was listening.
    t.eventually("no HighCpu notification queued", || {
        let (_, body) = t.get_with("/api/v1/notifications", &[("Authorization", "Bearer rtok")]);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (!v["data"]["queued"].to_string().contains("HighCpu")).then_some(())
    });
    let before = firing_notes();
    push_hosts(&t, b + 60_000, 5, 95.0, 99.0);
    t.eventually("DiskFull notified after the silence", || {
        hook.at("/hook")
            .iter()
            .any(|r| r.json().to_string().contains("DiskFull"))
            .then_some(())
    });
    assert_eq!(
        firing_notes(),
        before,
        "HighCpu silenced: no notification after the silence"
    );
    br.js(
        "document.getElementById('alerts-refresh').click(); return true;",
        json!([]),
    );
    br.wait_for(
        "DiskFull firing beside the silenced HighCpu",
        "return document.body.dataset.state === 'ready' && document.body.dataset.firing === '2'",
    );
    let states = br.js(
        "return [...document.querySelectorAll('#groups .alert')].map(e => e.dataset.alertname + ':' + e.dataset.state).sort()",
        json!([]),
    );
    assert_eq!(
        states,
        json!([
            "DiskFull:firing",
            "DiskFull:firing",
            "HighCpu:suppressed",
            "HighCpu:suppressed"
        ])
    );
    br.screenshot(&screenshots().join("alerts-silenced.png"));
    assert_eq!(br.js("return window.tidemarkErrors", json!([])), json!([]));
}

#[test]
fn dashboards_from_grafana_json_render_every_panel_and_follow_their_variables() {
    let dir = tempfile::tempdir().unwrap();
    // A dashboard exported from Grafana 11, and a file with a syntax error.
    let boards = boards_with_the_export(dir.path());
    std::fs::write(boards.join("broken.json"), "{\"panels\": [}").unwrap();
    let t = Tidemark::start(
        dir.path(),
        &format!(
            "[scrape]\nself_scrape = true\nself_interval = \"1s\"\n[ui]\ndashboards = {:?}\n",
            boards.display().to_string()
        ),
        2,
    );
    let end = now_ms() / 10_000 * 10_000;
    let body = fleet::lines(end - 40 * 60_000, end);
    let (status, resp) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
    t.eventually("the fleet queryable", || {
        let v = t.api(&format!("/api/v1/query?query={}", enc("count(cpu_load)")));
        (v["result"][0]["value"][1] == json!(fleet::HOSTS.to_string())).then_some(())
    });

    let b = Browser::start();
    b.goto(&format!("{}/dashboards", t.url));
    b.wait_for("the list", "return document.body.dataset.state === 'ready'");
    let list = b.js(
        "return [...document.querySelectorAll('#dash-list tbody tr')].map(r => [r.dataset.uid, r.cells[3].textContent])",
        json!([]),
    );
    let list = list.as_array().unwrap();
    let uids: Vec<&str> = list.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(uids, ["tidemark", "hosts", "broken", "fleet-export"]);
    assert!(
        list[2][1]
            .as_str()
            .unwrap()
            .starts_with("line 1, column 13:"),
        "the broken file's error says where: {:?}",
        list[2]
    );

    // The export renders without edits: every supported panel with data, the pie chart as a
    // placeholder naming its type.
    b.goto(&format!("{}/d/fleet-export", t.url));
    b.wait_for(
        "the exported dashboard",
        "return document.body.dataset.state === 'ready'",
    );
    let got = b.js(PANELS, json!([]));
    assert_eq!(
        got,
        json!([
            ["1", "timeseries", "ready", 4],
            ["2", "stat", "ready", 1],
            ["3", "gauge", "ready", 1],
            ["4", "bargauge", "ready", 4],
            ["5", "table", "ready", 2],
            ["6", "piechart", "unsupported", 0]
        ]),
        "region ap (the first value): 4 hosts"
    );
    // The time series' overrides: h11 renamed and purple, h8 (by a regex) hidden from the chart.
    let legend = b.js(
        "return [...document.querySelectorAll('[data-panel=\"1\"] .u-legend tr.u-series')].slice(1).map(r => [r.querySelector('.u-label').textContent, r.querySelector('.u-marker').style.borderColor])",
        json!([]),
    );
    let legend = legend.as_array().unwrap();
    let names: Vec<&str> = legend.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(names, ["host eleven", "h2", "h5"], "{legend:?}");
    assert_eq!(
        legend[0][1],
        json!("rgb(124, 58, 237)"),
        "purple: {legend:?}"
    );
    // The table's value mappings (a value, and a range open at the top), as Grafana writes them.
    let cells = b.js(
        "return [...document.querySelectorAll('[data-panel=\"5\"] td.value')].map(c => c.textContent)",
        json!([]),
    );
    assert_eq!(
        cells,
        json!(["two hosts", "two hosts"]),
        "2 hosts per env in ap"
    );
    // The other kinds, through the page's own function: special values, an open range, no
    // match.
    let mapped = b.js(
        "const m = [{type: 'special', options: {match: 'null', result: {text: 'no data'}}}, \
                    {type: 'special', options: {match: 'nan', result: {text: 'not a number', color: 'red'}}}, \
                    {type: 'range', options: {from: null, to: 0, result: {text: 'down'}}}]; \
         return [mapValue(null, m), mapValue(NaN, m), mapValue(-3, m), mapValue(1, m), shown(NaN, {mappings: m}).col]",
        json!([]),
    );
    assert_eq!(
        mapped,
        json!([{"text": "no data"}, {"text": "not a number", "color": "red"}, {"text": "down"}, null, "#dc2626"])
    );
    let placeholder = b.js(
        "return document.querySelector('[data-panel=\"6\"] .placeholder').textContent",
        json!([]),
    );
    assert!(
        placeholder.as_str().unwrap().contains("\"piechart\""),
        "{placeholder}"
    );
    let row = b.js(
        "return document.querySelector('.dash-row').textContent",
        json!([]),
    );
    assert_eq!(row, json!("▾ Fleet in ap"), "a row title with its variable");
    b.screenshot(&screenshots().join("dashboard-export.png"));

    // A variable change queries again with the new value, and the URL keeps it.
    b.js(PICK, json!(["var-region", "us"]));
    b.wait_for(
        "the panels for region us",
        "return document.body.dataset.state === 'ready' && \
         document.querySelector('[data-panel=\"1\"]').dataset.query.includes('region=\"us\"')",
    );
    let url = b.js("return location.search", json!([]));
    assert!(url.as_str().unwrap().contains("var-region=us"), "{url}");
    let query = b.js(
        "return document.querySelector('[data-panel=\"4\"]').dataset.query",
        json!([]),
    );
    assert_eq!(
        query,
        json!(r#"max_over_time(mem_used_bytes{region="us"}[5m])"#),
        "$window from the interval variable"
    );

    // Drag-to-zoom on a panel (uPlot's selection, as a mouse drag sets it): the selection
    // becomes the dashboard's range and end, in the picker and the URL.
    b.js(
        "document.querySelector('[data-panel=\"1\"]').plot.setSelect({left: 100, width: 120, top: 0, height: 50}); return true",
        json!([]),
    );
    let zoomed = b.wait_for(
        "the zoomed range",
        "const p = new URLSearchParams(location.search); \
         return document.body.dataset.state === 'ready' && p.get('end') ? [p.get('range'), p.get('end'), document.getElementById('dash-range').value] : null",
    );
    assert_ne!(zoomed[0], json!("1h"), "{zoomed}");
    assert_eq!(
        zoomed[0], zoomed[2],
        "the picker shows the zoomed range: {zoomed}"
    );
    // Back to a range from the picker: it ends now again.
    b.js(PICK, json!(["dash-range", "1h"]));
    let url = b.js("return location.search", json!([]));
    assert!(!url.as_str().unwrap().contains("end="), "{url}");

    // The built-in Tidemark dashboard over the self-scrape: every panel with data once two
    // scrapes are in (its rates need them).
    let last = until_every_panel_has_data(&b, &format!("{}/d/tidemark", t.url));
    let n = last.as_array().unwrap().len();
    assert!(
        n >= 10
            && last
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p[2] == "ready" && p[3].as_u64().unwrap() > 0),
        "every panel of the Tidemark dashboard with data: {last}"
    );
    b.screenshot(&screenshots().join("dashboard-tidemark.png"));
    assert_no_errors(&b);
}

/// A worker process's status page: every process of the cluster with its readiness (a peer
/// killed shows as not ready, with the reason), its jobs, flags and configuration; and the
/// dashboards of its own `[ui] dashboards` directory.
#[test]
fn a_worker_process_shows_its_cluster_flags_config_and_own_dashboards() {
    let dir = tempfile::tempdir().unwrap();
    let boards = boards_with_the_export(dir.path());
    // No broker: the processes serve their APIs and the UI without a job.
    let mut c = Cluster::start_with_config(
        &dir.path().join("cluster"),
        2,
        1,
        "127.0.0.1:9",
        Some(&format!(
            "[ui]\ndashboards = {:?}\n[query]\nmax_series = 12345\n",
            boards.display().to_string()
        )),
    );
    let b = Browser::start();
    b.goto(&format!("{}/status", c.urls[0]));
    b.wait_for(
        "both processes ready",
        "return document.querySelectorAll('#cluster-processes tr[data-ready=true]').length === 2",
    );
    assert_eq!(
        b.js(
            "return document.getElementById('cluster').hidden",
            json!([])
        ),
        json!(false)
    );
    assert_eq!(
        b.js(
            "return document.querySelector('#cluster-jobs tbody').textContent",
            json!([])
        ),
        json!("No jobs: submit one with tidemark submit.")
    );
    let flags = b.js(
        "return Object.fromEntries([...document.querySelectorAll('#flags tbody tr[data-flag]')].map(r => [r.dataset.flag, r.cells[1].textContent]))",
        json!([]),
    );
    assert_eq!(flags["process"], json!("0"), "{flags}");
    assert_eq!(flags["processes"], json!("2"), "{flags}");
    let config = b.js(
        "return document.getElementById('config').textContent",
        json!([]),
    );
    assert!(
        config.as_str().unwrap().contains("max_series = 12345"),
        "{config}"
    );
    assert_eq!(
        b.js("return document.querySelector('[data-card=Build] dd[data-key=process]').textContent.split(' ')[0]", json!([])),
        json!("worker")
    );
    assert_eq!(
        b.js("return document.querySelector('[data-card=Build] dd[data-key=\"worker threads\"]').textContent", json!([])),
        json!("1"),
        "--workers 1"
    );
    let rss = b.js("return document.querySelector('[data-card=\"Hot index\"] dd[data-key=\"resident memory\"]').textContent", json!([]));
    assert!(rss.as_str().unwrap().ends_with("MiB"), "{rss}");
    b.screenshot(&screenshots().join("worker-status.png"));

    // The worker's own dashboards directory, beside the built-in ones.
    b.goto(&format!("{}/dashboards", c.urls[0]));
    let titles = b.wait_for(
        "the dashboard list",
        "const l = [...document.querySelectorAll('#dash-list tbody tr td:first-child')].map(a => a.textContent); \
         return l.length >= 3 ? l : null",
    );
    let titles = titles.to_string();
    assert!(
        titles.contains("Fleet (exported from Grafana)")
            && titles.contains("Tidemark")
            && titles.contains("Hosts"),
        "{titles}"
    );
    assert_no_errors(&b);

    // Process 1 hangs (SIGSTOP: a killed peer makes process 0 exit within seconds, by
    // design): process 0's page says it is not ready and why, and the jobs list, which needs
    // every process, says it cannot be made instead of hanging.
    let pid = c.procs[1].as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    b.goto(&format!("{}/status", c.urls[0]));
    let why = b.wait_for(
        "process 1 not ready",
        "const r = document.querySelector('#cluster-processes tr[data-process=\"1\"][data-ready=false]'); \
         return r ? r.cells[3].textContent : null",
    );
    assert!(why.as_str().unwrap().contains("/-/ready"), "{why}");
    let jobs = b.wait_for(
        "the jobs list's error",
        "const t = document.querySelector('#cluster-jobs tbody td.error-text'); return t ? t.textContent : null",
    );
    assert!(jobs.as_str().unwrap().contains("did not answer"), "{jobs}");
    // Its 503 is logged by the browser: read away.
    let logged = b.severe_console();
    assert!(
        !logged.is_empty()
            && logged
                .iter()
                .all(|l| l.contains("/api/v1/jobs") && l.contains("503")),
        "{logged:?}"
    );
    signal("-CONT");
    b.goto(&format!("{}/status", c.urls[0]));
    b.wait_for(
        "both processes ready again",
        "return document.querySelectorAll('#cluster-processes tr[data-ready=true]').length === 2",
    );
    c.kill(1);
    c.kill(0);
}

/// The built-in Hosts dashboard over a real node_exporter (Debian's), scraped every second:
/// every panel renders with data under node_exporter's own metric names, and the host
/// variable lists the exporter's instance.
#[test]
fn the_hosts_dashboard_shows_a_real_node_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let ne = NodeExporter::start();
    let scrape = dir.path().join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n",
            ne.addr
        ),
    )
    .unwrap();
    let t = Tidemark::start(
        dir.path(),
        &format!(
            "[scrape]\nconfig = {:?}\nself_scrape = false\n[rules]\nenabled = false\n",
            scrape.display().to_string()
        ),
        2,
    );
    // Ten scrapes: the rates' lines have points to draw in the screenshot.
    t.eventually("node_exporter scraped ten times", || {
        let v = t.api(&format!(
            "/api/v1/query?query={}",
            enc("count_over_time(node_uname_info[1m])")
        ));
        let n: f64 = v["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 10.0).then_some(())
    });
    let b = Browser::start();
    let last = until_every_panel_has_data(&b, &format!("{}/d/hosts?range=5m", t.url));
    let rows = last.as_array().unwrap();
    assert!(
        rows.len() >= 8
            && rows
                .iter()
                .all(|p| p[2] == "ready" && p[3].as_u64().unwrap() > 0),
        "every panel of the Hosts dashboard with data: {last}"
    );
    // Units as Grafana writes them, small values and axis ticks included.
    assert_eq!(
        b.js(
            "return [formatUnit(0.004, 'short'), formatUnit(2.9999999, 'none'), formatUnit(1536, 'bytes'), \
             formatUnit(0.5, 'percentunit'), formatUnit(0.02, 'short', tickDecimals([0, 0.02, 0.04])), \
             tickDecimals([0, 0.25, 0.5]), tickDecimals([0, 1e9, 2e9])]",
            json!([])
        ),
        json!(["0.004", "3.00", "1.50 KiB", "50%", "0.02", 2, 1])
    );
    let hosts = b.js(
        "return [...document.querySelectorAll('#var-instance option')].map(o => o.value)",
        json!([]),
    );
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == ne.addr.as_str()),
        "the host variable lists the exporter: {hosts}"
    );
    // The host variable (multi-value) through its checkbox dropdown: All off, the exporter on.
    b.js(
        "const d = document.querySelector('details.multi[data-var=instance]'); d.open = true; \
         [...d.querySelectorAll('input')].find(b => b.value === arguments[0]).click(); return true",
        json!([ne.addr]),
    );
    let escaped = ne.addr.replace('.', "\\\\.");
    let q = b.wait_for(
        "the panels for the chosen host",
        "const p = document.querySelector('[data-panel=\"1\"]'); \
         return document.body.dataset.state === 'ready' && p.dataset.state === 'ready' && !p.dataset.query.includes('.*') ? p.dataset.query : null",
    );
    assert!(
        q.as_str()
            .unwrap()
            .contains(&format!("instance=~\"{escaped}\"")),
        "{q} {escaped}"
    );
    assert_eq!(
        b.js(
            "return document.querySelector('details.multi[data-var=instance] summary').textContent",
            json!([])
        ),
        json!(ne.addr)
    );
    let url = b.js("return location.search", json!([]));
    assert!(
        url.as_str().unwrap().contains("var-instance=127.0.0.1"),
        "{url}"
    );
    b.js(
        "document.querySelector('details.multi').open = false; return true",
        json!([]),
    );
    b.screenshot(&screenshots().join("dashboard-hosts.png"));
    assert_no_errors(&b);
}
