{{/* Labels every object of the chart carries. Argument: the component name. */}}
{{- define "strait.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: strait
{{- end }}

{{/* <registry>/<name>:<tag>. Argument: (list $ "name"). */}}
{{- define "strait.image" -}}
{{- $v := index . 0 -}}
{{ printf "%s/%s:%s" $v.Values.image.registry (index . 1) $v.Values.image.tag }}
{{- end }}

{{/* The trust anchors, or a failure that says what to do. */}}
{{- define "strait.trustAnchors" -}}
{{- required "identityTrustAnchorsPEM is required: pass --set-file identityTrustAnchorsPEM=ca.crt (make one with `strait identity --out DIR`)" .Values.identityTrustAnchorsPEM -}}
{{- end }}

{{/* Restricted security context of every container. Argument: the uid. */}}
{{- define "strait.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
  - ALL
readOnlyRootFilesystem: true
runAsGroup: {{ . }}
runAsNonRoot: true
runAsUser: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod security context. Argument: the uid. */}}
{{- define "strait.podSecurityContext" -}}
fsGroup: {{ . }}
runAsGroup: {{ . }}
runAsNonRoot: true
runAsUser: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Anti-affinity over nodes, for replicas > 1. Argument: the app name. */}}
{{- define "strait.antiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
  - podAffinityTerm:
      labelSelector:
        matchLabels:
          app.kubernetes.io/name: {{ . }}
      topologyKey: kubernetes.io/hostname
    weight: 100
{{- end }}

{{/* A PodDisruptionBudget, for replicas > 1. Argument: (list namespace name). */}}
{{- define "strait.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ index . 1 }}
  namespace: {{ index . 0 }}
  labels:
    {{- include "strait.labels" (index . 1) | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ index . 1 }}
{{- end }}

{{/* The namespaces Strait's admission webhooks act in: not kube-system, not the control
plane's, none labelled strait.dev/admission-webhooks: disabled. Argument: the namespace. */}}
{{- define "strait.injectableNamespaces" -}}
matchExpressions:
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
  - kube-system
  - {{ . }}
- key: strait.dev/admission-webhooks
  operator: NotIn
  values:
  - disabled
{{- end }}
