//! The system calls of change notification: the fanotify group, file
//! handles, directories opened inside a root, mount tables polled.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::map::handle_hash;
use super::{mounts, MountWatch, WatchError};
use crate::node::resolve::io_err;
use crate::node::Root;

/// `AT_HANDLE_FID` (Linux 6.5): the handle need not be decodable.
const AT_HANDLE_FID: libc::c_int = 0x200;

pub(super) fn errno<'a>(
    what: &'static str,
    path: &'a str,
) -> impl FnOnce(io::Error) -> WatchError + 'a {
    move |source| WatchError::Io {
        what,
        path: path.to_string(),
        source,
    }
}

/// Marks `dir` itself (`name` = `None`) or its entry `name` for `mask`,
/// never following a symlink.
pub(super) fn mark(
    group: BorrowedFd<'_>,
    mask: u64,
    dir: BorrowedFd<'_>,
    name: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW;
    let p = name.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: the group and `dir` are open fds; `p` is null (the directory
    // itself) or a NUL-terminated name that outlives the call.
    let rc = unsafe { libc::fanotify_mark(group.as_raw_fd(), flags, mask, dir.as_raw_fd(), p) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads queued events into `buf` (the group is non-blocking:
/// `WouldBlock` when none is queued).
pub(super) fn read_events(group: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    rustix::io::read(group, buf).map_err(io_err)
}

/// Removes every mark of the group.
pub(super) fn flush_marks(group: BorrowedFd<'_>) {
    // SAFETY: the group is open; FLUSH takes no path.
    unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_FLUSH,
            0,
            libc::AT_FDCWD,
            std::ptr::null(),
        );
    }
}

pub(super) fn init() -> Result<OwnedFd, String> {
    let base = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_REPORT_FID
        | libc::FAN_REPORT_DFID_NAME;
    let flags = libc::O_RDONLY as libc::c_uint;
    // SAFETY: plain flags; the fd returned is owned below.
    let mut fd = unsafe { libc::fanotify_init(base | libc::FAN_UNLIMITED_MARKS, flags) };
    if fd < 0 {
        // without CAP_SYS_ADMIN: the per-user mark limit applies
        // SAFETY: as above.
        fd = unsafe { libc::fanotify_init(base, flags) };
    }
    if fd < 0 {
        return Err(format!(
            "fanotify_init with file handles (Linux 5.9+): {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: fanotify_init returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The components of an absolute path (none empty, `.` or `..`).
pub(super) fn components(path: &str) -> Option<Vec<&str>> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let plain = comps.iter().all(|c| *c != "." && *c != "..");
    (path.starts_with('/') && plain && !comps.is_empty()).then_some(comps)
}

/// Directory `dir` inside `root` (the resolution of [`Root::resolve`]),
/// refused when the path goes through a symlink.
pub(super) fn open_dir(root: &Root, dir: &str) -> Result<OwnedFd, WatchError> {
    rustix::fs::openat2(
        root.fd(),
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP => WatchError::Symlink(dir.to_string()),
        e => errno("opening", dir)(io_err(e)),
    })
}

/// Filesystem id and file handle of `fd` (`AT_EMPTY_PATH`), hashed.
pub(super) fn handle_of(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let sfs = rustix::fs::fstatfs(fd).map_err(io_err)?;
    // SAFETY: fsid_t is two C ints (8 bytes, no padding) on Linux.
    let fsid: [u8; 8] = unsafe { std::mem::transmute(sfs.f_fsid) };
    const MAX: usize = 128; // MAX_HANDLE_SZ
    #[repr(C)]
    struct Handle {
        bytes: libc::c_uint,
        kind: libc::c_int,
        f: [u8; MAX],
    }
    let mut h = Handle {
        bytes: MAX as libc::c_uint,
        kind: 0,
        f: [0; MAX],
    };
    let mut mount_id: libc::c_int = 0;
    // the handle fanotify reports (a filesystem that cannot decode handles,
    // e.g. overlayfs, still encodes one: Linux 6.5+), else a decodable one
    let mut err = io::Error::from_raw_os_error(libc::EINVAL);
    for flags in [AT_HANDLE_FID | libc::AT_EMPTY_PATH, libc::AT_EMPTY_PATH] {
        h.bytes = MAX as libc::c_uint;
        // SAFETY: `h` is a file_handle with room for MAX_HANDLE_SZ bytes,
        // the path is a NUL-terminated empty string, both outlive the call.
        let rc = unsafe {
            libc::name_to_handle_at(
                fd.as_raw_fd(),
                c"".as_ptr(),
                (&raw mut h).cast(),
                &mut mount_id,
                flags,
            )
        };
        if rc == 0 {
            let f = h.f.get(..h.bytes as usize).unwrap_or(&h.f);
            return Ok(handle_hash(fsid, h.kind, f));
        }
        err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    Err(err)
}

/// The whole of a `mountinfo` file, from its start.
pub(super) fn read_all(fd: &OwnedFd) -> io::Result<String> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::from(fd.try_clone()?);
    f.seek(io::SeekFrom::Start(0))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

/// The roots of every mount namespace whose mount table changed since it
/// was last polled, with the mount points that came or went (all of the
/// root, `/`, when the table cannot be read).
pub(super) fn mounts_changed(mounts: &mut HashMap<u64, MountWatch>) -> Vec<(usize, Vec<String>)> {
    let mut watches: Vec<&mut MountWatch> = mounts.values_mut().collect();
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        return Vec::new();
    }
    // SAFETY: `fds` is a valid array of its length; timeout 0 never blocks.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (p, w) in fds.iter().zip(watches.iter_mut()) {
        if p.revents & (libc::POLLPRI | libc::POLLERR) == 0 {
            continue;
        }
        let points = match read_all(&w.fd) {
            Ok(text) => {
                let table = mounts::table(&text);
                let points = mounts::changed(&w.table, &table);
                w.table = table;
                points
            }
            Err(_) => vec!["/".to_string()],
        };
        if !points.is_empty() {
            out.extend(w.roots.iter().map(|r| (*r, points.clone())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_plain_paths_are_split() {
        assert_eq!(components("/etc/app/key"), Some(vec!["etc", "app", "key"]));
        assert_eq!(components("/etc//key/"), Some(vec!["etc", "key"]));
        assert_eq!(components("etc/key"), None);
        assert_eq!(components("/etc/../key"), None);
        assert_eq!(components("/"), None);
    }
}
