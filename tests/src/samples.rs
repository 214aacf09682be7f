//! The sample workloads of the demo and the real-node suite, as manifests: Deployments of the
//! `sample` image (`strait-sample`, see [`crate::tool`]), each with its own
//! ServiceAccount (so each has its own mesh identity), and their Services. Every container
//! runs as non-root on a read-only root filesystem with no capabilities.
//!
//! ```text
//! Workload::new("shop", "web", &["serve-echo-http", "8080"]).port("http", 8080).yaml()
//! service("shop", "web", &[("http", 80, "http")])
//! ```

use strait_localcluster::node::images;

/// The sample program's path in its image (images/sample/Dockerfile).
pub const SAMPLE: &str = "/usr/local/bin/strait-sample";

/// A Namespace; `injected` annotates it so every pod gets the proxy.
pub fn namespace(ns: &str, injected: bool) -> String {
    let annotations = if injected {
        "\n  annotations: {strait.dev/inject: enabled}"
    } else {
        ""
    };
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}{annotations}\n")
}

/// One Deployment of the sample image and its ServiceAccount.
#[derive(Clone, Debug)]
pub struct Workload {
    ns: String,
    name: String,
    args: Vec<String>,
    port: Option<(String, u16)>,
    tcp_only: bool,
    replicas: u32,
    pod_annotations: Vec<(String, String)>,
    /// A StatefulSet governed by this headless Service, instead of a Deployment.
    stateful: Option<String>,
}

impl Workload {
    /// `name` in `ns`, running `strait-sample ARGS`, one replica, ServiceAccount `name`.
    pub fn new(ns: &str, name: &str, args: &[&str]) -> Self {
        Self {
            ns: ns.into(),
            name: name.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            port: None,
            tcp_only: false,
            replicas: 1,
            pod_annotations: Vec::new(),
            stateful: None,
        }
    }

    /// A StatefulSet (pods `<name>-0`, `<name>-1`, … started in parallel) whose pods get
    /// hostnames under headless Service `service` ([`headless_service`]).
    pub fn stateful(mut self, service: &str) -> Self {
        self.stateful = Some(service.into());
        self
    }

    /// A named container port, with an HTTP readiness probe on it.
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.port = Some((name.into(), port));
        self
    }

    /// A named container port that speaks raw TCP: the readiness probe only connects, and the
    /// pod's proxy treats the port as opaque.
    pub fn tcp_port(mut self, name: &str, port: u16) -> Self {
        self.tcp_only = true;
        self.port = Some((name.into(), port));
        self.annotation("strait.dev/opaque-ports", &port.to_string())
    }

    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = n;
        self
    }

    /// An annotation on the pod template.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.pod_annotations.push((key.into(), value.into()));
        self
    }

    pub fn yaml(&self) -> String {
        let Self {
            ns, name, replicas, ..
        } = self;
        let sample = images::reference("sample");
        let args = self
            .args
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let annotations = self
            .pod_annotations
            .iter()
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ports = self.port.as_ref().map_or(String::new(), |(p, n)| {
            let probe = if self.tcp_only {
                format!("tcpSocket: {{port: {p}}}")
            } else {
                // Not `/`: a probe path is a route every client may use (as in Linkerd), so
                // a probe on `/` would open the whole port to anyone.
                format!("httpGet: {{path: /ready, port: {p}}}")
            };
            format!(
                "\n        ports: [{{name: {p}, containerPort: {n}}}]\n        readinessProbe: {{{probe}, periodSeconds: 1}}"
            )
        });
        let (kind, stateful) = match &self.stateful {
            None => ("Deployment", String::new()),
            Some(svc) => (
                "StatefulSet",
                format!("\n  serviceName: {svc}\n  podManagementPolicy: Parallel"),
            ),
        };
        format!(
            r#"---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {ns}}}
---
apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}, namespace: {ns}}}
spec:{stateful}
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{annotations}}}
    spec:
      serviceAccountName: {name}
      terminationGracePeriodSeconds: 1
      containers:
      - name: {name}
        image: {sample}
        imagePullPolicy: IfNotPresent
        args: [{args}]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]{ports}
        securityContext: {{runAsNonRoot: true, runAsUser: 1000, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#
        )
    }
}

/// A ClusterIP Service selecting `app: NAME`, with ports (name, port, target port name).
pub fn service(ns: &str, name: &str, ports: &[(&str, u16, &str)]) -> String {
    service_of(ns, name, name, ports)
}

/// A ClusterIP Service `name` selecting the pods of `app`.
pub fn service_of(ns: &str, name: &str, app: &str, ports: &[(&str, u16, &str)]) -> String {
    let ports = ports
        .iter()
        .map(|(n, p, t)| format!("{{name: {n}, port: {p}, targetPort: {t}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {app}}}\n  ports: [{ports}]\n"
    )
}

/// A headless Service (`clusterIP: None`) selecting `app: NAME`: a StatefulSet's, whose pods
/// get DNS names `<pod>.<name>.<ns>.svc...`.
pub fn headless_service(ns: &str, name: &str, ports: &[(&str, u16, &str)]) -> String {
    service(ns, name, ports).replacen("spec:\n", "spec:\n  clusterIP: None\n", 1)
}

/// What east serves in the demo and the suite: `web` (HTTP/1 and HTTP/2 on port 80),
/// `greeter` (gRPC on 8080) and `echo` (raw TCP on 9000), each with its Service.
pub fn servers(ns: &str) -> String {
    [
        Workload::new(ns, "web", &["serve-echo-http", "8080"])
            .port("http", 8080)
            .yaml(),
        service(ns, "web", &[("http", 80, "http")]),
        Workload::new(ns, "greeter", &["serve-echo-http", "8080"])
            .port("grpc", 8080)
            .yaml(),
        service(ns, "greeter", &[("grpc", 8080, "grpc")]),
        Workload::new(ns, "echo", &["serve-tcp", "9000"])
            .tcp_port("tcp", 9000)
            .yaml(),
        service(ns, "echo", &[("tcp", 9000, "tcp")]),
    ]
    .concat()
}

/// A client to run `strait-sample` commands in (`kubectl exec … -c client`).
pub fn client(ns: &str) -> String {
    Workload::new(ns, "client", &["serve", "8081"]).yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_port_is_opaque_and_probed_by_connecting() {
        let y = Workload::new("shop", "echo", &["serve-tcp", "9000"])
            .tcp_port("tcp", 9000)
            .yaml();
        assert!(y.contains(r#"strait.dev/opaque-ports: "9000""#), "{y}");
        assert!(y.contains("tcpSocket: {port: tcp}"), "{y}");
        assert!(y.contains(r#"args: ["serve-tcp", "9000"]"#), "{y}");
    }

    #[test]
    fn a_stateful_workload_is_a_statefulset_under_its_headless_service() {
        let y = Workload::new("shop", "db", &["serve-echo-http", "8080"])
            .replicas(3)
            .stateful("db")
            .yaml();
        assert!(y.contains("kind: StatefulSet"), "{y}");
        assert!(
            y.contains("serviceName: db\n  podManagementPolicy: Parallel\n  replicas: 3"),
            "{y}"
        );
        let svc = headless_service("shop", "db", &[("http", 80, "http")]);
        assert!(
            svc.contains("spec:\n  clusterIP: None\n  selector: {app: db}"),
            "{svc}"
        );
    }
}
