//! What the tests of policy share: the policy CRDs, installed from their Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use std::time::Duration;
use strait_k8s_api::policy::{
    AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication, Server,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WAIT: Duration = Duration::from_secs(30);

/// Applies Server, AuthorizationPolicy, MeshTLSAuthentication and NetworkAuthentication and
/// waits until they are served.
pub async fn install_crds(client: &kube::Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        Server::crd(),
        AuthorizationPolicy::crd(),
        MeshTLSAuthentication::crd(),
        NetworkAuthentication::crd(),
    ] {
        let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
        crds.patch(
            &name,
            &PatchParams::apply("strait-e2e").force(),
            &Patch::Apply(crd),
        )
        .await?;
    }
    // Served once a list answers.
    let servers: Api<Server> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    while servers.list(&ListParams::default()).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            return Err("the policy CRDs were not served in time".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Creates the namespaced object `v` (in the namespace its metadata names).
pub async fn create<K>(client: &kube::Client, v: serde_json::Value) -> Result<K, Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let ns = v["metadata"]["namespace"]
        .as_str()
        .ok_or("the object names no namespace")?
        .to_owned();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(v)?)
        .await?)
}
