//! The cgroup v1 folders a node runs in.
//!
//! The machine is cgroup v1 (see design.md, "Real nodes", trap 3). kubelet's `cgroupRoot` must
//! exist in every hierarchy before it starts, and cpuset folders must have `cpus` and `mems`
//! copied from their parent before a process may join. Everything of slot `i` lives below
//! `strait-s<i>/` in each hierarchy:
//!
//! ```text
//!  <hierarchy>/strait-s<i>/node<k>          kubelet's cgroupRoot (kubepods/… below it)
//!  <hierarchy>/strait-s<i>/node<k>-daemons  containerd, kubelet, kube-proxy and the shims
//! ```
//!
//! Since containers run in namespaces of their own, the cgroup tree is the one place that
//! finds every process a node started: [`sweep`] kills them all and removes the folders,
//! deepest first.

use crate::error::{Error, io};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
/// The v1 hierarchies kubelet and runc use (`systemd` is the named one).
pub(crate) const HIERARCHIES: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio", "systemd",
];

/// Creates `path` (relative, e.g. `strait-s1/node0`) in every hierarchy, with cpuset's
/// `cpus` and `mems` copied down from the root.
pub(crate) fn create(path: &str) -> Result<(), Error> {
    for h in HIERARCHIES {
        let base = Path::new(ROOT).join(h);
        if !base.exists() {
            return Err(Error::Cgroup {
                what: format!(
                    "the cgroup v1 hierarchy {} is not mounted; a node needs {}",
                    base.display(),
                    HIERARCHIES.join(", ")
                ),
            });
        }
        let mut dir = base.clone();
        for part in path.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .map_err(io(format!("creating cgroup {}", dir.display())))?;
            }
            if *h == "cpuset" {
                let parent = dir.parent().unwrap_or(&base).to_path_buf();
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let value = std::fs::read_to_string(parent.join(f))
                        .map_err(io(format!("reading {}", parent.join(f).display())))?;
                    let own = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                    if own.trim().is_empty() {
                        std::fs::write(dir.join(f), value.trim())
                            .map_err(io(format!("writing {}", dir.join(f).display())))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The `cgroup.procs` files a process writes its pid into to join `path` everywhere.
pub(crate) fn procs_files(path: &str) -> Vec<PathBuf> {
    HIERARCHIES
        .iter()
        .map(|h| Path::new(ROOT).join(h).join(path).join("cgroup.procs"))
        .collect()
}

/// Every pid in `path` or below it, in any hierarchy.
pub fn pids(path: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for h in HIERARCHIES {
        let dir = Path::new(ROOT).join(h).join(path);
        walk(&dir, &mut |d| {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        });
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills every process below `path` (freezing nothing: SIGKILL until none is left, for up to
/// 10 s), then removes the folders, deepest first. Idempotent; a missing tree is fine.
pub(crate) fn sweep(path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = pids(path);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(cgroup = path, pids = ?left, "processes survive SIGKILL; cgroups left in place");
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in HIERARCHIES {
        let dir = Path::new(ROOT).join(h).join(path);
        let mut dirs = Vec::new();
        walk(&dir, &mut |d| dirs.push(d.to_path_buf()));
        // `walk` visits parents first: remove in reverse. A cgroup whose last process just
        // died may stay busy for a moment.
        for d in dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Whether anything of `path` is left in any hierarchy.
pub fn exists(path: &str) -> bool {
    HIERARCHIES
        .iter()
        .any(|h| Path::new(ROOT).join(h).join(path).exists())
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    f(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), f);
        }
    }
}
