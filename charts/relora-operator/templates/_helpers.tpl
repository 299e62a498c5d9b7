{{/* Name of the chart, or nameOverride. */}}
{{- define "relora-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "relora-operator.fullname" -}}
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

{{/* Labels of every resource. */}}
{{- define "relora-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "relora-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relora
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "relora-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relora-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "relora-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relora-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion. */}}
{{- define "relora-operator.image" -}}
{{- $image := index . 0 }}{{- $chart := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The RBAC rules of the operator (docs/operator.md): the same for a ClusterRole and each Role. */}}
{{- define "relora-operator.rules" -}}
# Watch releases and adapters (kopf's indices); patch only to remove a kopf finalizer left by an older
# version (this one puts none).
- apiGroups: ["relora.dev"]
  resources: ["basemodelreleases", "taskadapters"]
  verbs: ["list", "watch", "patch"]
# Status through the status subresource.
- apiGroups: ["relora.dev"]
  resources: ["basemodelreleases/status", "taskadapters/status"]
  verbs: ["patch"]
# Jobs carry an ownerReference with blockOwnerDeletion to their release or adapter; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: ["relora.dev"]
  resources: ["basemodelreleases/finalizers", "taskadapters/finalizers"]
  verbs: ["update"]
# Projection and re-adaptation Jobs: create-if-absent, never updated or deleted (garbage collection does).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create"]
# Termination messages of finished worker pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Kubernetes Events on every phase change (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
