//! Which mount points a change of a mount table touched (pure): the
//! mountinfo lines before and after, by hash; a mount point whose line
//! came or went changed what the paths below it lead to.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use crate::node::mounts::parse_line;

/// A mount table as seen last: line hash → mount point.
pub type Table = HashMap<u64, String>;

/// The table of mountinfo `text`.
pub fn table(text: &str) -> Table {
    text.lines()
        .filter_map(|l| {
            let m = parse_line(l)?;
            let mut h = DefaultHasher::new();
            l.hash(&mut h);
            Some((h.finish(), m.mount_point))
        })
        .collect()
}

/// The mount points whose line came or went between `old` and `new`.
pub fn changed(old: &Table, new: &Table) -> Vec<String> {
    let mut out: Vec<String> = old
        .iter()
        .filter(|(k, _)| !new.contains_key(k))
        .chain(new.iter().filter(|(k, _)| !old.contains_key(k)))
        .map(|(_, mp)| mp.clone())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `path` is at or below mount point `mp`.
pub fn under(path: &str, mp: &str) -> bool {
    let mp = mp.trim_end_matches('/');
    mp.is_empty()
        || path == mp
        || path
            .strip_prefix(mp)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
        30 22 0:25 / /proc rw - proc proc rw\n";

    #[test]
    fn a_mount_added_or_removed_is_named_by_its_mount_point() {
        let before = table(BASE);
        let bind = format!("{BASE}40 22 8:1 /srv/other /etc/app/key rw - ext4 /dev/sda1 rw\n");
        let after = table(&bind);
        assert_eq!(changed(&before, &after), ["/etc/app/key"]);
        assert_eq!(changed(&after, &before), ["/etc/app/key"], "unmounted");
        assert!(changed(&after, &after).is_empty());
        let space = format!("{BASE}41 22 8:1 / /a\\040b rw - ext4 /dev/sda1 rw\n");
        assert_eq!(changed(&before, &table(&space)), ["/a b"]);
        let remount = BASE.replace("/proc rw", "/proc ro");
        assert_eq!(changed(&before, &table(&remount)), ["/proc"]);
    }

    #[test]
    fn a_path_is_under_its_mount_points_and_no_other() {
        assert!(under("/etc/app/key", "/etc/app/key"));
        assert!(under("/etc/app/key", "/etc"));
        assert!(under("/etc/app/key", "/"));
        assert!(under("/etc/app/key", "/etc/"));
        assert!(!under("/etc/app/key", "/et"));
        assert!(!under("/etc/app", "/etc/app/key"), "a mount below the path");
    }
}
