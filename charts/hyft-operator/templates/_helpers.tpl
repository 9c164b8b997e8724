{{- define "hyft.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "hyft.labels" -}}
app.kubernetes.io/name: hyft-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "hyft.selectorLabels" -}}
app.kubernetes.io/name: hyft-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hyft.serviceAccountName" -}}
{{- default (include "hyft.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Exactly the API calls the operator makes (hyft_operator/reconciler.py and Kopf). */}}
{{- define "hyft.namespacedRules" -}}
- apiGroups: [hyft.io]
  resources: [hunyuanfinetunes]
  verbs: [get, list, watch, patch]
- apiGroups: [hyft.io]
  resources: [hunyuanfinetunes/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list, watch, create, delete, patch]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads/status]
  verbs: [patch]
- apiGroups: [visibility.kueue.x-k8s.io]
  resources: [localqueues/pendingworkloads]
  verbs: [get]
{{- end -}}
