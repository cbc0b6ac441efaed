{{/* Chart name, at most 63 characters. */}}
{{- define "mcp-discovery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: the release name, with the chart's unless it holds it. */}}
{{- define "mcp-discovery.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mcp-discovery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-discovery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mcp-discovery.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mcp-discovery.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mcp-discovery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mcp-discovery.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mcp-discovery.configMapName" -}}
{{- default (printf "%s-config" (include "mcp-discovery.fullname" .)) .Values.config.existingConfigMap -}}
{{- end -}}

{{- define "mcp-discovery.sqlite" -}}
{{- if eq .Values.store.type "sqlite" -}}true{{- end -}}
{{- end -}}

{{/*
Refuses values that would deploy something broken, with a message saying
what to change. Included by every object, so `helm template` fails whatever
it renders.
*/}}
{{- define "mcp-discovery.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne .Values.store.type "postgresql") -}}
{{- fail (printf "replicaCount is %d but store.type is %s: the SQLite store is a file in each pod, so replicas would not share the servers registered over the API. Set store.type=postgresql with store.postgresql.urlSecret, or replicaCount=1." (int .Values.replicaCount) .Values.store.type) -}}
{{- end -}}
{{- if and (eq .Values.store.type "postgresql") (not .Values.store.postgresql.urlSecret.name) -}}
{{- fail "store.type is postgresql but store.postgresql.urlSecret.name is empty: name the Secret that holds the postgres:// URL (its key: store.postgresql.urlSecret.key)." -}}
{{- end -}}
{{- if not .Values.config.existingConfigMap -}}
{{- range $key := list "listen" "store" -}}
{{- if hasKey $.Values.config.inline $key -}}
{{- fail (printf "config.inline.%s is set by the chart: remove it (listen follows the container port; the store is store.type, store.postgresql and store.encryptionKeySecret)." $key) -}}
{{- end -}}
{{- end -}}
{{- if .Values.secrets.readKey.name -}}
{{- $admin := default dict .Values.config.inline.admin -}}
{{- if not $admin.protect_reads -}}
{{- fail "secrets.readKey is set but config.inline.admin.protect_reads is not true: a read key has no effect while reads are open (the engine refuses it)." -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The configuration file: config.inline plus what the chart owns (listen, the
Service's names in http.allowed_hosts).
*/}}
{{- define "mcp-discovery.config" -}}
{{- $config := deepCopy .Values.config.inline -}}
{{- $_ := set $config "listen" "0.0.0.0:8080" -}}
{{- $http := default dict (get $config "http") -}}
{{- $service := include "mcp-discovery.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $hosts := list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns) -}}
{{- $hosts = concat $hosts .Values.config.allowedHosts (default list (get $http "allowed_hosts")) | uniq -}}
{{- $_ = set $http "allowed_hosts" $hosts -}}
{{- $_ = set $config "http" $http -}}
{{- toYaml $config -}}
{{- end -}}
