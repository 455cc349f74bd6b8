//! Silences, as Alertmanager's v2 API has them: matchers, a time span, author and comment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::config::{LabelMatcher, MatchType};
use crate::time::rfc3339;

/// A matcher as the API writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl ApiMatcher {
    pub fn compile(&self) -> Result<LabelMatcher, String> {
        let op = match (self.is_regex, self.is_equal) {
            (false, true) => MatchType::Eq,
            (false, false) => MatchType::Ne,
            (true, true) => MatchType::Re,
            (true, false) => MatchType::Nre,
        };
        LabelMatcher::new(&self.name, op, &self.value)
    }
}

/// One silence. Times are wall-clock ms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    pub comment: String,
}

/// `pending`, `active` or `expired` at `now`.
pub fn state(s: &Silence, now: i64) -> &'static str {
    if now < s.starts_at {
        "pending"
    } else if now < s.ends_at {
        "active"
    } else {
        "expired"
    }
}

impl Silence {
    /// Whether it mutes `labels` at `now`.
    pub fn mutes(&self, labels: &BTreeMap<String, String>, now: i64) -> bool {
        state(self, now) == "active"
            && self
                .matchers
                .iter()
                .all(|m| m.compile().is_ok_and(|c| c.matches(labels)))
    }

    /// The v2 API's `gettableSilence`.
    pub fn to_json(&self, now: i64) -> Json {
        json!({
            "id": self.id,
            "status": {"state": state(self, now)},
            "updatedAt": rfc3339(self.updated_at),
            "matchers": self.matchers,
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "createdBy": self.created_by,
            "comment": self.comment,
        })
    }
}

/// The v2 API's `postableSilence`.
#[derive(Clone, Debug, Deserialize)]
pub struct PostableSilence {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<ApiMatcher>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    pub comment: String,
}

impl PostableSilence {
    /// Checks it and turns it into a silence with `id`; errors say which field is wrong.
    pub fn validate(self, id: String, now: i64) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err("matchers: at least one matcher is needed".into());
        }
        let mut all_empty = true;
        for (i, m) in self.matchers.iter().enumerate() {
            m.compile().map_err(|e| format!("matchers[{i}]: {e}"))?;
            if !crate::model::is_valid_label_name(&m.name) {
                return Err(format!("matchers[{i}]: invalid label name {:?}", m.name));
            }
            all_empty &= m.compile().is_ok_and(|c| c.matches(&BTreeMap::new()));
        }
        if all_empty {
            return Err("matchers: at least one matcher must not match the empty string (the silence would mute every alert)".into());
        }
        let t =
            |s: &str, f: &str| crate::query::api::parse_time(s).map_err(|e| format!("{f}: {e}"));
        let starts_at = t(&self.starts_at, "startsAt")?;
        let ends_at = t(&self.ends_at, "endsAt")?;
        if ends_at <= starts_at {
            return Err("endsAt must be after startsAt".into());
        }
        if ends_at < now {
            return Err("endsAt is in the past".into());
        }
        if self.created_by.trim().is_empty() {
            return Err("createdBy must not be empty".into());
        }
        if self.comment.trim().is_empty() {
            return Err("comment must not be empty".into());
        }
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at: starts_at.max(now.min(starts_at)),
            ends_at,
            updated_at: now,
            created_by: self.created_by,
            comment: self.comment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_muting() {
        let p = |m: &str, s: &str, e: &str| PostableSilence {
            id: None,
            matchers: serde_json::from_str(m).unwrap(),
            starts_at: s.into(),
            ends_at: e.into(),
            created_by: "me".into(),
            comment: "maintenance".into(),
        };
        let now = 1_700_000_000_000;
        let s = p(
            r#"[{"name":"instance","value":"web-.*","isRegex":true}]"#,
            "2023-11-14T22:00:00Z",
            "2023-11-14T23:00:00Z",
        )
        .validate("a".into(), now)
        .unwrap();
        let l = |i: &str| [("instance".to_string(), i.to_string())].into();
        assert!(s.mutes(&l("web-1"), now));
        assert!(!s.mutes(&l("db-1"), now));
        assert!(!s.mutes(&l("web-1"), s.ends_at), "expired");
        let e = p(
            r#"[{"name":"x","value":".*","isRegex":true}]"#,
            "2023-11-14T22:00:00Z",
            "2023-11-14T23:00:00Z",
        )
        .validate("b".into(), now)
        .unwrap_err();
        assert!(e.contains("every alert"), "{e}");
        let e = p(
            r#"[{"name":"x","value":"y","isRegex":false}]"#,
            "2023-11-14T23:00:00Z",
            "2023-11-14T22:00:00Z",
        )
        .validate("c".into(), now)
        .unwrap_err();
        assert!(e.contains("endsAt must be after"), "{e}");
    }
}
