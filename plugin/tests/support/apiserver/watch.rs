//! The list/watch protocol of the served resources: a list answers every
//! object of the kind with the current resourceVersion; a watch streams the
//! changes after its `resourceVersion` (the backlog, then live ones) as
//! chunked ADDED/MODIFIED/DELETED lines until `timeoutSeconds`, or one
//! ERROR with an Expired status (410) when that version was compacted. Both
//! honour `fieldSelector`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use serde_json::{json, Value};

use super::{reply, status, Change, Kind, Shared};

/// The GET route of `kind`: a list, or a watch with `watch=true`.
pub(super) fn route(kind: Kind) -> MethodRouter<Shared> {
    get(
        move |State(s): State<Shared>, Query(q): Query<HashMap<String, String>>| async move {
            handle(s, kind, q)
        },
    )
}

fn selector_matches(sel: Option<&String>, obj: &Value) -> bool {
    let Some(sel) = sel else { return true };
    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (path, want) = term.split_once('=').unwrap_or((term, ""));
        let want = want.trim_start_matches('=');
        let mut v = obj;
        for part in path.split('.') {
            v = &v[part];
        }
        v.as_str().unwrap_or_default() == want
    })
}

fn handle(s: Shared, kind: Kind, q: HashMap<String, String>) -> Response {
    {
        let mut g = s.lock().expect("lock");
        if !g.installed.contains(&kind) {
            g.count(format!("{kind:?} absent"));
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    }
    let selector = q.get("fieldSelector").cloned();
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        watch(s, kind, q, selector)
    } else {
        list(s, kind, selector)
    }
}

fn list(s: Shared, kind: Kind, selector: Option<String>) -> Response {
    let mut g = s.lock().expect("lock");
    g.count(format!("{kind:?} list"));
    let items: Vec<Value> = g
        .objects
        .iter()
        .filter(|((k, _), o)| *k == kind && selector_matches(selector.as_ref(), o))
        .map(|(_, o)| {
            // like the real server: list items carry no apiVersion/kind
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let body = json!({
        "apiVersion": kind.api_version(),
        "kind": format!("{}List", kind.kind()),
        "metadata": {"resourceVersion": g.rv.to_string()},
        "items": items,
    });
    reply(StatusCode::OK, &body)
}

fn watch(s: Shared, kind: Kind, q: HashMap<String, String>, selector: Option<String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let (backlog, mut rx, gone) = {
        let mut g = s.lock().expect("lock");
        g.count(format!("{kind:?} watch"));
        let gone = from != 0 && from < g.compacted_below;
        let backlog: Vec<Change> = g
            .log
            .iter()
            .filter(|c| c.rv > from && c.kind == kind)
            .cloned()
            .collect();
        (backlog, g.tx.subscribe(), gone)
    };
    let stream = async_stream::stream! {
        if gone {
            let status = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
            yield Ok::<_, std::convert::Infallible>(format!("{status}\n"));
            return;
        }
        let mut last = from;
        for c in backlog {
            last = c.rv;
            if selector_matches(selector.as_ref(), &c.object) {
                yield Ok(format!("{}\n", json!({"type": c.ty, "object": c.object})));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            let c = tokio::select! {
                c = rx.recv() => c,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let Ok(c) = c else { break };
            if c.kind != kind || c.rv <= last {
                continue;
            }
            last = c.rv;
            if selector_matches(selector.as_ref(), &c.object) {
                yield Ok(format!("{}\n", json!({"type": c.ty, "object": c.object})));
            }
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
