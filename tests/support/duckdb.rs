//! Real DuckDB (PyPI `duckdb`, installed into `.venv-test/` by `.ci/test`), run as a separate
//! process: SQL in, rows out as JSON.

use std::path::PathBuf;
use std::process::Command;

/// The Python that has `duckdb`: `$TIDEMARK_TEST_PYTHON`, else `.venv-test/bin/python`.
pub fn python() -> PathBuf {
    std::env::var_os("TIDEMARK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python"))
}

/// Runs `sql` in an in-memory DuckDB and returns its rows (arrays of values).
pub fn query(sql: &str) -> Vec<Vec<serde_json::Value>> {
    let script = r#"
import duckdb, json, sys
rows = duckdb.sql(sys.argv[1]).fetchall()
print(json.dumps([[v if isinstance(v, (int, float, str, type(None))) else str(v) for v in r] for r in rows]))
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (run .ci/test to install duckdb)",
                python().display()
            )
        });
    assert!(
        out.status.success(),
        "duckdb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
