{{- define "kps.fullname" -}}{{ default .Release.Name .Values.fullnameOverride | trunc 50 }}{{- end -}}
