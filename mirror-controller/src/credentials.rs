//! The credentials watch of one Link: the Secret `clusterCredentialsSecret` names, and on
//! every change of its `kubeconfig` a new remote session (the old one is stopped).
//!
//! ```text
//!  Secret (by name) ──► kubeconfig hash changed? ──► client ──► session (session.rs) ──► RemoteView
//!                        missing / unusable ──► status.linkError (the running session stays)
//!                                                        └─► token renewal (renew.rs), stopped with the session
//! ```

use crate::Context;
use crate::plan::Plan;
use crate::session::RemoteView;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::Kubeconfig;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;
use strait_k8s_api::LinkStatus;
use tokio::sync::{Notify, watch};

/// Why the credentials cannot make a remote client.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the credentials Secret has no key `kubeconfig`")]
    NoKubeconfig,
    #[error("the kubeconfig in the credentials Secret does not parse")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("building a client from the credentials kubeconfig")]
    RemoteClient(#[source] kube::Error),
}

impl CredentialsError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        "credentials"
    }
}

/// Watches the credentials Secret; on every change of its kubeconfig, reconnects.
pub(crate) async fn run(
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    remote: watch::Sender<Option<RemoteView>>,
    status: watch::Sender<LinkStatus>,
    trigger: Arc<Notify>,
) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cfg =
        watcher::Config::default().fields(&format!("metadata.name={}", plan.credentials_secret));
    let mut events = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
    // The session (and its token renewal) runs in its own task; the guard aborts it when
    // this task is aborted too (a dropped JoinHandle alone would leave it running against
    // the remote API).
    let mut current: Option<(u64, AbortOnDrop, Option<AbortOnDrop>)> = None;
    let set_error = |e: Option<String>| {
        status.send_if_modified(|s| {
            let changed = s.link_error != e;
            s.link_error = e.clone();
            changed
        });
    };
    while let Some(ev) = events.next().await {
        let secret = match ev {
            Ok(Event::Apply(s) | Event::InitApply(s)) => s,
            Ok(Event::Delete(_)) => {
                set_error(Some(format!(
                    "credentials Secret {} is missing",
                    plan.credentials_secret
                )));
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(%link, error = %e, "watching the credentials Secret failed");
                continue;
            }
        };
        let kubeconfig = secret
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .map(|b| b.0.clone());
        let hash = crate::renew::kubeconfig_hash(&kubeconfig);
        if current.as_ref().is_some_and(|(h, _, _)| *h == hash) {
            continue;
        }
        match remote_client(kubeconfig).await {
            Ok((client, kc)) => {
                set_error(None);
                if current.take().is_some() {
                    tracing::info!(%link, "credentials changed; reconnecting");
                }
                let renewal = crate::renew::Renewal {
                    link: link.clone(),
                    secret: plan.credentials_secret.clone(),
                    kubeconfig: kc,
                    hash,
                };
                let renewal = crate::renew::start(&ctx, renewal, client.clone()).map(AbortOnDrop);
                let (view, session) = crate::session::session(
                    ctx.clone(),
                    link.clone(),
                    plan.clone(),
                    client,
                    status.clone(),
                    trigger.clone(),
                );
                remote.send_replace(Some(view));
                current = Some((hash, AbortOnDrop(tokio::spawn(session)), renewal));
                trigger.notify_one();
            }
            Err(e) => {
                // Never log the kubeconfig; the error names only the step.
                tracing::warn!(%link, error = %e, "credentials are unusable");
                ctx.metrics.error(&link, e.metric_label());
                set_error(Some(e.to_string()));
            }
        }
    }
    drop(current);
}

/// Aborts its task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client, and the parsed kubeconfig it was made from (for its token's renewal).
async fn remote_client(
    kubeconfig: Option<Vec<u8>>,
) -> Result<(kube::Client, Kubeconfig), CredentialsError> {
    let bytes = kubeconfig.ok_or(CredentialsError::NoKubeconfig)?;
    let text = String::from_utf8_lossy(&bytes);
    let kc = Kubeconfig::from_yaml(&text).map_err(CredentialsError::Kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(
        kc.clone(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(CredentialsError::Kubeconfig)?;
    let client = kube::Client::try_from(cfg).map_err(CredentialsError::RemoteClient)?;
    Ok((client, kc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unusable_credentials_name_only_the_step() {
        let Err(e) = remote_client(None).await else {
            panic!("no kubeconfig makes no client");
        };
        assert!(matches!(e, CredentialsError::NoKubeconfig));
        let secret = b"apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cret}}]\nclusters: 7\n";
        let Err(e) = remote_client(Some(secret.to_vec())).await else {
            panic!("a kubeconfig that does not parse makes no client");
        };
        assert!(matches!(e, CredentialsError::Kubeconfig(_)), "{e:?}");
        assert_eq!(e.metric_label(), "credentials");
        assert!(!e.to_string().contains("s3cret"));
    }
}
