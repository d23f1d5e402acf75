//! Replay read-ahead: a thread reads, parses and encodes the file into a
//! queue of chunks bounded in events and in bytes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::ReplayReader;
use crate::falco::FalcoError;

/// Encoded alerts, back to back, with where each ends and its time.
#[derive(Debug, Default)]
pub struct Chunk {
    data: Vec<u8>,
    events: Vec<(usize, u64)>,
}

impl Chunk {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes of the encoded events.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Event `i`: its payload and wall-clock timestamp.
    pub fn get(&self, i: usize) -> (&[u8], u64) {
        let start = if i == 0 { 0 } else { self.events[i - 1].0 };
        let (end, ts) = self.events[i];
        (&self.data[start..end], ts)
    }
}

/// Bytes of encoded events the reader thread may hold ahead of the
/// consumer, over all queued chunks (each chunk closes past its share).
pub const AHEAD_BYTES: usize = 16 << 20;

/// What [`Prefetch::next_chunk`] gives.
#[derive(Debug)]
pub enum Fetched {
    /// Encoded events.
    Chunk(Chunk),
    /// None ready yet.
    Pending,
    /// The file is fully read.
    End,
}

/// Reads, parses and encodes a replay file on its own thread, ahead of
/// `next_batch`, into a bounded queue of chunks (JSON parsing is the
/// costly part of replay; this keeps it off Falco's event loop).
/// Malformed lines are logged with their number, counted, and skipped.
///
/// Memory is bounded in bytes, not only in lines: at most `depth` chunks
/// are queued, and a chunk closes at `chunk` events or once it holds
/// `ahead_bytes / depth` bytes, whichever comes first (plus one event, and
/// one line being read, itself at most [`super::MAX_LINE`]).
#[derive(Debug)]
pub struct Prefetch {
    rx: Option<Receiver<Result<Chunk, FalcoError>>>,
    thread: Option<JoinHandle<()>>,
    read: Arc<AtomicU64>,
    total: u64,
}

impl Prefetch {
    /// Opens `path` and starts the reader thread: chunks of up to `chunk`
    /// events, at most `depth` chunks and [`AHEAD_BYTES`] ahead;
    /// `malformed` counts bad lines.
    pub fn start(
        path: &Path,
        chunk: usize,
        depth: usize,
        malformed: Arc<AtomicU64>,
    ) -> Result<Self, FalcoError> {
        Self::start_bounded(path, chunk, depth, AHEAD_BYTES, malformed)
    }

    /// [`Prefetch::start`] with the byte bound given.
    pub fn start_bounded(
        path: &Path,
        chunk: usize,
        depth: usize,
        ahead_bytes: usize,
        malformed: Arc<AtomicU64>,
    ) -> Result<Self, FalcoError> {
        let depth = depth.max(1);
        let chunk_bytes = (ahead_bytes / depth).max(1);
        let mut reader = ReplayReader::open(path)?;
        let total = reader.total;
        let read = Arc::new(AtomicU64::new(0));
        let (tx, rx) = sync_channel(depth);
        let progress = Arc::clone(&read);
        let thread = std::thread::Builder::new()
            .name("kive-replay".into())
            .spawn(move || {
                let mut one = Vec::with_capacity(1024);
                loop {
                    let mut c = Chunk::default();
                    let mut end = false;
                    while c.len() < chunk.max(1) && c.data.len() < chunk_bytes {
                        match reader.next_encoded(&mut one) {
                            None => {
                                end = true;
                                break;
                            }
                            Some(Ok(ts)) => {
                                c.data.extend_from_slice(&one);
                                c.events.push((c.data.len(), ts));
                            }
                            Some(Err(e @ FalcoError::Malformed { .. })) => {
                                malformed.fetch_add(1, Ordering::Relaxed);
                                log::warn!("kive: {e} (line skipped)");
                            }
                            Some(Err(e)) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    progress.store(reader.read, Ordering::Relaxed);
                    // a send fails once the capture is closed: stop reading
                    if !c.is_empty() && tx.send(Ok(c)).is_err() {
                        return;
                    }
                    if end {
                        return;
                    }
                }
            })
            .map_err(|source| FalcoError::Io {
                path: "(replay thread)".into(),
                source,
            })?;
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
            read,
            total,
        })
    }

    /// The next chunk, waiting at most `wait`.
    pub fn next_chunk(&mut self, wait: Duration) -> Result<Fetched, FalcoError> {
        let Some(rx) = &self.rx else {
            return Ok(Fetched::End);
        };
        let got = if wait.is_zero() {
            rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            rx.recv_timeout(wait)
        };
        match got {
            Ok(Ok(c)) => Ok(Fetched::Chunk(c)),
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Ok(Fetched::Pending),
            Err(RecvTimeoutError::Disconnected) => Ok(Fetched::End),
        }
    }

    /// Fraction of the file read, 0.0 to 1.0.
    pub fn progress(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.read.load(Ordering::Relaxed) as f64 / self.total as f64).min(1.0)
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // closing the queue makes a blocked send fail: the thread returns
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn read_ahead_is_bounded_in_bytes_not_only_in_lines() {
        let line = include_str!("../../../../test_files/kive_alerts.jsonl")
            .lines()
            .next()
            .expect("a line");
        let mut f = tempfile::NamedTempFile::new().expect("temp");
        for _ in 0..200 {
            writeln!(f, "{line}").expect("write");
        }
        let mut one = Vec::new();
        super::super::encode_line(line.as_bytes(), &mut one).expect("encodes");
        let (depth, ahead) = (2, 8 * one.len());
        let malformed = Arc::new(AtomicU64::new(0));
        let mut p =
            Prefetch::start_bounded(f.path(), 10_000, depth, ahead, malformed).expect("starts");
        let (mut events, mut chunks) = (0, 0);
        loop {
            match p.next_chunk(Duration::from_secs(30)).expect("reads") {
                Fetched::Chunk(c) => {
                    assert!(
                        c.bytes() < ahead / depth + one.len(),
                        "a chunk of {} bytes: past its share of {ahead} bytes ahead",
                        c.bytes()
                    );
                    events += c.len();
                    chunks += 1;
                }
                Fetched::Pending => panic!("no chunk within 30 s"),
                Fetched::End => break,
            }
        }
        assert_eq!(events, 200, "every line replays");
        assert!(
            chunks >= 200 / 4,
            "{chunks} chunks: the byte bound closed them"
        );
    }
}
