//! The async event capability: every kive alert also goes into Falco's
//! `syscall` source as an async event named `kive_alert`, stamped with the
//! accessing thread's id, so that `source: syscall` rules can use the
//! `kive.*` fields next to `proc.*`, `container.*` and `k8s.*`.
//!
//! Opt-in (`asyncEvents: true` in `init_config`). Falco creates one plugin
//! object per inspector: the one of the `kive` inspector runs the capture,
//! the one of the `syscall` inspector gets the async handler. The handlers
//! are therefore kept in a process-wide list ([`SINKS`]) that the capture
//! emits into; `stop_async` takes its handler out again. Falco starts async
//! events on the `kive` inspector's object too, whose handler refuses
//! events with a thread ("can have no thread associated with open event
//! source 'kive'"): a handler that refuses an event is dropped from the
//! list (logged once), the others keep receiving.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use falco_plugin::async_event::{AsyncEvent, AsyncEventPlugin, AsyncHandler};
use falco_plugin::event::events::{Event, EventMetadata};

use super::payload::{Decoded, SyscallPayload};
use super::KivePlugin;
use crate::sync::lock;

/// The name of kive's async events (`evt.asynctype` in rules).
pub const ASYNC_EVENT_NAME: &CStr = c"kive_alert";

/// The handlers of the plugin objects whose async capture runs.
static SINKS: Mutex<Vec<(u64, AsyncHandler)>> = Mutex::new(Vec::new());
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

fn sinks() -> std::sync::MutexGuard<'static, Vec<(u64, AsyncHandler)>> {
    lock(&SINKS)
}

/// Adds a handler; returns the id that [`unregister`] takes.
pub fn register(handler: AsyncHandler) -> u64 {
    let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
    sinks().push((id, handler));
    id
}

/// Removes a handler (no call of it after this returns).
pub fn unregister(id: u64) {
    sinks().retain(|(i, _)| *i != id);
}

/// Whether any async capture is listening.
pub fn listening() -> bool {
    !sinks().is_empty()
}

/// The async event of one encoded alert: the accessing thread's host id as
/// the event's thread id, the alert's time as its timestamp (0: the
/// framework stamps it).
pub fn event_for(payload: &[u8], ts: u64) -> Event<AsyncEvent<'_, SyscallPayload<'_>>> {
    let tid = Decoded::decode(payload)
        .ok()
        .and_then(|d| d.numbers().pid)
        .map(i64::from)
        .unwrap_or(-1);
    Event {
        metadata: EventMetadata {
            ts: if ts == 0 { u64::MAX } else { ts },
            tid,
        },
        params: AsyncEvent {
            plugin_id: 0, // set by the framework
            name: ASYNC_EVENT_NAME,
            data: SyscallPayload(payload),
        },
    }
}

/// Emits one encoded alert to every listening handler; returns how many
/// accepted it. A handler that refuses is dropped (logged), never fatal to
/// the capture.
pub fn emit(payload: &[u8], ts: u64) -> usize {
    let mut sinks = sinks();
    let mut n = 0;
    sinks.retain(|(_, h)| match h.emit(event_for(payload, ts)) {
        Ok(()) => {
            n += 1;
            true
        }
        Err(e) => {
            log::info!("kive: async events: an inspector refused them, not sending it more: {e:#}");
            false
        }
    });
    n
}

impl AsyncEventPlugin for KivePlugin {
    const ASYNC_EVENTS: &'static [&'static str] = &["kive_alert"];
    const EVENT_SOURCES: &'static [&'static str] = &["syscall"];

    fn start_async(&mut self, handler: AsyncHandler) -> Result<(), anyhow::Error> {
        if let Some(id) = self.async_sink.take() {
            unregister(id);
        }
        if self.config.async_events {
            self.async_sink = Some(register(handler));
            log::info!("kive: async events: alerts also go into the syscall source");
        }
        Ok(())
    }

    fn stop_async(&mut self) -> Result<(), anyhow::Error> {
        if let Some(id) = self.async_sink.take() {
            unregister(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_name_is_the_emitted_name() {
        assert_eq!(
            KivePlugin::ASYNC_EVENTS,
            &[ASYNC_EVENT_NAME.to_str().expect("ascii")]
        );
    }
}
