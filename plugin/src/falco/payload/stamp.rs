//! A live payload's RFC 3339 timestamp without chrono's machinery per
//! event: the second's prefix the thread formatted last, then the
//! nanoseconds. Byte for byte what [`rfc3339_nanos`] gives (tests below).

use std::cell::RefCell;

use crate::alert::rfc3339_nanos;

const NS: u64 = 1_000_000_000;

thread_local! {
    /// The second formatted last and its RFC 3339 form up to the dot.
    static SECOND: RefCell<Option<(u64, String)>> = const { RefCell::new(None) };
}

/// `rfc3339_nanos(wall_ns)`.
pub fn timestamp(wall_ns: u64) -> String {
    let (secs, nanos) = (wall_ns / NS, wall_ns % NS);
    // (no cache while the thread's locals are torn down: chrono)
    SECOND
        .try_with(|cell| {
            let mut cell = cell.try_borrow_mut().ok()?;
            if cell.as_ref().map(|c| c.0) != Some(secs) {
                // chrono writes nine digits and `Z`: keep what comes before
                let whole = rfc3339_nanos(secs * NS);
                let prefix = whole.strip_suffix(".000000000Z")?;
                *cell = Some((secs, prefix.to_string()));
            }
            let (_, prefix) = cell.as_ref()?;
            let mut out = String::with_capacity(prefix.len() + 11);
            out.push_str(prefix);
            out.push('.');
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(nanos);
            out.extend(std::iter::repeat_n(
                '0',
                9usize.saturating_sub(digits.len()),
            ));
            out.push_str(digits);
            out.push('Z');
            Some(out)
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| rfc3339_nanos(wall_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timestamp_is_what_chrono_writes_for_every_second_and_nanosecond() {
        let now = 1_764_629_357 * NS;
        let mut cases = vec![
            0,
            1,
            NS - 1,
            NS,
            now,
            now + 1,
            now + 999_999_999,
            now + NS, // the next second: a new prefix
            now - 1,  // back to the one before
            now + 123_456_789,
            u64::MAX,
            u64::MAX - NS,
            951_782_400 * NS + 5, // 2000-02-29
            4_107_542_400 * NS,   // 2100-03-01
        ];
        // many nanoseconds of a few seconds, in and out of order
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(now + x % (4 * NS));
        }
        for ns in cases {
            assert_eq!(timestamp(ns), rfc3339_nanos(ns), "at {ns} ns");
        }
    }
}
