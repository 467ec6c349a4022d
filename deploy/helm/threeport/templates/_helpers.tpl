{{/* Names: the release's, trimmed to leave room for suffixes. */}}
{{- define "threeport.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "threeport.labels" -}}
app.kubernetes.io/name: threeport-server
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "threeport.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "threeport.secretName" -}}
{{ include "threeport.fullname" . }}
{{- end -}}

{{/* The NATS URL: the external one, else the bundled cluster's. */}}
{{- define "threeport.natsUrl" -}}
{{- if .Values.nats.url -}}
{{ .Values.nats.url }}
{{- else -}}
nats://{{ include "threeport.fullname" . }}-nats.{{ .Release.Namespace }}.svc:4222
{{- end -}}
{{- end -}}

{{/* What every threeport-server process is given: database, key, bus. */}}
{{- define "threeport.env" -}}
- name: THREEPORT_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: THREEPORT_DATA_DIR
  value: /var/lib/threeport
- name: HELM_CACHE_HOME
  value: /var/lib/threeport/helm/cache
- name: HELM_CONFIG_HOME
  value: /var/lib/threeport/helm/config
- name: HELM_DATA_HOME
  value: /var/lib/threeport/helm/data
- name: THREEPORT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret | default (include "threeport.secretName" .) }}
      key: url
- name: THREEPORT_DATABASE_MAX_CONNECTIONS
  value: {{ .Values.database.maxConnections | quote }}
- name: THREEPORT_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.encryption.existingSecret | default (include "threeport.secretName" .) }}
      key: key
- name: THREEPORT_NATS_URL
  value: {{ include "threeport.natsUrl" . | quote }}
{{- end -}}

{{- define "threeport.checks" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "database.url or database.existingSecret is required (PostgreSQL or CockroachDB)" -}}
{{- end -}}
{{- if and (not .Values.encryption.key) (not .Values.encryption.existingSecret) -}}
{{- fail "encryption.key (64 hex digits) or encryption.existingSecret is required" -}}
{{- end -}}
{{- if and (not .Values.nats.url) (not .Values.nats.bundled.enabled) -}}
{{- fail "nats.url or nats.bundled.enabled is required" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.enabled) -}}
{{- fail "tls.enabled needs tls.existingSecret or tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{- define "threeport.tlsSecret" -}}
{{ .Values.tls.existingSecret | default (printf "%s-tls" (include "threeport.fullname" .)) }}
{{- end -}}
