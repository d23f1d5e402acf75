//! kive's log lines, captured on this thread (and on the workers that
//! run its file work, which log where their caller does).

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lines logged at `level` or above while this lives.
pub struct Logs {
    buf: Buf,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn capture(level: tracing::Level) -> Self {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(level)
            .with_writer(move || w.clone())
            .finish();
        Self {
            buf,
            _guard: tracing::subscriber::set_default(sub),
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.buf.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines so far that contain every one of `words`.
    pub fn with(&self, words: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .collect()
    }
}
