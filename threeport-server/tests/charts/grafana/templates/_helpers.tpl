{{- define "grafana.fullname" -}}{{ default .Release.Name .Values.fullnameOverride | trunc 63 }}{{- end -}}
