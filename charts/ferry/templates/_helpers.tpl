{{/* The release's full name: the release name, with "-ferry" unless it already contains "ferry". */}}
{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Name of cluster-scoped objects (ClusterRoles, ClusterRoleBindings): the full name and the release namespace, so
releases of the same name in different namespaces (one per team in namespace-scoped mode) do not collide.
*/}}
{{- define "ferry.clusterName" -}}
{{- printf "%s-%s" (include "ferry.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ferry.serverImage" -}}
{{- printf "%s:%s" .Values.serverImage.repository (default .Chart.AppVersion .Values.serverImage.tag) -}}
{{- end -}}

{{- define "ferry.pythonServerImage" -}}
{{- printf "%s:%s" .Values.pythonServerImage.repository (default .Chart.AppVersion .Values.pythonServerImage.tag) -}}
{{- end -}}

{{- define "ferry.leaseName" -}}
{{- default (include "ferry.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/*
What the controller does to the objects of a watched namespace: exactly the requests src/controller.rs and the
kube-rs event recorder make (tests/rbac.rs runs a rollout with these rules and checks the list).
*/}}
{{- define "ferry.namespacedRules" -}}
# Watches ModelDeployments and writes their status (server-side apply); it never changes their spec.
- apiGroups: ["ferry.dev"]
  resources: ["modeldeployments"]
  verbs: ["list", "watch"]
- apiGroups: ["ferry.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# One Deployment per revision: created by server-side apply, scaled and marked by patches, pruned.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The active and preview Services: watched (the controller reads them from its cache), created and switched by
# server-side apply; never deleted (garbage collection removes them with their ModelDeployment).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
# One admin-credential Secret per ModelDeployment, mounted into its serving pods: created, never read (no get,
# list or watch), never changed (a rotation is a new Secret).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# Strategy InPlace: one ConfigMap per ModelDeployment naming the model its pods load at start, with the
# in-place state; watched, written by server-side apply, never deleted (garbage collection removes it).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch"]
# Pods are only read, for readiness and ferry-server's load-failure reason.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Rollout events (events.k8s.io/v1, as kube-rs records them).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{- define "ferry.adminKeySecretName" -}}
{{- .Values.adminKey.existingSecret | default (printf "%s-admin-key" (include "ferry.fullname" .)) -}}
{{- end -}}
