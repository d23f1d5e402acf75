//! The files of a directory or a pattern inside a root (KubeArmor
//! `matchDirectories` / `matchPatterns`): regular files only, symlinks
//! never followed, at most `cap` files and a bounded number of directories.

use std::collections::VecDeque;

use super::resolve::{ResolveError, Root};
use crate::policy::PathSet;

/// Most directories read for one set (a pattern like `/**` stays bounded).
pub const MAX_DIRS: usize = 4096;

/// The files found, sorted, and whether a limit cut the listing short.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Absolute paths inside the root.
    pub files: Vec<String>,
    /// The cap (files) or [`MAX_DIRS`] was reached.
    pub truncated: bool,
}

fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// Where to start and how deep to go for a set.
fn plan(set: &PathSet) -> (String, Option<usize>, Option<glob::Pattern>) {
    match set {
        PathSet::Directory { dir, recursive } => {
            let d = dir.trim_end_matches('/');
            let d = if d.is_empty() { "/" } else { d };
            (d.to_string(), (!recursive).then_some(1), None)
        }
        PathSet::Pattern(p) => {
            let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
            let literal = comps.iter().take_while(|c| !is_glob(c)).count();
            let base = format!("/{}", comps[..literal].join("/"));
            // a pattern without a glob names one file: its directory, depth 1
            let (base, depth) = if literal == comps.len() {
                let parent = format!("/{}", comps[..literal.saturating_sub(1)].join("/"));
                (parent, Some(1))
            } else if comps.iter().any(|c| c.contains("**")) {
                (base, None)
            } else {
                (base, Some(comps.len() - literal))
            };
            (base, depth, glob::Pattern::new(p).ok())
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Lists the regular files of `set` inside `root`, at most `cap`.
pub fn list_files(root: &Root, set: &PathSet, cap: usize) -> Result<Listing, ResolveError> {
    let (base, depth, pattern) = plan(set);
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut out = Listing::default();
    let mut queue = VecDeque::from([(base.clone(), 1usize)]);
    let mut dirs = 0;
    while let Some((dir, level)) = queue.pop_front() {
        dirs += 1;
        if dirs > MAX_DIRS {
            out.truncated = true;
            break;
        }
        let fd = match root.open_dir(&dir) {
            Ok(fd) => fd,
            // the set's own directory missing is an error; a subdirectory
            // that vanished meanwhile is not
            Err(e) if dir == base => return Err(e),
            Err(_) => continue,
        };
        let Ok(entries) = rustix::fs::Dir::new(fd) else {
            continue;
        };
        let mut names: Vec<(String, rustix::fs::FileType)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str().ok()?.to_string();
                (name != "." && name != "..").then_some((name, e.file_type()))
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ty) in names {
            let path = join(&dir, &name);
            match ty {
                rustix::fs::FileType::Directory if depth.is_none_or(|d| level < d) => {
                    queue.push_back((path, level + 1));
                }
                rustix::fs::FileType::RegularFile => {
                    if pattern
                        .as_ref()
                        .is_some_and(|p| !p.matches_with(&path, opts))
                    {
                        continue;
                    }
                    if out.files.len() >= cap {
                        out.truncated = true;
                        return Ok(out);
                    }
                    out.files.push(path);
                }
                // symlinks and special files are not trapped through a set
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tmp");
        for f in ["a/x.log", "a/y.txt", "a/b/z.log", "a/b/c/w.log", "top.log"] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, "x").expect("write");
        }
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("a/link.log")).expect("symlink");
        d
    }

    fn list(set: PathSet, cap: usize) -> Listing {
        let d = tree();
        let root = Root::open(d.path()).expect("root");
        list_files(&root, &set, cap).expect("listing")
    }

    #[test]
    fn directories_flat_and_recursive() {
        let flat = list(
            PathSet::Directory {
                dir: "/a/".into(),
                recursive: false,
            },
            100,
        );
        assert_eq!(
            flat.files,
            ["/a/x.log", "/a/y.txt"],
            "no symlink, no subdir"
        );
        let deep = list(
            PathSet::Directory {
                dir: "/a".into(),
                recursive: true,
            },
            100,
        );
        assert_eq!(
            deep.files,
            ["/a/x.log", "/a/y.txt", "/a/b/z.log", "/a/b/c/w.log"]
        );
        assert!(!deep.truncated);
    }

    #[test]
    fn patterns_match_within_and_across_directories() {
        assert_eq!(
            list(PathSet::Pattern("/a/*.log".into()), 100).files,
            ["/a/x.log"]
        );
        assert_eq!(
            list(PathSet::Pattern("/a/*/*.log".into()), 100).files,
            ["/a/b/z.log"]
        );
        assert_eq!(
            list(PathSet::Pattern("/**/*.log".into()), 100).files,
            ["/top.log", "/a/x.log", "/a/b/z.log", "/a/b/c/w.log"]
        );
        assert_eq!(
            list(PathSet::Pattern("/a/y.txt".into()), 100).files,
            ["/a/y.txt"]
        );
    }

    #[test]
    fn the_cap_truncates_and_says_so() {
        let l = list(PathSet::Pattern("/**/*.log".into()), 2);
        assert_eq!(l.files.len(), 2);
        assert!(l.truncated);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let d = tree();
        let root = Root::open(d.path()).expect("root");
        let e = list_files(
            &root,
            &PathSet::Directory {
                dir: "/nope".into(),
                recursive: false,
            },
            10,
        )
        .expect_err("missing");
        assert!(e.to_string().contains("/nope"), "{e}");
    }
}
