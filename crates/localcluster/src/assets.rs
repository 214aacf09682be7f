//! The etcd, kube-apiserver and kubectl binaries a local cluster runs.
//!
//! `KUBEBUILDER_ASSETS` (a folder with `etcd` and `kube-apiserver`, as controller-runtime's
//! envtest uses) wins. Otherwise the binaries are built once from the Go module proxy at the
//! pinned versions below into `~/.cache/strait/k8s/<versions>/` (or `$STRAIT_CACHE_DIR`),
//! by `scripts/build-k8s.sh`. A file lock makes concurrent test binaries wait for one build
//! instead of racing; the first build prints its progress on stderr.

use crate::error::{Error, io};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// kube-apiserver and kubectl are built from `k8s.io/kubernetes` at this version.
pub const KUBERNETES_VERSION: &str = "v1.34.4";
/// etcd is built from `go.etcd.io/etcd/server/v3` at this version.
pub const ETCD_VERSION: &str = "v3.6.16";

/// CoreDNS, which real-node clusters run as their cluster DNS, is built at this version.
pub const COREDNS_VERSION: &str = "v1.15.0";
/// helm, which installs Strait's charts in the install-level tests, is built at this version.
pub const HELM_VERSION: &str = "v4.3.1";

const BUILD_SCRIPT: &str = include_str!("../scripts/build-k8s.sh");
const BUILD_NODE_SCRIPT: &str = include_str!("../scripts/build-node.sh");

/// Paths to the binaries a cluster needs.
#[derive(Clone, Debug)]
pub struct Assets {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    /// Built with the others; absent when `KUBEBUILDER_ASSETS` has none.
    pub kubectl: Option<PathBuf>,
}

/// What a real node and its add-ons run, beside [`Assets`]: kubelet, kube-proxy,
/// kube-controller-manager, kube-scheduler, CoreDNS and helm.
#[derive(Clone, Debug)]
pub struct NodeAssets {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub coredns: PathBuf,
    pub helm: PathBuf,
}

/// Returns the binaries, building them first if this machine has never built them.
pub fn ensure() -> Result<Assets, Error> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        return from_dir(Path::new(&dir));
    }
    let dir = cache_dir().join(format!("{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"));
    build_once(
        &dir,
        &Build {
            script: BUILD_SCRIPT,
            what: format!(
                "kube-apiserver {KUBERNETES_VERSION}, kubectl and etcd {ETCD_VERSION} (about 5 minutes on 2 cores)"
            ),
        },
    )?;
    from_dir(&dir)
}

/// Returns the node binaries, building them first if this machine has never built them
/// (`STRAIT_NODE_ASSETS`, a folder holding all six, overrides the build).
pub fn ensure_node() -> Result<NodeAssets, Error> {
    let dir = match std::env::var_os("STRAIT_NODE_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = cache_dir().join(format!(
                "node-{KUBERNETES_VERSION}-coredns-{COREDNS_VERSION}-helm-{HELM_VERSION}"
            ));
            build_once(
                &dir,
                &Build {
                    script: BUILD_NODE_SCRIPT,
                    what: format!(
                        "kubelet, kube-proxy, kube-controller-manager, kube-scheduler {KUBERNETES_VERSION}, \
                         CoreDNS {COREDNS_VERSION} and helm {HELM_VERSION} (about 6 minutes on 2 cores)"
                    ),
                },
            )?;
            dir
        }
    };
    let find = |binary: &'static str| {
        let p = dir.join(binary);
        if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::BadNodeAssets {
                dir: dir.clone(),
                binary,
            })
        }
    };
    Ok(NodeAssets {
        kubelet: find("kubelet")?,
        kube_proxy: find("kube-proxy")?,
        kube_controller_manager: find("kube-controller-manager")?,
        kube_scheduler: find("kube-scheduler")?,
        coredns: find("coredns")?,
        helm: find("helm")?,
    })
}

struct Build {
    script: &'static str,
    what: String,
}

/// Runs `build` into `dir` unless its `.complete` marker is there; a file lock makes
/// concurrent callers wait for one build.
fn build_once(dir: &Path, build: &Build) -> Result<(), Error> {
    let complete = dir.join(".complete");
    if complete.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let lock_path = dir.join(".build.lock");
    let lock = File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
    progress(&format!(
        "strait-localcluster: waiting for the build lock {}",
        lock_path.display()
    ));
    lock.lock()
        .map_err(io(format!("locking {}", lock_path.display())))?;
    // Another process may have finished the build while we waited.
    if !complete.exists() {
        run_build(dir, build)?;
    }
    drop(lock);
    Ok(())
}

/// Where built binaries are cached: `$STRAIT_CACHE_DIR`, `$XDG_CACHE_HOME/strait` or
/// `~/.cache/strait`, each with `k8s/` below.
pub fn cache_dir() -> PathBuf {
    let base = if let Some(d) = std::env::var_os("STRAIT_CACHE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("strait")
    } else if let Some(h) = std::env::var_os("HOME") {
        PathBuf::from(h).join(".cache").join("strait")
    } else {
        PathBuf::from("/var/cache/strait")
    };
    base.join("k8s")
}

fn from_dir(dir: &Path) -> Result<Assets, Error> {
    let find = |binary: &'static str| {
        let p = dir.join(binary);
        if is_executable(&p) {
            Ok(p)
        } else {
            Err(Error::BadAssets {
                dir: dir.to_path_buf(),
                binary,
            })
        }
    };
    let kubectl = dir.join("kubectl");
    Ok(Assets {
        etcd: find("etcd")?,
        kube_apiserver: find("kube-apiserver")?,
        kubectl: is_executable(&kubectl).then_some(kubectl),
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn run_build(out: &Path, build: &Build) -> Result<(), Error> {
    if Command::new("go").arg("version").output().is_err() {
        return Err(Error::MissingTool {
            tool: "go",
            hint: "install Go 1.24 or newer, or set KUBEBUILDER_ASSETS (and STRAIT_NODE_ASSETS) to folders with the prebuilt binaries",
        });
    }
    let log_path = out.join("build.log");
    let mut log =
        File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    progress(&format!(
        "strait-localcluster: building {} from the Go module proxy into {} (first run only). Log: {}",
        build.what,
        out.display(),
        log_path.display()
    ));
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(build.script)
        .env("OUT", out)
        .env("K8S_VERSION", KUBERNETES_VERSION)
        .env("ETCD_VERSION", ETCD_VERSION)
        .env("COREDNS_VERSION", COREDNS_VERSION)
        .env("HELM_VERSION", HELM_VERSION)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting the Kubernetes build"))?;
    // Stderr goes to the log as is; stdout's `==>` lines are progress for the user too.
    let stderr = child.stderr.take();
    let mut log_err = log.try_clone().map_err(io("cloning the build log"))?;
    let err_thread = std::thread::spawn(move || {
        if let Some(stderr) = stderr {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log_err, "{line}");
            }
        }
    });
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if line.starts_with("==>") {
                progress(&format!("strait-localcluster: {line}"));
            }
        }
    }
    let _ = err_thread.join();
    let status = child
        .wait()
        .map_err(io("waiting for the Kubernetes build"))?;
    if !status.success() {
        return Err(Error::Build {
            tail: crate::process::tail(&log_path, 30),
            log: log_path,
        });
    }
    Ok(())
}

/// Progress goes straight to the process's stderr, past the test harness's output capture.
fn progress(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_binaries_is_named_with_what_is_missing() {
        let dir = std::env::temp_dir().join(format!("strait-assets-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("has no executable `etcd`"), "{err}");
        assert!(err.contains("KUBEBUILDER_ASSETS"), "{err}");

        // A file that is there but not executable does not count either.
        std::fs::write(dir.join("etcd"), "#!/bin/sh\n").unwrap();
        assert!(from_dir(&dir).unwrap_err().to_string().contains("`etcd`"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("etcd"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("`kube-apiserver`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_build_script_derives_replaces_from_the_real_go_mod() {
        // The staging list must come from k8s.io/kubernetes' own go.mod, never a fixed list.
        assert!(BUILD_SCRIPT.contains("go mod download -json \"k8s.io/kubernetes@$K8S_VERSION\""));
        assert!(BUILD_SCRIPT.contains("./staging/"));
        assert!(BUILD_SCRIPT.contains("CGO_ENABLED=0"));
        assert!(BUILD_SCRIPT.contains("GOTOOLCHAIN=local"));
        assert!(BUILD_SCRIPT.contains("version.gitVersion=$K8S_VERSION"));
        for script in [BUILD_SCRIPT, BUILD_NODE_SCRIPT] {
            assert!(script.contains("./staging/"));
            assert!(script.contains("CGO_ENABLED=0"));
            assert!(script.contains("GOTOOLCHAIN=local"));
            assert!(script.contains("touch \"$OUT/.complete\""));
        }
        for cmd in [
            "kubelet",
            "kube-proxy",
            "kube-controller-manager",
            "kube-scheduler",
        ] {
            assert!(BUILD_NODE_SCRIPT.contains(&format!("k8s.io/kubernetes/cmd/{cmd}")));
        }
    }
}
