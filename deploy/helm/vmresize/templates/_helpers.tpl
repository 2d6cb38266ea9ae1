{{/*
Names, labels and references shared by every template (cert-manager's chart conventions).
Kubernetes names are limited to 63 characters, so every name is truncated there.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "vmresize.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name: fullnameOverride, else the release name if it already
contains the chart name, else "<release>-<chart>". Release "vmresize" gives "vmresize",
release "prod" gives "prod-vmresize".
*/}}
{{- define "vmresize.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "vmresize.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels on every object, CRDs included. */}}
{{- define "vmresize.labels" -}}
helm.sh/chart: {{ include "vmresize.chart" . }}
app.kubernetes.io/name: {{ include "vmresize.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "vmresize.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vmresize.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects: (dict "ctx" $ "component" "agent"). */}}
{{- define "vmresize.componentLabels" -}}
{{ include "vmresize.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of one component's objects, e.g. "<fullname>-operator", at most 63 characters. */}}
{{- define "vmresize.componentName" -}}
{{- printf "%s-%s" (include "vmresize.fullname" .ctx | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" }}
{{- end }}

{{/* ServiceAccount of the operator: "<fullname>-operator" unless named in values. */}}
{{- define "vmresize.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "vmresize.componentName" (dict "ctx" . "component" "operator")) .Values.operator.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of the agents: "<fullname>-agent" unless named in values. */}}
{{- define "vmresize.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "vmresize.componentName" (dict "ctx" . "component" "agent")) .Values.agent.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the shared migration private key. */}}
{{- define "vmresize.migrationKey.secretName" -}}
{{- if .Values.migrationKey.existingSecret }}
{{- .Values.migrationKey.existingSecret }}
{{- else }}
{{- include "vmresize.componentName" (dict "ctx" . "component" "migration-key") }}
{{- end }}
{{- end }}

{{/* Key (file name) of the private key inside that Secret, e.g. "id_ed25519". */}}
{{- define "vmresize.migrationKey.fileName" -}}
{{- printf "id_%s" .Values.migrationKey.algorithm }}
{{- end }}

{{/* Where the agent container sees the migration key Secret. */}}
{{- define "vmresize.migrationKey.mountPath" -}}
/etc/vmresize/migration
{{- end }}

{{/* Full image reference of a component: (dict "ctx" $ "image" .Values.operator.image). */}}
{{- define "vmresize.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag }}
{{- $ref := printf "%s:%s" .image.repository $tag }}
{{- if .image.registry }}
{{- $ref = printf "%s/%s" .image.registry $ref }}
{{- end }}
{{- if .image.digest }}
{{- $ref = printf "%s@%s" $ref .image.digest }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* kopf runs with peering (HA) when more than one operator replica is asked for. */}}
{{- define "vmresize.operator.peered" -}}
{{- if gt (int .Values.operator.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* The user name of the agent ServiceAccount, as admission sees it. */}}
{{- define "vmresize.operator.userName" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "vmresize.operator.serviceAccountName" .) }}
{{- end }}

{{- define "vmresize.agent.userName" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "vmresize.agent.serviceAccountName" .) }}
{{- end }}
