//! Whether the process a root was opened through is still running: a
//! container whose processes all exited leaves its root readable through
//! the open descriptor (its mounts detached), so a file resolved there
//! belongs to a container that is gone.

use super::Root;

impl Root {
    /// `true` when the root was opened through `/proc/<pid>` and that
    /// process has exited (its `/proc` directory is empty then); `false`
    /// for a root without one (the host's) or when it still runs.
    pub fn process_exited(&self) -> bool {
        self.proc_dir
            .as_ref()
            .is_some_and(super::procref::ProcDir::exited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{Mode, OFlags};
    use std::process::Command;

    #[test]
    fn a_root_opened_through_a_process_knows_when_it_exits() {
        let mut child = Command::new("sleep")
            .arg("1000")
            .spawn()
            .expect("sleep starts");
        let pid = child.id();
        let dir = rustix::fs::open(
            format!("/proc/{pid}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open /proc/<pid>");
        let root = Root::open("/").expect("root").with_proc_dir(dir);
        assert!(!root.process_exited(), "running");
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert!(root.process_exited(), "exited and reaped");
        assert!(
            !Root::open("/").expect("root").process_exited(),
            "a root without a process never exits"
        );
    }
}
