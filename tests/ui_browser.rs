//! The built-in UI in a real headless Chromium (Debian's `chromium` and `chromedriver`, over
//! WebDriver) against a running `tidemark up` with pushed data: the explorer draws a chart with
//! one line per series, a new time range queries again with a new step, drag-to-zoom narrows
//! the range, the table shows the instant result, completion offers metric names from the API,
//! a bad query shows its error, and no page logs a console error. Screenshots go to
//! `<target>/tmp/ui-screenshots/`.

mod support;

use serde_json::json;
use support::browser::Browser;
use support::{enc, fleet, now_ms, Tidemark};

fn screenshots() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

/// Selects `value` in the `<select id>` and fires `change`, as a user's pick does.
const PICK: &str = "const s = document.getElementById(arguments[0]); s.value = arguments[1]; \
                    s.dispatchEvent(new Event('change')); return true;";

#[test]
fn the_explorer_charts_tables_completes_and_requeries_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tidemark::start(dir.path(), "[rules]\nenabled = false\n", 2);
    let end = now_ms() / 10_000 * 10_000;
    let body = fleet::lines(end - 40 * 60_000, end);
    let (status, resp) = t.post("/write?precision=ms", "text/plain", &[], body.as_bytes());
    assert_eq!(status, 204, "{resp}");
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
    assert!(shown.as_str().unwrap().contains("parenthesis"), "{shown}");
    assert_eq!(b.js("return window.tidemarkErrors", json!([])), json!([]));
}
