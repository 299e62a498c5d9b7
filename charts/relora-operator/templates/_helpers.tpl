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
# Watch releases and adapters (the operator's caches); never written but through their status.
- apiGroups: ["relora.dev"]
  resources: ["basemodelreleases", "taskadapters"]
  verbs: ["list", "watch"]
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
# Termination messages of finished worker pods; spec.serving.aibrix: whether the served release's pods run.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Kubernetes Events on every phase change (kopf posts core/v1 Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if or .Values.batching.rbac (gt (int .Values.batching.maxAdaptersPerJob) 1) }}
# Many adapters per Job: each batch Job's plan, in a ConfigMap named like the Job (create-if-absent, never
# updated or deleted: owned by its release).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create"]
{{- end }}
{{- /* Hand-off to serving (TaskAdapter spec.serving), each integration opt-in: read, create and PUT (with
the resourceVersion read) the target; never delete (ownerReferences garbage-collect what the operator made). */}}
{{- with .Values.serving.rbac }}
{{- if .aibrix }}
# spec.serving.aibrix: the AIBrix ModelAdapter of each TaskAdapter.
- apiGroups: ["model.aibrix.ai"]
  resources: ["modeladapters"]
  verbs: ["get", "create", "update"]
{{- end }}
{{- if .kserve }}
# spec.serving.kserve: the adapter entry on an existing KServe LLMInferenceService (never created).
- apiGroups: ["serving.kserve.io"]
  resources: ["llminferenceservices"]
  verbs: ["get", "update"]
{{- end }}
{{- if .configMap }}
# spec.serving.configMap: name -> URI entries a vLLM Deployment mounts or polls.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "update"]
{{- end }}
{{- end }}
{{- end }}

{{/* Namespaces the worker ServiceAccount is created in: worker.serviceAccount.namespaces, else watchNamespaces. */}}
{{- define "relora-operator.workerNamespaces" -}}
{{- join "," (.Values.worker.serviceAccount.namespaces | default .Values.watchNamespaces) }}
{{- end }}

{{/* The worker pods' ServiceAccount name; empty: each namespace's `default` (see values.yaml). */}}
{{- define "relora-operator.workerServiceAccountName" -}}
{{- $sa := .Values.worker.serviceAccount }}
{{- if and $sa.create (not $sa.name) }}
{{- fail "worker.serviceAccount.name is required when worker.serviceAccount.create is true" }}
{{- end }}
{{- if or (not $sa.create) (include "relora-operator.workerNamespaces" .) }}
{{- $sa.name }}
{{- end }}
{{- end }}

{{/* Every volumeMount names one of the volumes: list (mounts, volumes, value path) -> fails otherwise. */}}
{{- define "relora-operator.checkMounts" -}}
{{- $names := list }}
{{- range (index . 1) }}{{- $names = append $names .name }}{{- end }}
{{- range (index . 0) }}
{{- if not (has .name $names) }}
{{- fail (printf "%sVolumeMounts: %q is not the name of one of %sVolumes %v" (index $ 2) .name (index $ 2) $names) }}
{{- end }}
{{- end }}
{{- end }}

{{/* RELORA_WORKER_POD_TEMPLATE: the worker.* pod settings as JSON (operator/relora_operator/builders/pod_template.py). */}}
{{- define "relora-operator.workerPodTemplate" -}}
{{- $w := .Values.worker }}
{{- include "relora-operator.checkMounts" (list $w.extraVolumeMounts $w.extraVolumes "worker.extra") }}
{{- $t := dict }}
{{- with (include "relora-operator.workerServiceAccountName" .) }}{{- $_ := set $t "serviceAccountName" . }}{{- end }}
{{- with $w.imagePullSecrets }}{{- $_ := set $t "imagePullSecrets" . }}{{- end }}
{{- with $w.podLabels }}{{- $_ := set $t "labels" . }}{{- end }}
{{- with $w.podAnnotations }}{{- $_ := set $t "annotations" . }}{{- end }}
{{- with $w.affinity }}{{- $_ := set $t "affinity" . }}{{- end }}
{{- with $w.priorityClassName }}{{- $_ := set $t "priorityClassName" . }}{{- end }}
{{- $env := $w.extraEnv | default list }}
{{- $volumes := $w.extraVolumes | default list }}
{{- $mounts := $w.extraVolumeMounts | default list }}
{{- if $w.baseCache.enabled }}
{{- /* The node's (or a claim's) base-model cache: relora_worker/base_cache.py reads RELORA_BASE_CACHE_DIR. */}}
{{- $source := dict "hostPath" (dict "path" $w.baseCache.hostPath "type" "DirectoryOrCreate") }}
{{- with $w.baseCache.claimName }}{{- $source = dict "persistentVolumeClaim" (dict "claimName" .) }}{{- end }}
{{- $volumes = append $volumes (merge (dict "name" "relora-base-cache") $source) }}
{{- $mounts = append $mounts (dict "name" "relora-base-cache" "mountPath" "/var/cache/relora-base") }}
{{- $env = append $env (dict "name" "RELORA_BASE_CACHE_DIR" "value" "/var/cache/relora-base") }}
{{- end }}
{{- with $env }}{{- $_ := set $t "env" . }}{{- end }}
{{- with $w.extraEnvFrom }}{{- $_ := set $t "envFrom" . }}{{- end }}
{{- with $volumes }}{{- $_ := set $t "volumes" . }}{{- end }}
{{- with $mounts }}{{- $_ := set $t "volumeMounts" . }}{{- end }}
{{- toJson $t }}
{{- end }}

{{/* Base URL of the operator's metrics as the helm test pod reads them. */}}
{{- define "relora-operator.testUrl" -}}
{{- if .Values.tests.url }}
{{- .Values.tests.url | trimSuffix "/" }}
{{- else }}
{{- printf "http://%s-metrics.%s.svc:%d" (include "relora-operator.fullname" .) .Release.Namespace (int .Values.metrics.service.port) }}
{{- end }}
{{- end }}
