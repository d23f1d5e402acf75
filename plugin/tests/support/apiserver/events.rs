//! events.k8s.io/v1 Events: create (POST) and JSON merge patch (PATCH), with
//! the checks the real server makes, 409 on a second create of one name, and
//! 403 on every write once [`ApiServer::forbid_events`] is set (as without
//! the RBAC rule).
//!
//! [`ApiServer::forbid_events`]: super::ApiServer::forbid_events

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{reply, status, Inner, Shared};

/// Why a write was refused: answered as a `Status` ([`status`]).
struct Refused(StatusCode, &'static str, String);

impl Refused {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self(code, reason, message.into())
    }
}

/// The answer to a write: the stored Event, or the refusal.
fn answer(written: Result<(StatusCode, Value), Refused>) -> Response {
    match written {
        Ok((code, e)) => reply(code, &e),
        Err(Refused(code, reason, message)) => status(code, reason, &message),
    }
}

/// Counts an Event write (`what`: "create" or "patch") and refuses it
/// while Event writes are forbidden.
fn admit(g: &mut Inner, what: &str) -> Result<(), Refused> {
    g.count(format!("Event {what}"));
    if g.events_forbidden {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "events.events.k8s.io is forbidden",
        ));
    }
    Ok(())
}

fn parse(body: &str) -> Result<Value, Refused> {
    serde_json::from_str(body)
        .map_err(|_| Refused::new(StatusCode::BAD_REQUEST, "BadRequest", "not JSON"))
}

/// What the real server checks of an events.k8s.io/v1 Event.
fn invalid_event(ns: &str, e: &Value) -> Option<String> {
    let meta = &e["metadata"];
    if meta["namespace"].as_str().is_some_and(|n| n != ns) {
        return Some(
            "the namespace of the object does not match the namespace on the request".into(),
        );
    }
    for (field, v) in [
        ("metadata.name", &meta["name"]),
        ("eventTime", &e["eventTime"]),
        ("reportingController", &e["reportingController"]),
        ("reportingInstance", &e["reportingInstance"]),
        ("reason", &e["reason"]),
        ("action", &e["action"]),
        ("type", &e["type"]),
    ] {
        if v.as_str().is_none_or(str::is_empty) {
            return Some(format!("{field}: Required value"));
        }
    }
    if !matches!(e["type"].as_str(), Some("Normal" | "Warning")) {
        return Some("type: Unsupported value".into());
    }
    if e["note"].as_str().is_some_and(|n| n.len() > 1024) {
        return Some("note: Too long: may not be more than 1024 bytes".into());
    }
    if !e["series"].is_null() && e["series"]["count"].as_i64().is_none_or(|c| c < 2) {
        return Some("series.count: Invalid value: should be at least 2".into());
    }
    None
}

fn check(ns: &str, e: &Value) -> Result<(), Refused> {
    match invalid_event(ns, e) {
        Some(why) => Err(Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            why,
        )),
        None => Ok(()),
    }
}

pub(super) async fn create(
    State(s): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    body: String,
) -> Response {
    let mut g = s.lock().expect("lock");
    answer(created(&mut g, ns, &body))
}

fn created(g: &mut Inner, ns: String, body: &str) -> Result<(StatusCode, Value), Refused> {
    admit(g, "create")?;
    let mut e = parse(body)?;
    check(&ns, &e)?;
    let name = e["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if g.events.contains_key(&(ns.clone(), name.clone())) {
        return Err(Refused::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("events {name:?} already exists"),
        ));
    }
    g.rv += 1;
    e["metadata"]["namespace"] = json!(ns);
    e["metadata"]["resourceVersion"] = json!(g.rv.to_string());
    e["metadata"]["uid"] = json!(format!("event-{}", g.rv));
    g.events.insert((ns, name), e.clone());
    Ok((StatusCode::CREATED, e))
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub(super) async fn patch(
    State(s): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut g = s.lock().expect("lock");
    answer(patched(&mut g, &ns, &name, &headers, &body))
}

fn patched(
    g: &mut Inner,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &str,
) -> Result<(StatusCode, Value), Refused> {
    admit(g, "patch")?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct != "application/merge-patch+json" {
        return Err(Refused::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            ct,
        ));
    }
    let p = parse(body)?;
    g.rv += 1;
    let rv = g.rv;
    let Some(e) = g.events.get_mut(&(ns.to_string(), name.to_string())) else {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("events {name:?} not found"),
        ));
    };
    let mut patched = e.clone();
    merge(&mut patched, &p);
    check(ns, &patched)?;
    patched["metadata"]["resourceVersion"] = json!(rv.to_string());
    *e = patched.clone();
    Ok((StatusCode::OK, patched))
}
