//! Cluster DNS: CoreDNS as a Deployment behind the `kube-dns` Service, from the locally built
//! `strait.local/coredns` image.
//!
//! It serves the cluster domain and the reverse zones from the API and nothing else: there
//! is no `forward`, so a name outside the cluster is refused, never sent to the machine's
//! resolver. It listens on 1053 (no capability needed to bind) behind the Service's port 53,
//! as a non-root user with a read-only root filesystem.

use std::net::Ipv4Addr;

/// The manifests, for `kubectl apply -f -`.
pub fn manifests(service_ip: Ipv4Addr, cluster_domain: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes {cluster_domain} in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }}
        cache 30
        loop
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {{name: dns, containerPort: 1053, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
        securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
        resources:
          requests: {{cpu: 10m, memory: 32Mi}}
          limits: {{memory: 128Mi}}
        livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10, failureThreshold: 5}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes:
      - name: config
        configMap: {{name: coredns, items: [{{key: Corefile, path: Corefile}}]}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {service_ip}
  ports:
  - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coredns_answers_for_the_cluster_only_and_never_forwards() {
        let m = manifests(
            Ipv4Addr::new(198, 19, 64, 10),
            "cluster.local",
            "strait.local/coredns:dev",
        );
        assert!(m.contains("kubernetes cluster.local in-addr.arpa ip6.arpa"));
        assert!(
            !m.contains("forward"),
            "a forward would reach the machine's resolver"
        );
        assert!(m.contains("clusterIP: 198.19.64.10"));
        assert!(m.contains("imagePullPolicy: IfNotPresent"));
        assert!(m.contains("runAsNonRoot: true"));
        // Every document parses as YAML with a kind.
        for doc in m.split("\n---\n") {
            let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            assert!(v["kind"].is_string(), "{doc}");
        }
    }
}
