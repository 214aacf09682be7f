//! Using a running cluster's API: kubectl with the admin kubeconfig (its stdout, or an error
//! with its stderr), `apply` and rollouts, and the namespaces and service accounts made on
//! demand, as the controller-manager would.

use crate::cluster::Cluster;
use crate::error::{Error, io};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use std::time::Duration;

impl Cluster {
    /// Runs kubectl with this cluster's admin kubeconfig; its stdout, or an error with its
    /// stderr.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, Error> {
        self.kubectl_with_input(args, None).await
    }

    /// `kubectl apply -f -` of `yaml`.
    pub async fn apply(&self, yaml: &str) -> Result<String, Error> {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml))
            .await
    }

    async fn kubectl_with_input(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, Error> {
        use tokio::io::AsyncWriteExt;
        let kubectl = self.assets().kubectl.clone().ok_or(Error::MissingTool {
            tool: "kubectl",
            hint: "KUBEBUILDER_ASSETS has no kubectl: add it there, or unset KUBEBUILDER_ASSETS to build it",
        })?;
        let mut cmd = tokio::process::Command::new(kubectl);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(io("starting kubectl"))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(text) = input {
                stdin
                    .write_all(text.as_bytes())
                    .await
                    .map_err(io("writing to kubectl"))?;
            }
            drop(stdin);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(io("waiting for kubectl"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: format!("kubectl {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Waits until Deployment `ns/name` has rolled out (every replica updated and
    /// available). When it has not, the error carries what explains why: the namespace's
    /// pods with their container states, its recent events, and the Deployment's last log
    /// lines.
    pub async fn wait_rollout(&self, ns: &str, name: &str, timeout: Duration) -> Result<(), Error> {
        let secs = format!("--timeout={}s", timeout.as_secs());
        let deployment = format!("deployment/{name}");
        match self
            .kubectl(&["-n", ns, "rollout", "status", &deployment, &secs])
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Command {
                command,
                status,
                stderr,
            }) => {
                let why = self.why_not_ready(ns, &deployment).await;
                Err(Error::Command {
                    command,
                    status,
                    stderr: format!("{stderr}\n{why}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// What kubectl says about a namespace whose Deployment did not become ready: each
    /// section is best effort (a failing one says so instead).
    async fn why_not_ready(&self, ns: &str, deployment: &str) -> String {
        let states = "custom-columns=POD:.metadata.name,PHASE:.status.phase,\
                      NODE:.spec.nodeName,READY:.status.containerStatuses[*].ready,\
                      RESTARTS:.status.containerStatuses[*].restartCount,\
                      WAITING:.status.containerStatuses[*].state.waiting.reason,\
                      TERMINATED:.status.containerStatuses[*].lastState.terminated.reason,\
                      INIT:.status.initContainerStatuses[*].state";
        let sections: [(&str, Vec<&str>); 4] = [
            ("pods", vec!["-n", ns, "get", "pods", "-o", states]),
            (
                "events",
                vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
            ),
            ("deployment", vec!["-n", ns, "describe", deployment]),
            (
                "logs",
                vec![
                    "-n",
                    ns,
                    "logs",
                    deployment,
                    "--all-containers",
                    "--tail=40",
                ],
            ),
        ];
        let mut out = String::new();
        for (what, args) in sections {
            let text = match self.kubectl(&args).await {
                Ok(text) => text,
                Err(e) => format!("(could not get them: {e})"),
            };
            out.push_str(&format!("--- {what} in {ns}:\n{}\n", text.trim_end()));
        }
        out
    }

    /// Creates the namespace unless it exists (with a `default` ServiceAccount, as the
    /// controller-manager would make).
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), Error> {
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        ignore_conflict(
            Api::<Namespace>::all(self.client())
                .create(&PostParams::default(), &ns)
                .await,
        )?;
        self.ensure_service_account(name, "default").await
    }

    /// Creates the ServiceAccount unless it exists.
    pub async fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace}
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        ignore_conflict(
            Api::<ServiceAccount>::namespaced(self.client(), namespace)
                .create(&PostParams::default(), &sa)
                .await,
        )
    }
}

pub(crate) fn ignore_conflict<T>(r: Result<T, kube::Error>) -> Result<(), Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
