//! Commands the kernel tests run that behave the same on any system: on
//! this machine (coreutils, util-linux) and in the Debian VM's initramfs
//! (busybox, whose applets answer to `argv[0]`, and no util-linux).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// Copies the executable `tool` (e.g. `/usr/bin/cat`, a symlink to busybox
/// in the VM: the copy is of its target) to `to`, mode 0755.
pub fn copy_tool(tool: &str, to: &Path) {
    std::fs::copy(tool, to).unwrap_or_else(|e| panic!("copy {tool} to {}: {e}", to.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
}

/// The executable at `path` (a copy or link of a tool, under any name) run
/// as the tool `applet` (its `argv[0]`): a multi-call binary runs that
/// applet, any other binary ignores the name.
pub fn tool_at(path: &Path, applet: &str) -> Command {
    let mut cmd = Command::new(path);
    cmd.arg0(applet);
    cmd
}

/// `cat FILE` as user and group `id` with no supplementary groups (std
/// drops them when root sets a uid), instead of util-linux `setpriv`.
pub fn cat_as(id: u32, file: &Path) -> Command {
    let mut cmd = Command::new("cat");
    cmd.arg(file).uid(id).gid(id);
    cmd
}

/// What `path` names once symlinks are followed: the executable a process
/// started as `path` shows in `/proc/<pid>/exe` (`/usr/bin/cat` is
/// `/bin/busybox` in the VM).
pub fn real_exe(path: &str) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("canonicalize {path}: {e}"))
        .display()
        .to_string()
}

/// Sets the child's open-file limit (soft and hard) to `n` before it execs,
/// instead of util-linux `prlimit --nofile=n:n`.
pub fn with_fd_limit(cmd: &mut Command, n: u64) -> &mut Command {
    // SAFETY: setrlimit is a plain syscall on a stack value, safe between
    // fork and exec; its error is returned as a raw errno (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}
