use std::path::PathBuf;

/// What can go wrong while bringing up or using a local cluster. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "local clusters need root (network namespaces, veths and routes); running as uid {uid}: run the tests as root"
    )]
    NotRoot { uid: u32 },

    #[error("`{tool}` was not found on PATH: {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },

    #[error(
        "KUBEBUILDER_ASSETS={dir:?} has no executable `{binary}`: point it at a folder with etcd and kube-apiserver, or unset it to build them"
    )]
    BadAssets { dir: PathBuf, binary: &'static str },

    #[error(
        "{dir:?} has no executable `{binary}`: point STRAIT_NODE_ASSETS at a folder with kubelet, kube-proxy, kube-controller-manager, kube-scheduler, coredns and helm, or unset it to build them"
    )]
    BadNodeAssets { dir: PathBuf, binary: &'static str },

    #[error("cgroups: {what}")]
    Cgroup { what: String },

    #[error(
        "`{binary}` was not found: a real node needs Debian's `{package}` (the README's test command installs it: apt-get install {package})"
    )]
    MissingPackage {
        binary: &'static str,
        package: &'static str,
    },

    #[error("{what}")]
    Images { what: String },

    #[error(
        "node {node} did not become Ready within {secs}s ({reason}); last lines of its logs:\n{tails}"
    )]
    NodeNotReady {
        node: String,
        secs: u64,
        reason: String,
        tails: String,
    },

    #[error("building the Kubernetes binaries failed (log: {log:?}); last lines:\n{tail}")]
    Build { log: PathBuf, tail: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("{process} exited before it was ready ({status}); last lines of {log:?}:\n{tail}")]
    Exited {
        process: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    #[error("{process} did not become ready within {secs}s; last lines of {log:?}:\n{tail}")]
    NotReady {
        process: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },

    #[error("no free port on 127.0.0.1: {0}")]
    NoPort(#[source] std::io::Error),

    #[error(
        "all {0} cluster slots are in use by other runs; wait for them or remove stale /run/strait locks"
    )]
    NoSlot(usize),

    #[error("certificate generation failed: {0}")]
    Pki(#[from] rcgen::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("cluster {cluster}: no pod addresses left in its /18")]
    AddressesExhausted { cluster: String },
}

impl Error {
    /// Whether a process exited because a port it was to listen on was taken.
    pub fn is_port_taken(&self) -> bool {
        matches!(self, Error::Exited { tail, .. } if tail.contains("address already in use"))
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_told_from_other_exits() {
        let exited = |tail: &str| Error::Exited {
            process: "kube-apiserver of cluster west".into(),
            status: "exit status: 1".into(),
            log: PathBuf::from("kube-apiserver.log"),
            tail: tail.into(),
        };
        assert!(exited("listen tcp 127.0.0.1:45181: bind: address already in use").is_port_taken());
        assert!(!exited("open /tmp/apiserver.crt: no such file or directory").is_port_taken());
        assert!(!Error::NoSlot(4).is_port_taken());
    }
}
