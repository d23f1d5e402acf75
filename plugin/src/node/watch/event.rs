//! fanotify notifications with file handles, read from their bytes (pure):
//! `struct fanotify_event_metadata` then information records
//! (`FAN_REPORT_FID | FAN_REPORT_DFID_NAME`).

use super::map::{handle_hash, name_hash, Named};

const METADATA_LEN: usize = 24;
const INFO_FID: u8 = 1;
const INFO_DFID_NAME: u8 = 2;
const INFO_DFID: u8 = 3;

/// One notification.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The event mask (`FAN_*`).
    pub mask: u64,
    /// What its records name.
    pub records: Vec<Named>,
}

/// The notifications in `buf` (what one `read` returned); a malformed
/// record ends the buffer, counted by the caller as an overflow (the
/// rescan then looks at everything).
pub fn parse(buf: &[u8]) -> (Vec<Event>, bool) {
    let mut events = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let Some(ev) = buf.get(at..) else { break };
        let (Some(len), Some(meta_len), Some(mask)) = (u32_at(ev, 0), u16_at(ev, 6), u64_at(ev, 8))
        else {
            return (events, true);
        };
        let (len, meta_len) = (len as usize, usize::from(meta_len));
        if len < METADATA_LEN || meta_len < METADATA_LEN || meta_len > len {
            return (events, true);
        }
        let Some(info) = ev.get(meta_len..len) else {
            return (events, true);
        };
        let Some(records) = records(info) else {
            return (events, true);
        };
        events.push(Event { mask, records });
        at += len;
    }
    (events, false)
}

fn records(mut info: &[u8]) -> Option<Vec<Named>> {
    let mut out = Vec::new();
    while !info.is_empty() {
        let kind = *info.first()?;
        let len = usize::from(u16_at(info, 2)?);
        if len < 4 {
            return None;
        }
        let rec = info.get(4..len)?;
        if let Some(named) = record(kind, rec) {
            out.push(named?);
        }
        info = info.get(len..)?;
    }
    Some(out)
}

/// One record after its header: `Some(None)` when malformed, `None` when
/// of a kind that names nothing here.
fn record(kind: u8, rec: &[u8]) -> Option<Option<Named>> {
    if !matches!(kind, INFO_FID | INFO_DFID_NAME | INFO_DFID) {
        return None;
    }
    Some(handle(rec).map(|(obj, rest)| {
        let name = rest.split(|b| *b == 0).next().unwrap_or_default();
        if kind == INFO_DFID_NAME && !name.is_empty() && name != b"." {
            Named::Child {
                dir: obj,
                name: name_hash(name),
            }
        } else {
            Named::Object(obj)
        }
    }))
}

/// `fsid`, `struct file_handle`: the handle's hash and what follows it.
fn handle(rec: &[u8]) -> Option<(u64, &[u8])> {
    let fsid: [u8; 8] = rec.get(0..8)?.try_into().ok()?;
    let bytes = u32_at(rec, 8)? as usize;
    let kind = i32::from_ne_bytes(rec.get(12..16)?.try_into().ok()?);
    let end = 16usize.checked_add(bytes)?;
    let f = rec.get(16..end)?;
    Some((handle_hash(fsid, kind, f), rec.get(end..)?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(kind: u8, handle: &[u8], name: &[u8]) -> Vec<u8> {
        let mut rec = vec![7u8; 8]; // fsid
        rec.extend((handle.len() as u32).to_ne_bytes());
        rec.extend(1i32.to_ne_bytes());
        rec.extend(handle);
        rec.extend(name);
        if !name.is_empty() {
            rec.push(0);
        }
        let mut out = vec![kind, 0];
        out.extend(((rec.len() + 4) as u16).to_ne_bytes());
        out.extend(rec);
        out
    }

    fn event(mask: u64, info: &[Vec<u8>]) -> Vec<u8> {
        let info: Vec<u8> = info.concat();
        let mut out = ((24 + info.len()) as u32).to_ne_bytes().to_vec();
        out.extend([3, 0]);
        out.extend(24u16.to_ne_bytes());
        out.extend(mask.to_ne_bytes());
        out.extend((-1i32).to_ne_bytes());
        out.extend(1i32.to_ne_bytes());
        out.extend(info);
        out
    }

    #[test]
    fn records_name_a_child_or_an_object_by_handle() {
        let h = handle_hash([7; 8], 1, b"dirhandl");
        let f = handle_hash([7; 8], 1, b"filehand");
        let mut buf = event(0x80, &[fid(INFO_DFID_NAME, b"dirhandl", b"config")]);
        buf.extend(event(0x4, &[fid(INFO_FID, b"filehand", b"")]));
        buf.extend(event(0x400, &[fid(INFO_DFID, b"dirhandl", b"")]));
        let (events, bad) = parse(&buf);
        assert!(!bad);
        assert_eq!(
            events,
            [
                Event {
                    mask: 0x80,
                    records: vec![Named::Child {
                        dir: h,
                        name: name_hash(b"config")
                    }]
                },
                Event {
                    mask: 0x4,
                    records: vec![Named::Object(f)]
                },
                Event {
                    mask: 0x400,
                    records: vec![Named::Object(h)]
                },
            ]
        );
    }

    #[test]
    fn an_overflow_carries_no_record_and_garbage_is_reported() {
        let (events, bad) = parse(&event(0x4000, &[]));
        assert!(!bad);
        assert_eq!(events[0].mask, 0x4000);
        assert!(events[0].records.is_empty());
        let good = event(0x80, &[fid(INFO_DFID_NAME, b"dir", b"x")]);
        for cut in 1..good.len() {
            let (_, bad) = parse(&good[..cut]);
            assert!(bad, "cut at {cut} is reported");
        }
        let mut lying = good.clone();
        lying[24 + 2] = 200; // a record longer than the event
        assert!(parse(&lying).1);
    }
}
