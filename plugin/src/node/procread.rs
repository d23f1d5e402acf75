//! Reading `/proc` files and fd names in few system calls: they are read
//! once or twice per container root and per trapped entry at a cold start
//! (100,000 entries on a node of 5,000 pods), where `std`'s generic
//! `read_to_string` (a `statx` and an `lseek` for a size `/proc` does not
//! give, then reads from a 32-byte probe up) and a `readlink` that walks
//! `/proc/self/fd/N` from `/` each time cost more than the answer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};

use super::resolve::io_err;

/// Reads the file `name` under the directory `dir` (a `/proc/<pid>` fd)
/// into a string, with a buffer of `capacity` bytes to start with (grown
/// while the file fills it): one `read` for a file that fits, one more for
/// its end.
pub fn read_at(dir: impl AsFd, name: &str, capacity: usize) -> io::Result<String> {
    String::from_utf8(read_bytes_at(dir, name, capacity)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// [`read_at`]'s bytes, whatever they are (a process's `stat` shows its
/// `comm` as the process set it, UTF-8 or not).
pub fn read_bytes_at(dir: impl AsFd, name: &str, capacity: usize) -> io::Result<Vec<u8>> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err)?;
    read_all(&fd, capacity)
}

fn read_all(fd: &OwnedFd, capacity: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(capacity.max(64));
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        let (filled, _) = match rustix::io::read(fd, buf.spare_capacity_mut()) {
            Ok(r) => r,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err(e)),
        };
        if filled.is_empty() {
            break;
        }
        let n = filled.len();
        // SAFETY: `read` initialized the `n` bytes after the current length
        // (they are inside the spare capacity it was given).
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(buf)
}

/// This process's `/proc/self/fd` directory, opened once (one fd for the
/// process's life); `None` when it cannot be opened.
fn own_fd_dir() -> Option<&'static OwnedFd> {
    static DIR: OnceLock<Option<OwnedFd>> = OnceLock::new();
    DIR.get_or_init(|| {
        rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
    })
    .as_ref()
}

/// What `/proc/self/fd/N` of `fd` links to now: the path the kernel shows
/// for the open file (the same text as `readlink("/proc/self/fd/N")`), read
/// relative to the fd directory held open.
pub fn fd_link(fd: impl AsFd) -> io::Result<std::path::PathBuf> {
    let n = fd.as_fd().as_raw_fd().to_string();
    let Some(dir) = own_fd_dir() else {
        return std::fs::read_link(format!("/proc/self/fd/{n}"));
    };
    let target =
        rustix::fs::readlinkat(dir, n.as_str(), Vec::with_capacity(256)).map_err(io_err)?;
    use std::os::unix::ffi::OsStringExt;
    Ok(std::ffi::OsString::from_vec(target.into_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_larger_than_the_first_buffer_is_read_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(dir.path().join("f"), &text).expect("write");
        let d = rustix::fs::open(dir.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
            .expect("open dir");
        assert_eq!(read_at(&d, "f", 64).expect("read"), text, "grown buffer");
        assert_eq!(read_at(&d, "f", 1 << 20).expect("read"), text, "one read");
        assert!(read_at(&d, "missing", 64).is_err(), "a missing file errs");
    }

    #[test]
    fn proc_files_read_alike_with_std() {
        let d = rustix::fs::open(
            "/proc/self",
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .expect("open /proc/self");
        let ours = read_at(&d, "cgroup", 1).expect("cgroup");
        let std = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        assert_eq!(ours, std, "a /proc file read in pieces");
        assert!(!ours.is_empty(), "cgroup names this process's cgroup");
    }

    #[test]
    fn an_fd_link_is_the_files_name_and_follows_a_rename() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = dir.path().join("f");
        std::fs::write(&f, "x").expect("write");
        let file = std::fs::File::open(&f).expect("open");
        assert_eq!(fd_link(&file).expect("link"), f);
        let g = dir.path().join("g");
        std::fs::rename(&f, &g).expect("rename");
        assert_eq!(fd_link(&file).expect("link"), g);
        let std =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("readlink");
        assert_eq!(fd_link(&file).expect("link"), std, "same text as readlink");
    }
}
