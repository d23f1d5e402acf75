//! Per-entry isolation of the file work: entries are resolved (and their
//! followed inodes looked at) on worker threads, and the caller waits for
//! each entry at most a deadline. A filesystem that hangs (a FUSE server
//! that never answers, an unreachable NFS server) then stalls only the
//! entries on it: an entry whose work has not returned is marked stalled
//! (logged at WARN, counted in the metrics), keeps the state it had (an
//! armed inode stays armed, its pin held) and is skipped by rescans and
//! reconciles until its stuck worker returns (logged at INFO); the other
//! entries go on with a fresh worker. Closing never waits for a stuck
//! worker: it is left to return on its own.
//!
//! A batch of entries is handed to a worker as a whole (one thread
//! hand-off per batch, not per entry); a large batch (a cold start arms
//! every entry in one) is cut into contiguous parts run side by side on as
//! many workers as the machine has cores, at most [`MAX_WIDTH`]. Threads
//! are only started when no idle one is left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alert::text::escape;
use crate::sync::lock;

/// The work of one entry (by table id).
pub(crate) type Work = Arc<dyn Fn(u32) -> Result<bool, String> + Send + Sync>;

/// Settles the result of an entry whose work returned after it was marked
/// stalled (on its worker: nobody waits for that result).
pub(crate) type Late = Arc<dyn Fn(u32, Result<bool, String>) -> Result<bool, String> + Send + Sync>;

/// How often a waiting caller looks at the closing flag.
const SLICE: Duration = Duration::from_millis(20);
/// With more than `POLL_ABOVE` results still to come, the caller takes
/// what arrived every `POLL` instead of being woken by each result (a
/// thread wake-up per entry was a fifth of a cold start's CPU); the last
/// ones, and a small batch's, wake it as they come.
const POLL_ABOVE: usize = 64;
const POLL: Duration = Duration::from_millis(1);
/// Idle workers kept for the next batch.
const IDLE: usize = 4;
/// At most this many workers run parts of one batch side by side.
pub(crate) const MAX_WIDTH: usize = 4;
/// A part is at least this many entries: a small batch (a pod's change)
/// stays on one worker, one hand-off.
const MIN_PART: usize = 256;

/// How many workers run a batch of `len` entries: one per `MIN_PART`
/// entries, at most `parallel` (the cores) and [`MAX_WIDTH`].
fn width(len: usize, parallel: usize) -> usize {
    (len / MIN_PART).clamp(1, parallel.clamp(1, MAX_WIDTH))
}

/// Entries whose work has not returned: when it stalled, and its name.
type StalledMap = HashMap<u32, (Instant, String)>;

struct Batch {
    ids: Vec<u32>,
    work: Work,
    late: Late,
    /// Set by the caller once it stops waiting: the worker runs no more of
    /// the batch.
    abandoned: Arc<AtomicBool>,
    /// The caller's log subscriber: the work logs where the caller does.
    logs: tracing::Dispatch,
}

/// What a worker sends back: an entry's result, or `None` once it saw that
/// its caller let go of it and stopped before the end of its part.
type Done = Option<(u32, Result<bool, String>)>;

struct Worker {
    jobs: Sender<Batch>,
    done: Receiver<Done>,
}

/// The stalled entries and the workers.
pub(crate) struct Stalls {
    deadline: Duration,
    /// Workers a large batch is spread over (the cores, at most
    /// [`MAX_WIDTH`]).
    parallel: usize,
    idle: Mutex<Vec<Worker>>,
    stalled: Arc<Mutex<StalledMap>>,
    total: AtomicU64,
    /// Set on close (or by whoever started the runtime, e.g. on SIGTERM).
    closing: Arc<AtomicBool>,
}

impl Stalls {
    /// Stalls after `deadline`; no work is started once `closing` is set.
    pub(crate) fn new(deadline: Duration, closing: Arc<AtomicBool>) -> Self {
        Self {
            deadline: deadline.max(Duration::from_millis(1)),
            parallel: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(MAX_WIDTH),
            idle: Mutex::new(Vec::new()),
            stalled: Arc::new(Mutex::new(HashMap::new())),
            total: AtomicU64::new(0),
            closing,
        }
    }

    /// How long one entry's work may take.
    pub(crate) fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Stops handing out work: callers waiting return at once, idle
    /// workers end.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        lock(&self.idle).clear();
    }

    /// Whether [`Self::close`] was called.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Workers a large batch is spread over.
    pub(crate) fn parallel(&self) -> usize {
        self.parallel
    }

    /// Entries stalled now.
    pub(crate) fn count(&self) -> usize {
        lock(&self.stalled).len()
    }

    /// Stalls seen since the start.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Runs `work` for each of `ids` on workers: a batch large enough is
    /// cut into contiguous parts run side by side ([`Stalls::width`]), each
    /// part in order on its own worker. The result of each entry (in the
    /// order of `ids` except entries run again after a stall), or `None`
    /// for one that is stalled (now or already) or not run because kive is
    /// closing. `name` names an entry in the logs; `late` settles the
    /// result of an entry whose work returns after it was marked stalled
    /// (its caller no longer waits for it).
    pub(crate) fn run_each(
        &self,
        ids: &[u32],
        work: &Work,
        late: &Late,
        name: &dyn Fn(u32) -> String,
    ) -> Vec<(u32, Option<Result<bool, String>>)> {
        let mut out = Vec::with_capacity(ids.len());
        let mut todo: Vec<u32> = {
            let stalled = lock(&self.stalled);
            ids.iter()
                .copied()
                .filter(|id| {
                    let skip = stalled.contains_key(id);
                    if skip {
                        out.push((*id, None));
                    }
                    !skip
                })
                .collect()
        };
        while !todo.is_empty() {
            if self.closing() {
                out.extend(todo.drain(..).map(|id| (id, None)));
                break;
            }
            let width = width(todo.len(), self.parallel);
            let size = todo.len().div_ceil(width);
            let mut running = Vec::with_capacity(width);
            for part in todo.chunks(size) {
                let Some(worker) = self.worker() else {
                    // no thread to be had: the work runs here, as without isolation
                    out.extend(part.iter().map(|&id| (id, Some(work(id)))));
                    continue;
                };
                let abandoned = Arc::new(AtomicBool::new(false));
                let batch = Batch {
                    ids: part.to_vec(),
                    work: Arc::clone(work),
                    late: Arc::clone(late),
                    abandoned: Arc::clone(&abandoned),
                    logs: tracing::dispatcher::get_default(Clone::clone),
                };
                if worker.jobs.send(batch).is_ok() {
                    running.push((worker, part, abandoned));
                } else {
                    // the worker is gone: its part runs again next round
                    running.push((worker, part, Arc::new(AtomicBool::new(true))));
                }
            }
            let mut next = Vec::new();
            for (worker, part, abandoned) in running {
                if abandoned.load(Ordering::Relaxed) {
                    next.extend_from_slice(part);
                    continue;
                }
                let (finished, left) = self.wait(&worker, part, &abandoned, name);
                let healthy = !abandoned.load(Ordering::Relaxed);
                out.extend(finished);
                if self.closing() {
                    out.extend(left.into_iter().map(|id| (id, None)));
                    continue;
                }
                if left.len() == part.len() {
                    // the worker ended without a result (its work panicked):
                    // the entry is not run again in this pass
                    out.push((part[0], Some(Err("its file work ended early".into()))));
                    next.extend_from_slice(&part[1..]);
                    continue;
                }
                if healthy && left.is_empty() {
                    let mut idle = lock(&self.idle);
                    if idle.len() < IDLE && !self.closing() {
                        idle.push(worker);
                    }
                }
                next.extend(left);
            }
            todo = next;
        }
        out
    }

    /// Waits for the results of `ids` from `worker`; returns them and the
    /// ids not run (after a stalled one, or when closing; the stalled one
    /// is among the results, as `None`). A worker given up on is marked
    /// `abandoned`.
    #[allow(clippy::type_complexity)]
    fn wait(
        &self,
        worker: &Worker,
        ids: &[u32],
        abandoned: &AtomicBool,
        name: &dyn Fn(u32) -> String,
    ) -> (Vec<(u32, Option<Result<bool, String>>)>, Vec<u32>) {
        let mut out = Vec::with_capacity(ids.len());
        let mut next = 0;
        let mut started = Instant::now();
        while next < ids.len() {
            let got = match worker.done.try_recv() {
                Ok(r) => Ok(r),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if ids.len() - next > POLL_ABOVE => {
                    // not parked on the channel: the worker's sends wake nobody
                    std::thread::sleep(POLL);
                    Err(RecvTimeoutError::Timeout)
                }
                Err(TryRecvError::Empty) => worker.done.recv_timeout(SLICE),
            };
            match got {
                Ok(Some((id, r))) => {
                    out.push((id, Some(r)));
                    next += 1;
                    started = Instant::now();
                    if next < ids.len() && self.closing() {
                        let left = self.let_go(worker, abandoned, started, &ids[next..], &mut out);
                        return (out, left);
                    }
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    abandoned.store(true, Ordering::Relaxed);
                    return (out, ids[next..].to_vec());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.closing() {
                        let left = self.let_go(worker, abandoned, started, &ids[next..], &mut out);
                        return (out, left);
                    }
                    if started.elapsed() < self.deadline {
                        continue;
                    }
                    // the worker sends under this lock: a result is either
                    // here now or comes after the entry is marked
                    let mut stalled = lock(&self.stalled);
                    if let Ok(Some((id, r))) = worker.done.try_recv() {
                        out.push((id, Some(r)));
                        next += 1;
                        started = Instant::now();
                        continue;
                    }
                    abandoned.store(true, Ordering::Relaxed);
                    let id = ids[next];
                    let who = name(id);
                    tracing::warn!(
                        "{}: its file work has not returned after {:?} (a hung filesystem?): \
                         the entry keeps its state and is skipped until it returns",
                        escape(&who),
                        self.deadline
                    );
                    stalled.insert(id, (Instant::now(), who));
                    self.total.fetch_add(1, Ordering::Relaxed);
                    out.push((id, None));
                    return (out, ids[next + 1..].to_vec());
                }
            }
        }
        (out, Vec::new())
    }

    /// On close: `worker` runs no more of `ids` (not run yet); the results
    /// it already sent are taken, and the entry it may be running finishes
    /// first (its work holds the runtime: close releases everything when it
    /// returns), waited for at most what is left of its deadline; a stalled
    /// entry is never waited for. Returns the ids not run.
    fn let_go(
        &self,
        worker: &Worker,
        abandoned: &AtomicBool,
        started: Instant,
        ids: &[u32],
        out: &mut Vec<(u32, Option<Result<bool, String>>)>,
    ) -> Vec<u32> {
        abandoned.store(true, Ordering::SeqCst);
        // a worker of a part waited for later may have run ahead (all of its
        // part, even): what it sent is done work, armed, and counted; then
        // the entry it runs now, until it says it stopped
        let until = Instant::now() + self.deadline.saturating_sub(started.elapsed());
        let mut next = 0;
        while next < ids.len() {
            match worker
                .done
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Some((id, r))) => {
                    out.push((id, Some(r)));
                    next += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
        ids[next..].to_vec()
    }

    /// An idle worker, or a new one (`None` when no thread can be started).
    fn worker(&self) -> Option<Worker> {
        if let Some(w) = lock(&self.idle).pop() {
            return Some(w);
        }
        let (jobs, rx) = channel::<Batch>();
        let (tx, done) = channel();
        let stalled = Arc::clone(&self.stalled);
        let spawned = std::thread::Builder::new()
            .name("kive-resolve".into())
            .spawn(move || work_loop(&rx, &tx, &stalled));
        match spawned {
            Ok(_) => Some(Worker { jobs, done }),
            Err(e) => {
                tracing::warn!("starting a resolver thread: {e}");
                None
            }
        }
    }
}

/// A worker: runs batches until its caller lets go of it.
fn work_loop(jobs: &Receiver<Batch>, done: &Sender<Done>, stalled: &Mutex<StalledMap>) {
    while let Ok(batch) = jobs.recv() {
        let _logs = tracing::dispatcher::set_default(&batch.logs);
        for &id in &batch.ids {
            if batch.abandoned.load(Ordering::SeqCst) {
                let _ = done.send(None);
                break;
            }
            let mut r = (batch.work)(id);
            let mut st = lock(stalled);
            if let Some((since, who)) = st.remove(&id) {
                drop(st);
                tracing::info!(
                    "{}: its file work returned after {:?}: rescanned again",
                    escape(&who),
                    since.elapsed()
                );
                // the caller went on: this worker settles the result
                r = (batch.late)(id, r);
                st = lock(stalled);
            }
            let sent = done.send(Some((id, r)));
            drop(st);
            if sent.is_err() {
                return;
            }
        }
        if batch.abandoned.load(Ordering::Relaxed) {
            // the caller went on with another worker
            return;
        }
        // idle until the next batch: the pages emptied while it worked
        // (blocks other threads freed meanwhile included) go back now;
        // what the caller frees of its results, at its next batch
        crate::allocator::give_back(false);
    }
}

#[cfg(test)]
#[path = "stalls_tests.rs"]
mod tests;
