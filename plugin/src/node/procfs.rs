//! Process details from a proc root (best effort: a short-lived process may
//! be gone by the time it is read, and then the fields stay empty).

use std::path::{Path, PathBuf};

/// What /proc still knows of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessDetails {
    /// `/proc/<pid>/exe`.
    pub binary: String,
    /// `/proc/<pid>/cwd`.
    pub cwd: String,
    /// `/proc/<pid>/cmdline`, NULs turned into spaces.
    pub arguments: String,
}

/// Reads a process's details under `proc_root` (normally `/proc`).
pub fn process_details(proc_root: &Path, tgid: u32) -> ProcessDetails {
    let dir: PathBuf = proc_root.join(tgid.to_string());
    let link = |name: &str| {
        std::fs::read_link(dir.join(name))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let arguments = std::fs::read(dir.join("cmdline"))
        .map(|b| cmdline_to_string(&b))
        .unwrap_or_default();
    ProcessDetails {
        binary: link("exe"),
        cwd: link("cwd"),
        arguments,
    }
}

/// `a\0b\0c\0` → `a b c`.
pub fn cmdline_to_string(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_bytes() {
        assert_eq!(cmdline_to_string(b"cat\0/secret.txt\0"), "cat /secret.txt");
        assert_eq!(cmdline_to_string(b""), "");
    }

    #[test]
    fn reads_this_process() {
        let d = process_details(Path::new("/proc"), std::process::id());
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(d.binary, exe.to_string_lossy());
        assert_eq!(
            d.cwd,
            std::env::current_dir().expect("cwd").to_string_lossy()
        );
        assert!(!d.arguments.is_empty());
        assert_eq!(
            process_details(Path::new("/proc"), u32::MAX),
            ProcessDetails::default()
        );
    }
}
