{{- define "rproxy.name" -}}
{{- printf "%s-ingress" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rproxy.labels" -}}
app.kubernetes.io/name: rproxy-ingress
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "rproxy.selector" -}}
app.kubernetes.io/name: rproxy-ingress
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* server.grace_period in whole seconds (rounded up; `25s`, `2m`, `500ms`; default 10s). */}}
{{- define "rproxy.graceSeconds" -}}
{{- $g := toString (default "10s" .Values.server.grace_period) -}}
{{- if hasSuffix "ms" $g -}}{{ add1 (div (atoi (trimSuffix "ms" $g)) 1000) }}
{{- else if hasSuffix "h" $g -}}{{ mul (atoi (trimSuffix "h" $g)) 3600 }}
{{- else if hasSuffix "m" $g -}}{{ mul (atoi (trimSuffix "m" $g)) 60 }}
{{- else -}}{{ atoi (trimSuffix "s" $g) }}
{{- end -}}
{{- end -}}
