//! Dashboards in Grafana's dashboard JSON model (the subset `schemas/dashboard.schema.json`
//! documents): the built-in ones (`assets/dashboards/`, in the binary) and the `*.json` files
//! of `[ui] dashboards`, read again on each request so that an edited or added file shows on
//! the next load. The UI renders them (`assets/dashboards.js`); this module lists and serves
//! them.
//!
//! - `GET /api/v1/dashboards`: `[{uid, title, tags, source, error?}]`. A file that is not a
//!   dashboard is listed with where and why (`line 12, column 5: expected ...`), and the
//!   others are served as usual.
//! - `GET /api/v1/dashboards/<uid>`: the dashboard's JSON (a Grafana export's `dashboard`
//!   object when the file is the export's envelope).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// The built-in dashboards: file name and JSON.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "tidemark.json",
        include_str!("assets/dashboards/tidemark.json"),
    ),
    ("hosts.json", include_str!("assets/dashboards/hosts.json")),
];

/// Where the dashboards come from.
#[derive(Clone, Debug, Default)]
pub struct Dashboards {
    /// `[ui] dashboards`.
    pub dir: Option<PathBuf>,
}

/// The subset of Grafana's model the UI renders, as a JSON Schema.
const SCHEMA: &str = include_str!("../../schemas/dashboard.schema.json");

/// One dashboard file, read and parsed (or why not).
struct Entry {
    uid: String,
    source: String,
    parsed: Result<Value, String>,
    /// Where the dashboard leaves the documented subset (`panels.3.gridPos.w: ...`): it is
    /// still served, and the UI renders what it can.
    warnings: Vec<String>,
}

/// `d` against [`SCHEMA`].
fn warnings(d: &Value) -> Vec<String> {
    static SCHEMA_JSON: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let schema = SCHEMA_JSON.get_or_init(|| serde_json::from_str(SCHEMA).unwrap_or(Value::Null));
    crate::jsonschema::validate(schema, d)
        .into_iter()
        .map(|v| format!("{}: {}", v.path, v.message))
        .collect()
}

/// A JSON error as a user reads it: where, then why.
fn json_error(e: &serde_json::Error) -> String {
    format!("line {}, column {}: {e}", e.line(), e.column())
}

/// A file's dashboard: the object itself, or the `dashboard` of Grafana's export envelope.
fn dashboard_of(v: Value) -> Result<Value, String> {
    let d = match v.get("dashboard") {
        Some(d) if d.is_object() => d.clone(),
        _ => v,
    };
    if !d.is_object() {
        return Err("not a JSON object".into());
    }
    if !d.get("panels").is_some_and(Value::is_array) {
        return Err("no \"panels\" array: not a Grafana dashboard (export it with \"Export > Save to file\")".into());
    }
    Ok(d)
}

fn entry(stem: &str, source: String, text: &str) -> Entry {
    let parsed = serde_json::from_str::<Value>(text)
        .map_err(|e| json_error(&e))
        .and_then(dashboard_of);
    let uid = parsed
        .as_ref()
        .ok()
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .unwrap_or(stem)
        .to_string();
    let warnings = parsed.as_ref().map(warnings).unwrap_or_default();
    Entry {
        uid,
        source,
        parsed,
        warnings,
    }
}

impl Dashboards {
    /// The built-in dashboards, then the directory's files by name.
    fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = BUILT_IN
            .iter()
            .map(|(name, text)| entry(name.trim_end_matches(".json"), "built-in".to_string(), text))
            .collect();
        if let Some(dir) = &self.dir {
            out.extend(read_dir(dir));
        }
        out
    }
}

fn read_dir(dir: &Path) -> Vec<Entry> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            return vec![Entry {
                uid: String::new(),
                source: dir.display().to_string(),
                parsed: Err(format!(
                    "cannot read the dashboards directory ([ui] dashboards): {e}"
                )),
                warnings: Vec::new(),
            }]
        }
    };
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read_to_string(&p) {
                Ok(text) => entry(&stem, p.display().to_string(), &text),
                Err(e) => Entry {
                    uid: stem,
                    source: p.display().to_string(),
                    parsed: Err(format!("cannot read: {e}")),
                    warnings: Vec::new(),
                },
            }
        })
        .collect()
}

/// The dashboard routes.
pub fn routes<S: Clone + Send + Sync + 'static>(d: Arc<Dashboards>) -> Router<S> {
    Router::new()
        .route("/api/v1/dashboards", get(list))
        .route("/api/v1/dashboards/{uid}", get(one))
        .with_state(d)
}

async fn list(State(d): State<Arc<Dashboards>>) -> Response {
    let entries = tokio::task::spawn_blocking(move || d.entries())
        .await
        .unwrap_or_default();
    let data: Vec<Value> = entries
        .iter()
        .map(|e| match &e.parsed {
            Ok(v) => json!({
                "uid": e.uid,
                "title": v.get("title").and_then(Value::as_str).unwrap_or(&e.uid),
                "tags": v.get("tags").cloned().unwrap_or(json!([])),
                "source": e.source,
                "warnings": e.warnings,
            }),
            Err(err) => {
                json!({"uid": e.uid, "title": e.uid, "tags": [], "source": e.source, "error": err})
            }
        })
        .collect();
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

async fn one(State(d): State<Arc<Dashboards>>, UrlPath(uid): UrlPath<String>) -> Response {
    let entries = tokio::task::spawn_blocking(move || d.entries())
        .await
        .unwrap_or_default();
    match entries.into_iter().find(|e| e.uid == uid) {
        Some(Entry { parsed: Ok(v), .. }) => {
            axum::Json(json!({"status": "success", "data": v})).into_response()
        }
        Some(Entry {
            parsed: Err(err),
            source,
            ..
        }) => crate::query::api::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_data",
            format!("dashboard {source}: {err}"),
        ),
        None => crate::query::api::error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dashboard with uid {uid:?} (GET /api/v1/dashboards lists them)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_dashboards_parse_and_bad_files_say_where_and_why() {
        let d = Dashboards::default();
        let e = d.entries();
        assert_eq!(e.len(), 2);
        for x in &e {
            assert!(x.parsed.is_ok(), "{}: {:?}", x.uid, x.parsed.as_ref().err());
            assert_eq!(x.warnings, Vec::<String>::new(), "{} in the subset", x.uid);
        }
        // The Grafana export the browser test renders is in the subset too.
        let export = entry(
            "fleet",
            "fixture".into(),
            include_str!("../../tests/fixtures/grafana-fleet-export.json"),
        );
        assert_eq!(export.warnings, Vec::<String>::new());
        let bad = entry(
            "bad",
            "bad".into(),
            r#"{"panels": [{"type": "stat", "gridPos": {"x": 0, "y": 0, "w": 0, "h": 4}}]}"#,
        );
        assert!(bad.parsed.is_ok(), "served with its warnings");
        assert_eq!(bad.warnings.len(), 1, "{:?}", bad.warnings);
        assert!(
            bad.warnings[0].contains("panels") && bad.warnings[0].contains("gridPos"),
            "{:?}",
            bad.warnings
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            "{\n  \"panels\": [\n    {,\n  ]\n}",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.json"), r#"{"title": "no panels"}"#).unwrap();
        std::fs::write(
            dir.path().join("c.json"),
            r#"{"dashboard": {"uid": "cu", "title": "Exported", "panels": []}, "meta": {}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a dashboard").unwrap();
        let e = read_dir(dir.path());
        assert_eq!(e.len(), 3, "only *.json");
        let err = e[0].parsed.as_ref().unwrap_err();
        assert!(err.starts_with("line 3, column 6:"), "{err}");
        assert!(e[1].parsed.as_ref().unwrap_err().contains("no \"panels\""));
        assert_eq!(e[2].uid, "cu", "the export envelope's dashboard");
        assert_eq!(e[2].parsed.as_ref().unwrap()["title"], "Exported");
    }
}
