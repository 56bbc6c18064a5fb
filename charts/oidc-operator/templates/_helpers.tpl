{{/*
The chart name, or nameOverride.
*/}}
{{- define "oidc-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, else the release name when it contains the
chart name, else "<release>-<chart name>"; at most 63 characters.
*/}}
{{- define "oidc-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "oidc-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "oidc-operator.labels" -}}
helm.sh/chart: {{ include "oidc-operator.chart" . }}
{{ include "oidc-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oidc-operator
{{- end }}

{{/*
Labels selecting the operator's pods (immutable once installed).
*/}}
{{- define "oidc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oidc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the operator runs as: serviceAccount.name, else the full name (also when
the chart does not create it: never the namespace's "default" account, which the RBAC would
then grant Secret access to).
*/}}
{{- define "oidc-operator.serviceAccountName" -}}
{{- default (include "oidc-operator.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "oidc-operator.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if hasPrefix "@" $tag }}
{{- printf "%s%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The CA Secret the operator keeps (--ca-secret).
*/}}
{{- define "oidc-operator.caSecretName" -}}
{{- printf "%s-ca" (include "oidc-operator.fullname" .) }}
{{- end }}

{{/*
The --external-url value: externalUrl without a trailing "/", else the in-cluster Service.
*/}}
{{- define "oidc-operator.externalUrl" -}}
{{- if .Values.externalUrl }}
{{- .Values.externalUrl | trimSuffix "/" }}
{{- else }}
{{- printf "https://%s.%s.svc:8443" (include "oidc-operator.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Refuses values this version cannot run; included by the Deployment and the RBAC templates.
*/}}
{{- define "oidc-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (empty .Values.sessionStore.url) }}
{{- fail "replicaCount > 1 needs sessionStore.url: codes and tokens must live in a store every replica shares (Redis or Valkey)" }}
{{- end }}
{{- if and (eq .Values.rbac.mode "namespaced") (empty .Values.watchNamespaces) }}
{{- fail "rbac.mode=namespaced needs watchNamespaces: the Roles are created in those namespaces only, and without --watch-namespace the operator would watch every namespace. Set watchNamespaces (e.g. --set 'watchNamespaces={team-a,team-b}') or use rbac.mode=cluster." }}
{{- end }}
{{- end }}

{{/*
Rules for the watched namespaces: the six kinds, their status, the Secrets the operator
manages (key rings, client credentials) and Events about the objects.
*/}}
{{- define "oidc-operator.watchedRules" -}}
- apiGroups: ["oidc-operator.dev"]
  resources: ["oidckeys", "oidcclients", "oidcscopes", "oidcassignments", "oidcproviders", "identityoidcauths"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["oidc-operator.dev"]
  resources: ["oidckeys/status", "oidcclients/status", "oidcscopes/status", "oidcassignments/status", "oidcproviders/status", "identityoidcauths/status"]
  verbs: ["patch"]
# Client Secrets carry an ownerReference with blockOwnerDeletion; API servers running the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) require this to set it.
- apiGroups: ["oidc-operator.dev"]
  resources: ["oidcclients/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Rules in the operator's own namespace: its leader Lease, its CA Secret, Events.
(create cannot be limited to a name, so it is granted without resourceNames.)
*/}}
{{- define "oidc-operator.ownRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "oidc-operator.fullname" . | quote }}]
  verbs: ["get", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ include "oidc-operator.caSecretName" . | quote }}]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The metrics Service: "<fullname>-metrics", the full name cut so that a Service name stays
within 63 characters.
*/}}
{{- define "oidc-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "oidc-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
