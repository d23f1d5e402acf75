//! The node edge: paths inside roots, the boot id, cgroups and /proc.

pub mod alive;
pub mod atomic_writer;
pub mod cgroup;
pub mod containers;
pub mod fds;
pub mod heap;
pub mod host;
pub mod limits;
pub mod links;
pub mod listing;
pub mod mounts;
pub mod pidcache;
pub mod pod_own;
pub mod procfs;
pub mod procread;
pub mod procref;
pub mod resolve;
pub mod stamp;
pub mod task;
pub mod watch;

pub use resolve::{PinnedFile, ResolveError, Root};
