//! The images a node runs, imported into its containerd; nothing is ever pulled.
//!
//! `scripts/build-images` builds each image from its Dockerfile with buildah (no daemon) and
//! writes `<name>.tar` (an OCI archive of `strait.local/<name>:dev`) into the images folder:
//! `$STRAIT_IMAGES`, or `target/images` of this workspace.

use crate::error::{Error, io};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every image name is `strait.local/<name>`.
pub const REGISTRY: &str = "strait.local";
/// The tag local builds carry.
pub const TAG: &str = "dev";

/// The images every real-node cluster needs before it can run anything.
pub const REQUIRED: &[&str] = &["pause", "coredns"];

/// `strait.local/<name>:dev`
pub fn reference(name: &str) -> String {
    format!("{REGISTRY}/{name}:{TAG}")
}

/// The folder with the image archives.
pub fn dir() -> PathBuf {
    std::env::var_os("STRAIT_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/images"))
}

/// The archives in [`dir`], by image name; an error names what to run when a required one
/// is missing.
pub fn archives() -> Result<Vec<(String, PathBuf)>, Error> {
    archives_in(&dir())
}

fn archives_in(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "tar")
                && let Some(name) = path.file_stem().and_then(|s| s.to_str())
            {
                out.push((name.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    for required in REQUIRED {
        if !out.iter().any(|(n, _)| n == required) {
            return Err(Error::Images {
                what: format!(
                    "no image archive {required}.tar in {}: build the images with scripts/build-images \
                     (scripts/test does), or point STRAIT_IMAGES at a folder that has them",
                    dir.display()
                ),
            });
        }
    }
    Ok(out)
}

/// Imports each archive into the containerd listening on `socket`, in the CRI's namespace.
pub(crate) fn import(socket: &Path, archives: &[(String, PathBuf)]) -> Result<(), Error> {
    for (name, path) in archives {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "images", "import", "--base-name"])
            .arg(format!("{REGISTRY}/{name}"))
            .arg(path)
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::MissingPackage {
                        binary: "ctr",
                        package: "containerd",
                    }
                } else {
                    io("running ctr images import")(e)
                }
            })?;
        if !out.status.success() {
            return Err(Error::Images {
                what: format!(
                    "importing {} into the node's containerd failed ({}): {}{}",
                    path.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            });
        }
    }
    Ok(())
}

/// The image references the node's containerd holds.
pub(crate) fn list(socket: &Path) -> Vec<String> {
    Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_names_the_command_that_builds_it() {
        let dir = std::env::temp_dir().join(format!("strait-images-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = archives_in(&dir).unwrap_err().to_string();
        assert!(err.contains("pause.tar"), "{err}");
        assert!(err.contains("scripts/build-images"), "{err}");
        for name in ["pause", "coredns", "proxy"] {
            std::fs::write(dir.join(format!("{name}.tar")), b"").unwrap();
        }
        std::fs::write(dir.join("proxy.sha256"), b"").unwrap();
        let names: Vec<_> = archives_in(&dir)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["coredns", "pause", "proxy"]);
        assert_eq!(reference("proxy"), "strait.local/proxy:dev");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
