//! Finding the container roots of one reconcile on the arming workers: a
//! cold start's thousands of containers are looked up side by side, each
//! while its own entries are armed, not one after another before arming
//! starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::node::containers::{open_container_root, ContainerLocator};
use crate::node::Root;

use super::table::ContainerOwner;
use crate::sync::lock;

/// One lookup per container: the first of its entries to need the root
/// finds it (a process through its cgroup, then its root opened and
/// checked to still be in that container); another worker needing the
/// same container waits for that lookup only, never for another
/// container's, and at most `wait`: a lookup that hangs is given up by its
/// waiters (their entries stay pending, retried by a later reconcile), so
/// it holds only the worker that runs it.
pub(super) struct RootFinder {
    locator: Arc<ContainerLocator>,
    proc_root: PathBuf,
    wait: Duration,
    roots: Mutex<HashMap<String, Arc<Lookup>>>,
}

/// A container's lookup: done once, its result shared.
#[derive(Default)]
struct Lookup {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
enum State {
    #[default]
    Free,
    Finding,
    Found(Option<Arc<Root>>),
    /// A waiter gave up on a lookup that did not return.
    GivenUp,
}

impl RootFinder {
    pub(super) fn new(locator: Arc<ContainerLocator>, proc_root: PathBuf, wait: Duration) -> Self {
        Self {
            locator,
            proc_root,
            wait,
            roots: Mutex::default(),
        }
    }

    /// The root of `owner`'s container (`None`: no process of it runs on
    /// this node, its root could not be opened as that container's, or
    /// another worker's lookup of it did not return within the wait).
    pub(super) fn root_of(&self, owner: &ContainerOwner) -> Option<Arc<Root>> {
        let cell = Arc::clone(
            lock(&self.roots)
                .entry(owner.container_id.clone())
                .or_default(),
        );
        let mut st = lock(&cell.state);
        match &*st {
            State::Found(r) => return r.clone(),
            State::GivenUp => return None,
            State::Free => {
                *st = State::Finding;
                drop(st);
                // neither lock is held during the lookup
                let found = self.find(owner);
                let mut st = lock(&cell.state);
                *st = State::Found(found.clone());
                cell.done.notify_all();
                return found;
            }
            State::Finding => {}
        }
        let (mut st, _) = cell
            .done
            .wait_timeout_while(st, self.wait, |s| matches!(s, State::Finding))
            .unwrap_or_else(|p| p.into_inner());
        match &*st {
            State::Found(r) => r.clone(),
            _ => {
                tracing::warn!(
                    "container {}: its lookup did not return within {:?}: its entries wait for a later reconcile",
                    owner.container_id,
                    self.wait
                );
                *st = State::GivenUp;
                None
            }
        }
    }

    /// Lets go of every root found (those already placed in their entries
    /// stay there): a worker that never returns keeps none of them open.
    pub(super) fn clear(&self) {
        lock(&self.roots).clear();
    }

    fn find(&self, owner: &ContainerOwner) -> Option<Arc<Root>> {
        let bare = owner.container_id.rsplit("://").next().unwrap_or_default();
        let pid = self.locator.pid_of(bare, &owner.pod_uid)?;
        match open_container_root(&self.proc_root, pid, bare) {
            Ok(root) => Some(Arc::new(root)),
            Err(e) => {
                tracing::debug!("container {bare}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const ID: &str = "0c37512624823392d71e99a12011148db30ba7ea2a74fc7ff8bd5f85bc7b499c";
    /// Longer than any lookup of a test takes.
    const WAIT: Duration = Duration::from_secs(60);

    /// A container's cgroup (kubelet's systemd layout) listing `pid`, and
    /// that process in a fake `/proc` naming the container in its cgroup.
    fn fake_container(cg: &Path, proc_root: &Path, uid: &str, id: &str, pid: u32) {
        let dir = cg
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{uid}.slice"))
            .join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&dir).expect("cgroup dir");
        std::fs::write(dir.join("cgroup.procs"), format!("{pid}\n")).expect("procs");
        let p = proc_root.join(pid.to_string());
        std::fs::create_dir_all(p.join("root")).expect("root");
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{id}.scope\n"
        );
        std::fs::write(p.join("cgroup"), cgroup).expect("cgroup");
        let stat = format!("{pid} (sleep) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n");
        std::fs::write(p.join("stat"), stat).expect("stat");
    }

    fn owner(uid: &str, id: &str) -> ContainerOwner {
        ContainerOwner {
            pod_uid: uid.into(),
            container_id: format!("containerd://{id}"),
            ..Default::default()
        }
    }

    #[test]
    fn each_container_is_looked_up_once_however_many_workers_ask() {
        let cg = tempfile::tempdir().expect("tmp");
        let proc_root = tempfile::tempdir().expect("tmp");
        let other = ID.replace('0', "e");
        fake_container(cg.path(), proc_root.path(), "u1", ID, 41);
        fake_container(cg.path(), proc_root.path(), "u2", &other, 42);
        let locator = ContainerLocator::new(Some(cg.path().into()), proc_root.path().into());
        let finder = RootFinder::new(Arc::new(locator), proc_root.path().into(), WAIT);
        let (a, b) = (owner("u1", ID), owner("u2", &other));
        // four workers, each asking for both containers' roots
        let found: Vec<(Arc<Root>, Arc<Root>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (
                            finder.root_of(&a).expect("container u1 found"),
                            finder.root_of(&b).expect("container u2 found"),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker"))
                .collect()
        });
        let (first_a, first_b) = &found[0];
        assert_eq!(first_a.path(), proc_root.path().join("41/root"));
        assert_eq!(first_b.path(), proc_root.path().join("42/root"));
        for (ra, rb) in &found {
            assert!(
                Arc::ptr_eq(ra, first_a) && Arc::ptr_eq(rb, first_b),
                "one root (one fd) per container, shared by every worker"
            );
        }
    }

    #[test]
    fn a_container_without_a_process_or_in_another_container_gets_no_root() {
        let cg = tempfile::tempdir().expect("tmp");
        let proc_root = tempfile::tempdir().expect("tmp");
        let other = ID.replace('0', "e");
        // the cgroup lists pid 43, but /proc/43 says it is in another
        // container now (pid reuse): never that process's root
        fake_container(cg.path(), proc_root.path(), "u1", ID, 43);
        let wrong = format!("0::/kubepods.slice/cri-containerd-{other}.scope\n");
        std::fs::write(proc_root.path().join("43/cgroup"), wrong).expect("cgroup");
        let locator = ContainerLocator::new(Some(cg.path().into()), proc_root.path().into());
        let finder = RootFinder::new(Arc::new(locator), proc_root.path().into(), WAIT);
        assert!(finder.root_of(&owner("u1", ID)).is_none(), "pid reused");
        assert!(
            finder.root_of(&owner("u9", &other)).is_none(),
            "no cgroup, no process"
        );
    }

    #[test]
    fn a_lookup_that_does_not_return_is_given_up_by_its_waiters_only() {
        let cg = tempfile::tempdir().expect("tmp");
        let proc_root = tempfile::tempdir().expect("tmp");
        let other = ID.replace('0', "e");
        fake_container(cg.path(), proc_root.path(), "u2", &other, 42);
        let locator = ContainerLocator::new(Some(cg.path().into()), proc_root.path().into());
        let finder = RootFinder::new(
            Arc::new(locator),
            proc_root.path().into(),
            Duration::from_millis(50),
        );
        // a worker is finding ID and never returns
        let hung = owner("u1", ID);
        let cell = Arc::new(Lookup {
            state: Mutex::new(State::Finding),
            done: Condvar::new(),
        });
        lock(&finder.roots).insert(hung.container_id.clone(), Arc::clone(&cell));
        assert!(finder.root_of(&hung).is_none(), "the waiter gives up");
        assert!(
            matches!(*lock(&cell.state), State::GivenUp),
            "and says so for the next ones"
        );
        assert!(finder.root_of(&hung).is_none(), "the next one at once");
        let found = finder.root_of(&owner("u2", &other));
        assert_eq!(
            found.map(|r| r.path().to_path_buf()),
            Some(proc_root.path().join("42/root")),
            "another container is found all the same"
        );
        finder.clear();
        assert!(lock(&finder.roots).is_empty(), "every root let go");
    }
}
