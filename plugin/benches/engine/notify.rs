//! kive's change notification on the bench's trapped path, as the runtime
//! holds it for each entry it watches (`node::watch`): a
//! notification-class fanotify group with marks on each directory of the
//! path and on the file. The kernel runs its fsnotify hooks on every open
//! and close of a filesystem that has any watcher, so this is what a node
//! pays on top of a tier's own cost there (and what any inotify user, such
//! as the kubelet, already pays on the filesystems it watches).

use std::path::Path;
use std::sync::Arc;

use kive::node::watch::DirWatch;
use kive::node::Root;

/// Marks the runtime would hold for one trap at `trapped` (a host path,
/// made absolute): one per directory of the path and one on the file.
pub(super) fn watch_trapped(trapped: &Path) -> Result<DirWatch, String> {
    let watch = DirWatch::new(256, 4);
    if !watch.on() {
        return Err("fanotify with file handles is refused here".into());
    }
    let abs = std::path::absolute(trapped)
        .map_err(|e| format!("making {} absolute: {e}", trapped.display()))?;
    let path = abs
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", abs.display()))?;
    let root = Root::open("/")
        .map_err(|e| format!("opening the root: {e}"))?
        .with_own_mounts(Path::new("/proc"));
    watch
        .watch(&Arc::new(root), path, 1, false)
        .map_err(|e| format!("watching {path}: {e}"))?;
    let want = abs.components().count();
    if watch.marks() != want {
        return Err(format!(
            "{} marks placed for {path}, expected {want} (each directory and the file)",
            watch.marks()
        ));
    }
    Ok(watch)
}

/// Checks that the group read no notification during an untrapped loop
/// (its marks ask for no open or close-nowrite event).
pub(super) fn check_quiet(watch: &DirWatch) -> Result<(), String> {
    let drained = watch.drain();
    if watch.events() == 0 && !drained.overflow {
        Ok(())
    } else {
        Err(format!(
            "change notification read {} notifications (overflow {}) during an untrapped loop: the measurement is wrong",
            watch.events(),
            drained.overflow
        ))
    }
}
