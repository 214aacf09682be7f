//! The mutation itself: what injection adds to a pod, and how it is taken away again.

use crate::{Annotations, Config, Error};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use strait_core::{labels, ports};

/// The init container that installs the interception rules.
pub const PROXY_INIT_CONTAINER: &str = "strait-proxy-init";
/// The proxy, a native sidecar (an init container with `restartPolicy: Always`).
pub const PROXY_CONTAINER: &str = "strait-proxy";
const TOKEN_VOLUME: &str = "strait-identity-token";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "strait-identity-token";
const IDENTITY_AUDIENCE: &str = "identity.l5d.io";
const TOKEN_SECONDS: i64 = 86_400;

/// Whether the pod already runs Strait's proxy (as a sidecar, or as an old-style container).
pub fn is_injected(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
            .any(|c| c.name == PROXY_CONTAINER)
    })
}

/// The pod with the proxy added. Bad annotation values are errors naming the annotation; a
/// pod that already has the proxy comes back unchanged.
pub fn inject(pod: &Pod, cfg: &Config) -> Result<Pod, Error> {
    if is_injected(pod) {
        return Ok(pod.clone());
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let a = Annotations::parse(&annotations)?;
    let mut pod = pod.clone();
    let spec = pod
        .spec
        .as_mut()
        .ok_or_else(|| Error::Pod("it has no spec".into()))?;
    let mut init = vec![proxy_init(cfg, &a), proxy(cfg, &a)];
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| v.name != TOKEN_VOLUME && v.name != "strait-identity");
    volumes.push(token_volume());
    volumes.push(Volume {
        name: "strait-identity".into(),
        empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let meta = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    meta.insert(labels::PROXY_VERSION.into(), cfg.proxy_version.clone());
    if !a.opaque_ports.is_empty() {
        // The destination service reads it from the pod; keep it in the normal form.
        meta.insert(labels::OPAQUE_PORTS.into(), a.opaque_ports.join(","));
    }
    Ok(pod)
}

/// The webhook's answer: the JSON patch from `pod` to `inject(pod)`.
pub fn patch(pod: &Pod, cfg: &Config) -> Result<json_patch::Patch, Error> {
    let before = serde_json::to_value(pod).map_err(|e| Error::Pod(e.to_string()))?;
    let after = serde_json::to_value(inject(pod, cfg)?).map_err(|e| Error::Pod(e.to_string()))?;
    Ok(json_patch::diff(&before, &after))
}

/// The pod without anything injection added (and without the injection annotation).
pub fn uninject(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    if let Some(spec) = pod.spec.as_mut() {
        strip(spec);
    }
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(labels::PROXY_VERSION);
        a.remove(labels::INJECT);
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    pod
}

fn strip(spec: &mut PodSpec) {
    if let Some(init) = spec.init_containers.as_mut() {
        init.retain(|c| c.name != PROXY_CONTAINER && c.name != PROXY_INIT_CONTAINER);
        if init.is_empty() {
            spec.init_containers = None;
        }
    }
    spec.containers.retain(|c| c.name != PROXY_CONTAINER);
    if let Some(v) = spec.volumes.as_mut() {
        v.retain(|v| v.name != TOKEN_VOLUME && v.name != "strait-identity");
        if v.is_empty() {
            spec.volumes = None;
        }
    }
}

/// The worker threads a CPU limit (`500m`, `2`, `1.5`) allows: rounded up, at least one.
fn cores_for(limit: &str) -> Option<u64> {
    let millis = match limit.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok()?,
        None => limit.parse::<f64>().ok()? * 1000.0,
    };
    (millis.is_finite() && millis > 0.0).then(|| ((millis / 1000.0).ceil() as u64).max(1))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn proxy_init(cfg: &Config, a: &Annotations) -> Container {
    Container {
        name: PROXY_INIT_CONTAINER.into(),
        image: Some(cfg.proxy_init_image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        env: Some(vec![
            env("STRAIT_PROXY_UID", cfg.proxy_uid.to_string()),
            env(
                "STRAIT_PROXY_INBOUND_SKIP_PORTS",
                a.skip_inbound_ports.join(","),
            ),
            env(
                "STRAIT_PROXY_OUTBOUND_SKIP_PORTS",
                a.skip_outbound_ports.join(","),
            ),
        ]),
        // The only container of the pod with network privileges: it writes iptables rules
        // in the pod's namespace and exits.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        resources: Some(resources(&crate::Resources {
            cpu_request: Some("10m".into()),
            cpu_limit: None,
            memory_request: Some("10Mi".into()),
            memory_limit: Some("50Mi".into()),
        })),
        volume_mounts: Some(vec![VolumeMount {
            // iptables takes its lock under /run; the root filesystem stays read-only.
            name: "strait-identity".into(),
            mount_path: "/run".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn proxy(cfg: &Config, a: &Annotations) -> Container {
    let local_name = format!(
        "$(_STRAIT_SA).$(_STRAIT_NS).serviceaccount.identity.{}.{}",
        cfg.control_namespace, cfg.trust_domain
    );
    let mut env_vars = vec![
        field("_STRAIT_SA", "spec.serviceAccountName"),
        field("_STRAIT_NS", "metadata.namespace"),
        field("POD_NAME", "metadata.name"),
        env(
            "STRAIT_PROXY_LOG",
            a.log_level.clone().unwrap_or_else(|| cfg.log_level.clone()),
        ),
        env(
            "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS_PEM",
            cfg.trust_anchors_pem.clone(),
        ),
        env("STRAIT_PROXY_IDENTITY_SVC_ADDR", cfg.identity_addr.clone()),
        env("STRAIT_PROXY_IDENTITY_SVC_NAME", cfg.identity_name.clone()),
        env("STRAIT_PROXY_IDENTITY_LOCAL_NAME", local_name),
        env(
            "STRAIT_PROXY_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        env(
            "STRAIT_PROXY_DESTINATION_ADDR",
            cfg.destination_addr.clone(),
        ),
        env(
            "STRAIT_PROXY_DESTINATION_SVC_NAME",
            cfg.destination_name.clone(),
        ),
        // Inbound and outbound policy, asked of destination's address (it serves policy too).
        env("STRAIT_PROXY_POLICY_WORKLOAD", "$(_STRAIT_NS):$(POD_NAME)"),
        env(
            "STRAIT_PROXY_INBOUND_DEFAULT_POLICY",
            a.default_inbound_policy
                .clone()
                .unwrap_or_else(|| cfg.default_inbound_policy.clone()),
        ),
    ];
    if !a.opaque_ports.is_empty() {
        env_vars.push(env("STRAIT_PROXY_OPAQUE_PORTS", a.opaque_ports.join(",")));
    }
    let probe = |path: &str| Probe {
        http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(ports::ADMIN)),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    };
    let mut res = cfg.resources.clone();
    let r = &a.resources;
    for (mine, over) in [
        (&mut res.cpu_request, &r.cpu_request),
        (&mut res.cpu_limit, &r.cpu_limit),
        (&mut res.memory_request, &r.memory_request),
        (&mut res.memory_limit, &r.memory_limit),
    ] {
        if over.is_some() {
            mine.clone_from(over);
        }
    }
    // As Linkerd's injector sets the proxy's cores from its CPU limit: one worker thread
    // per CPU the limit allows, a current-thread runtime under one CPU.
    if let Some(cores) = res.cpu_limit.as_deref().and_then(cores_for) {
        env_vars.push(env("STRAIT_PROXY_CORES", cores.to_string()));
    }
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(cfg.proxy_image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        // A native sidecar: started before the app's containers, stopped after them, and
        // not waited for when a Job's containers are done.
        restart_policy: Some("Always".into()),
        env: Some(env_vars),
        ports: Some(vec![
            port("strait-proxy", ports::PROXY_INBOUND),
            port("strait-admin", ports::ADMIN),
        ]),
        liveness_probe: Some(probe("/live")),
        readiness_probe: Some(probe("/ready")),
        // The app's containers start once the proxy answers /ready (it has its certificate).
        startup_probe: Some(Probe {
            failure_threshold: Some(120),
            period_seconds: Some(1),
            ..probe("/ready")
        }),
        resources: Some(resources(&res)),
        security_context: Some(SecurityContext {
            run_as_user: Some(cfg.proxy_uid),
            run_as_group: Some(cfg.proxy_uid),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "strait-identity".into(),
                mount_path: "/var/run/strait/identity".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

fn port(name: &str, port: u16) -> k8s_openapi::api::core::v1::ContainerPort {
    k8s_openapi::api::core::v1::ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn resources(r: &crate::Resources) -> ResourceRequirements {
    let map = |cpu: &Option<String>, memory: &Option<String>| {
        let mut m = BTreeMap::new();
        if let Some(c) = cpu {
            m.insert("cpu".to_owned(), Quantity(c.clone()));
        }
        if let Some(mem) = memory {
            m.insert("memory".to_owned(), Quantity(mem.clone()));
        }
        (!m.is_empty()).then_some(m)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..Default::default()
    }
}

fn token_volume() -> Volume {
    use k8s_openapi::api::core::v1::{
        ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
    };
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(IDENTITY_AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: TOKEN_FILE.into(),
                }),
                ..Default::default()
            }]),
            default_mode: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, decide};

    #[test]
    fn cores_round_a_cpu_limit_up() {
        for (limit, cores) in [
            ("100m", Some(1)),
            ("1000m", Some(1)),
            ("1001m", Some(2)),
            ("1", Some(1)),
            ("1.5", Some(2)),
            ("4", Some(4)),
            ("0", None),
            ("lots", None),
        ] {
            assert_eq!(cores_for(limit), cores, "{limit}");
        }
    }

    pub(crate) fn config() -> Config {
        Config {
            proxy_image: "strait.local/proxy:dev".into(),
            proxy_init_image: "strait.local/proxy-init:dev".into(),
            image_pull_policy: "IfNotPresent".into(),
            proxy_version: "0.1.0".into(),
            control_namespace: "strait".into(),
            trust_domain: "cluster.local".into(),
            identity_addr: "strait-identity.strait.svc.cluster.local:8080".into(),
            identity_name: "strait-identity.strait.serviceaccount.identity.strait.cluster.local"
                .into(),
            destination_addr: "strait-dst.strait.svc.cluster.local:8086".into(),
            destination_name:
                "strait-destination.strait.serviceaccount.identity.strait.cluster.local".into(),
            trust_anchors_pem: "-----BEGIN CERTIFICATE-----\n...\n".into(),
            proxy_uid: 2102,
            resources: crate::Resources {
                cpu_request: Some("10m".into()),
                memory_request: Some("20Mi".into()),
                memory_limit: Some("250Mi".into()),
                cpu_limit: None,
            },
            log_level: "warn".into(),
            default_inbound_policy: "all-unauthenticated".into(),
        }
    }

    fn app(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "annotations": annotations},
            "spec": {
                "serviceAccountName": "web",
                "initContainers": [{"name": "migrate", "image": "app"}],
                "containers": [{"name": "app", "image": "app"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        }))
        .unwrap()
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)?
            .value
            .as_deref()
    }

    #[test]
    fn injection_adds_init_then_sidecar_before_the_apps_own_init() {
        let pod = inject(&app(serde_json::json!({})), &config()).unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let init: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, [PROXY_INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
        let proxy = &spec.init_containers.as_ref().unwrap()[1];
        assert_eq!(
            proxy.restart_policy.as_deref(),
            Some("Always"),
            "a native sidecar"
        );
        let sc = proxy.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(2102));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert!(
            sc.capabilities.as_ref().unwrap().add.is_none(),
            "the proxy adds no capability"
        );
        let init_sc = spec.init_containers.as_ref().unwrap()[0]
            .security_context
            .as_ref()
            .unwrap();
        assert_eq!(
            init_sc.capabilities.as_ref().unwrap().add.as_deref(),
            Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
        );
        assert_eq!(
            env_of(proxy, "STRAIT_PROXY_IDENTITY_LOCAL_NAME"),
            Some("$(_STRAIT_SA).$(_STRAIT_NS).serviceaccount.identity.strait.cluster.local")
        );
        assert_eq!(env_of(proxy, "STRAIT_PROXY_LOG"), Some("warn"));
        // Policy is on: the proxy names its pod to the policy service (both variables it
        // expands are defined before it).
        assert_eq!(
            env_of(proxy, "STRAIT_PROXY_POLICY_WORKLOAD"),
            Some("$(_STRAIT_NS):$(POD_NAME)")
        );
        let names: Vec<_> = proxy
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let at = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(at("_STRAIT_NS") < at("STRAIT_PROXY_POLICY_WORKLOAD"));
        assert!(at("POD_NAME") < at("STRAIT_PROXY_POLICY_WORKLOAD"));
        let volumes: Vec<_> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["data", TOKEN_VOLUME, "strait-identity"]);
        let token = spec.volumes.as_ref().unwrap()[1]
            .projected
            .as_ref()
            .unwrap();
        let projection = token.sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some(IDENTITY_AUDIENCE));
        assert_eq!(
            pod.metadata
                .annotations
                .as_ref()
                .unwrap()
                .get(labels::PROXY_VERSION)
                .map(String::as_str),
            Some("0.1.0"),
            "the destination service knows the pod is meshed"
        );
        assert!(is_injected(&pod));
        assert_eq!(
            decide(&pod, &BTreeMap::new()),
            Decision::Skip(crate::SkipReason::AlreadyInjected)
        );
    }

    #[test]
    fn annotations_configure_the_proxy_and_its_init() {
        let pod = inject(
            &app(serde_json::json!({
                labels::SKIP_INBOUND_PORTS: "25",
                labels::SKIP_OUTBOUND_PORTS: "3306,5432",
                labels::OPAQUE_PORTS: "9000",
                labels::PROXY_CPU_LIMIT: "500m",
                labels::PROXY_MEMORY_REQUEST: "64Mi",
                labels::PROXY_LOG_LEVEL: "debug",
                labels::DEFAULT_INBOUND_POLICY: "cluster-authenticated",
            })),
            &config(),
        )
        .unwrap();
        let init = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
        assert_eq!(
            env_of(&init[0], "STRAIT_PROXY_INBOUND_SKIP_PORTS"),
            Some("25")
        );
        assert_eq!(
            env_of(&init[0], "STRAIT_PROXY_OUTBOUND_SKIP_PORTS"),
            Some("3306,5432")
        );
        assert_eq!(env_of(&init[1], "STRAIT_PROXY_OPAQUE_PORTS"), Some("9000"));
        assert_eq!(env_of(&init[1], "STRAIT_PROXY_LOG"), Some("debug"));
        assert_eq!(
            env_of(&init[1], "STRAIT_PROXY_INBOUND_DEFAULT_POLICY"),
            Some("cluster-authenticated")
        );
        let r = init[1].resources.as_ref().unwrap();
        assert_eq!(r.limits.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(
            env_of(&init[1], "STRAIT_PROXY_CORES"),
            Some("1"),
            "half a CPU: a current-thread runtime"
        );
        assert_eq!(
            r.limits.as_ref().unwrap()["memory"].0,
            "250Mi",
            "install default kept"
        );
        assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "64Mi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "10m");
    }

    #[test]
    fn a_bad_annotation_refuses_the_pod_by_name() {
        let err = inject(
            &app(serde_json::json!({labels::PROXY_MEMORY_LIMIT: "lots"})),
            &config(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(labels::PROXY_MEMORY_LIMIT),
            "{err}"
        );
    }

    #[test]
    fn injection_is_idempotent_and_uninject_restores_the_pod() {
        let original = app(serde_json::json!({labels::INJECT: "enabled"}));
        let once = inject(&original, &config()).unwrap();
        let twice = inject(&once, &config()).unwrap();
        assert_eq!(once, twice);
        assert!(
            patch(&once, &config()).unwrap().0.is_empty(),
            "nothing to patch twice"
        );
        let back = uninject(&once);
        let mut expected = original.clone();
        expected.metadata.annotations = None;
        assert_eq!(back, expected);
        assert!(!patch(&original, &config()).unwrap().0.is_empty());
    }
}
