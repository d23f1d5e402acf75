//! The payload as Falco event data: kive's own plugin events (source
//! `kive`) and the async events kive injects into the `syscall` source.

use std::io::Write;

use falco_plugin::async_event::AsyncEvent;
use falco_plugin::event::fields::{FromBytes, FromBytesError, ToBytes};
use falco_plugin::event::EventSource;
use falco_plugin::source::PluginEvent;

/// A payload type: the whole event parameter, borrowed from the event
/// buffer, as event data of one source.
macro_rules! raw_payload {
    ($(#[$doc:meta])* $name:ident, $source:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8]);

        impl EventSource for $name<'_> {
            const SOURCE: Option<&'static str> = Some($source);
        }

        impl<'a> FromBytes<'a> for $name<'a> {
            fn from_bytes(buf: &mut &'a [u8]) -> Result<Self, FromBytesError> {
                // the payload is the whole parameter: take all of it (a
                // parser that leaves bytes behind fails with "trailing
                // field data")
                Ok(Self(std::mem::take(buf)))
            }
        }

        impl ToBytes for $name<'_> {
            fn binary_size(&self) -> usize {
                self.0.len()
            }

            fn write<W: Write>(&self, mut writer: W) -> std::io::Result<()> {
                writer.write_all(self.0)
            }

            fn default_repr() -> impl ToBytes {
                &[] as &[u8]
            }
        }
    };
}

raw_payload!(
    /// The data of a kive plugin event, borrowed from the event buffer.
    KivePayload,
    crate::falco::EVENT_SOURCE
);

raw_payload!(
    /// The same payload carried by an async event of the `syscall` source
    /// (see [`crate::falco::async_events`]). Async events of other plugins
    /// parse as this too: the extraction checks the event's name first.
    SyscallPayload,
    "syscall"
);

/// Every event the `kive.*` fields are extracted from: kive's plugin
/// events (source `kive`, type 322) and async events (source `syscall`,
/// type 402). Falco reads the sources and types from this.
#[derive(falco_event::AnyEvent)]
pub enum KiveAnyEvent<'a> {
    /// A kive plugin event.
    Plugin(PluginEvent<KivePayload<'a>>),
    /// An async event in the syscall stream (kive's `kive_alert` or
    /// another plugin's).
    Async(AsyncEvent<'a, SyscallPayload<'a>>),
}

impl<'a> KiveAnyEvent<'a> {
    /// kive's payload: the plugin event's data, or the data of a
    /// `kive_alert` async event; `None` for other plugins' async events.
    pub fn kive_payload(&self) -> Option<&'a [u8]> {
        match self {
            Self::Plugin(p) => Some(p.event_data.0),
            Self::Async(a) if a.name == crate::falco::async_events::ASYNC_EVENT_NAME => {
                Some(a.data.0)
            }
            Self::Async(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kive_alert_async_events_carry_a_kive_payload() {
        let data: &[u8] = b"K\x01";
        let ours = KiveAnyEvent::Async(AsyncEvent {
            plugin_id: 0,
            name: c"kive_alert",
            data: SyscallPayload(data),
        });
        assert_eq!(ours.kive_payload(), Some(data));
        let other = KiveAnyEvent::Async(AsyncEvent {
            plugin_id: 0,
            name: c"container",
            data: SyscallPayload(data),
        });
        assert_eq!(other.kive_payload(), None, "another plugin's async event");
        let plugin = KiveAnyEvent::Plugin(PluginEvent {
            plugin_id: 999,
            event_data: KivePayload(data),
        });
        assert_eq!(plugin.kive_payload(), Some(data));
    }
}
