//! A FUSE filesystem that hangs: every lookup of a name starting with
//! `hang` is held unanswered until the test releases it (a dead network
//! filesystem, a wedged FUSE server), every other name does not exist.
//! Released with [`HangingMount::release_as_files`], a `hang*` name is a
//! directory in which every name is a file.
//! Served by `fuser` in this process; the guard answers what it holds and
//! unmounts on drop, also when the test fails.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, MountOption, ReplyAttr,
    ReplyEntry, Request,
};

#[derive(Default)]
struct Held {
    /// Lookups held unanswered.
    replies: Vec<ReplyEntry>,
    /// Lookups of a hanging name received so far.
    asked: usize,
    /// Whether hanging names are held (else answered).
    holding: bool,
    /// Whether hanging names are answered as directories of files (else:
    /// not found).
    files: bool,
}

#[derive(Default)]
struct State {
    held: Mutex<Held>,
    changed: Condvar,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct HangingFs(Arc<State>);

/// The inodes: the root, a `hang*` directory, a file in it.
const DIR: INodeNo = INodeNo(2);
const FILE: INodeNo = INodeNo(3);

fn attr(ino: INodeNo) -> FileAttr {
    let dir = ino != FILE;
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for HangingFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut held = self.0.lock();
        if parent == DIR && held.files {
            return answer(reply, FILE);
        }
        if parent != INodeNo::ROOT || !name.as_encoded_bytes().starts_with(b"hang") {
            return reply.error(Errno::ENOENT);
        }
        held.asked += 1;
        if held.holding {
            held.replies.push(reply);
        } else if held.files {
            answer(reply, DIR);
        } else {
            reply.error(Errno::ENOENT);
        }
        self.0.changed.notify_all();
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if [INodeNo::ROOT, DIR, FILE].contains(&ino) {
            reply.attr(&Duration::from_secs(1), &attr(ino));
        } else {
            reply.error(Errno::ENOENT);
        }
    }
}

fn answer(reply: ReplyEntry, ino: INodeNo) {
    reply.entry(&Duration::from_secs(1), &attr(ino), fuser::Generation(0));
}

/// A mounted hanging filesystem; unmounted on drop.
pub struct HangingMount {
    state: Arc<State>,
    session: Option<fuser::BackgroundSession>,
    dir: PathBuf,
}

impl HangingMount {
    /// Mounts it on `dir` (created), holding lookups of `hang*` names.
    pub fn mount(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let state = Arc::new(State::default());
        state.lock().holding = true;
        let mut cfg = Config::default();
        cfg.mount_options = vec![MountOption::FSName("kive-hanging".into()), MountOption::RO];
        cfg.acl = fuser::SessionACL::All;
        let session = fuser::spawn_mount(HangingFs(Arc::clone(&state)), dir, &cfg)
            .unwrap_or_else(|e| panic!("mounting a FUSE filesystem on {}: {e}", dir.display()));
        Self {
            state,
            session: Some(session),
            dir: dir.to_path_buf(),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Lookups of a hanging name received so far.
    pub fn asked(&self) -> usize {
        self.state.lock().asked
    }

    /// Lookups held unanswered now.
    pub fn held(&self) -> usize {
        self.state.lock().replies.len()
    }

    /// Waits (at most [`super::DEADLINE`]) until `n` lookups are held.
    pub fn wait_held(&self, n: usize) {
        let deadline = std::time::Instant::now() + super::DEADLINE;
        let mut held = self.state.lock();
        while held.replies.len() < n {
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .unwrap_or_else(|| panic!("{n} lookups never reached the hanging filesystem"));
            held = self
                .state
                .changed
                .wait_timeout(held, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Answers every held lookup (not found) and stops holding.
    pub fn release(&self) {
        let mut held = self.state.lock();
        held.holding = false;
        for r in held.replies.drain(..) {
            r.error(Errno::ENOENT);
        }
    }

    /// Answers every held lookup with a directory (in which every name is
    /// a file) and stops holding.
    pub fn release_as_files(&self) {
        let mut held = self.state.lock();
        held.holding = false;
        held.files = true;
        for r in held.replies.drain(..) {
            answer(r, DIR);
        }
    }

    /// Holds lookups of hanging names again.
    pub fn hold(&self) {
        self.state.lock().holding = true;
    }
}

impl Drop for HangingMount {
    fn drop(&mut self) {
        // whoever is stuck in a lookup returns before the unmount
        self.release();
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                eprintln!("unmounting {}: {e}; detaching it", self.dir.display());
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.dir)
                    .status();
            }
        }
    }
}
