{{/*
Expand the name of the chart.
*/}}
{{- define "image-factory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (at most 63 characters, a DNS label).
If the release name contains the chart name it is used as the full name.
Component names append up to "-worker" (7 characters), so this is cut to 56.
*/}}
{{- define "image-factory.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "image-factory.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Expand the namespace of the release.
*/}}
{{- define "image-factory.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/*
Common labels
*/}}
{{- define "image-factory.labels" -}}
helm.sh/chart: {{ include "image-factory.chart" . }}
{{ include "image-factory.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: image-factory
{{- end }}

{{/*
Selector labels (all components)
*/}}
{{- define "image-factory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-factory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "image-factory.componentLabels" -}}
{{ include "image-factory.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "image-factory.componentSelectorLabels" -}}
{{ include "image-factory.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "image-factory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "image-factory.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the cache signing key.
*/}}
{{- define "image-factory.cacheSigningKey" -}}
{{- if .Values.cacheSigningKey.existingSecret -}}
{{- .Values.cacheSigningKey.existingSecret -}}
{{- else -}}
{{- include "image-factory.fullname" . -}}-cache-signing-key
{{- end -}}
{{- end -}}

{{/*
Container image of the factory.
*/}}
{{- define "image-factory.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Port of a Go-style listen address (":8080", "0.0.0.0:8080"). Call with (list "addr" "default").
*/}}
{{- define "image-factory.portOf" -}}
{{- $addr := index . 0 | default (index . 1) | toString -}}
{{- splitList ":" $addr | last -}}
{{- end }}

{{- define "image-factory.httpPort" -}}
{{- include "image-factory.portOf" (list (dig "http" "httpListenAddr" "" (.Values.config | default dict)) ":8080") -}}
{{- end }}

{{- define "image-factory.metricsPort" -}}
{{- include "image-factory.portOf" (list (dig "metrics" "addr" "" (.Values.config | default dict)) ":2122") -}}
{{- end }}

{{/*
"true" when the metrics endpoint is enabled in the configuration (metrics.addr not set to "").
*/}}
{{- define "image-factory.metricsEnabled" -}}
{{- $metrics := get (.Values.config | default dict) "metrics" | default dict -}}
{{- if or (not (hasKey $metrics "addr")) (get $metrics "addr") -}}
true
{{- end -}}
{{- end }}

{{/*
"HTTPS" when the API serves TLS itself (http.certFile set), else "HTTP".
*/}}
{{- define "image-factory.httpScheme" -}}
{{- if dig "http" "certFile" "" (.Values.config | default dict) -}}
HTTPS
{{- else -}}
HTTP
{{- end -}}
{{- end }}

{{/*
Name of the bundled Redis Deployment and Service.
*/}}
{{- define "image-factory.redisName" -}}
{{- include "image-factory.fullname" . -}}-redis
{{- end }}

{{/*
The external Redis URL built from redis.url, redis.tls.enabled (scheme rediss) and
redis.password.existingSecret (the password becomes `$(REDIS_PASSWORD)`, which Kubernetes expands in
the IF_REDIS_URL env value: https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/).
*/}}
{{- define "image-factory.externalRedisURL" -}}
{{- $u := urlParse .Values.redis.url -}}
{{- if not (has $u.scheme (list "redis" "rediss")) -}}
{{- fail (printf "redis.url must be a redis:// or rediss:// URL, not %q" .Values.redis.url) -}}
{{- end -}}
{{- $scheme := ternary "rediss" $u.scheme .Values.redis.tls.enabled -}}
{{- $userinfo := $u.userinfo -}}
{{- if .Values.redis.password.existingSecret -}}
{{- if $u.userinfo -}}
{{- fail "redis.url must not carry credentials when redis.password.existingSecret holds the password" -}}
{{- end -}}
{{- $userinfo = ":$(REDIS_PASSWORD)" -}}
{{- end -}}
{{- $query := $u.query -}}
{{- if and (eq $scheme "rediss") (not (contains "ssl_cert_reqs=" $query)) -}}
{{- /* Celery refuses a rediss:// URL without ssl_cert_reqs; verify certificates. */ -}}
{{- $query = trimPrefix "&" (printf "%s&ssl_cert_reqs=required" $query) -}}
{{- end -}}
{{- printf "%s://%s%s%s" $scheme (ternary (printf "%s@" $userinfo) "" (ne $userinfo "")) $u.host $u.path -}}
{{- with $query }}?{{ . }}{{ end -}}
{{- end }}

{{/*
The Redis URL the chart writes to config.redis.url; empty when the URL is passed as IF_REDIS_URL
instead (redis.existingSecret, or redis.password.existingSecret).
*/}}
{{- define "image-factory.redisURL" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s.%s.svc:%v/0" (include "image-factory.redisName" .) (include "image-factory.namespace" .) .Values.redis.port -}}
{{- else if and .Values.redis.url .Values.redis.password.existingSecret -}}
{{- else if .Values.redis.url -}}
{{- include "image-factory.externalRedisURL" . -}}
{{- else if .Values.redis.existingSecret -}}
{{- else if dig "redis" "url" "" (.Values.config | default dict) -}}
{{- dig "redis" "url" "" (.Values.config | default dict) -}}
{{- else -}}
{{- fail "Redis is required: set redis.enabled=true, redis.url, or redis.existingSecret" -}}
{{- end -}}
{{- end }}

{{/*
Where KEDA finds the Celery queue, as YAML {address, database, tls}: the bundled Redis Service or the
host of redis.url. A URL kept only in a Secret cannot be read by the chart.
*/}}
{{- define "image-factory.redisEndpoint" -}}
{{- if .Values.redis.enabled -}}
address: {{ printf "%s.%s.svc:%v" (include "image-factory.redisName" .) (include "image-factory.namespace" .) .Values.redis.port }}
database: "0"
tls: "false"
{{- else if .Values.redis.url -}}
{{- $u := urlParse .Values.redis.url -}}
{{- if and $u.userinfo (not .Values.redis.password.existingSecret) -}}
{{- fail "worker.autoscaling.keda needs the Redis password in redis.password.existingSecret, not in redis.url" -}}
{{- end -}}
address: {{ ternary $u.host (printf "%s:6379" $u.host) (contains ":" $u.host) }}
database: {{ trimPrefix "/" $u.path | default "0" | quote }}
tls: {{ or .Values.redis.tls.enabled (eq $u.scheme "rediss") | toString | quote }}
{{- else -}}
{{- fail "worker.autoscaling.keda needs the Redis address: set redis.url (with redis.password.existingSecret for the password) instead of redis.existingSecret" -}}
{{- end -}}
{{- end }}

{{/*
The configuration written to /config.yaml: .Values.config with redis.url set by the chart.
*/}}
{{- define "image-factory.config" -}}
{{- $config := deepCopy (.Values.config | default dict) -}}
{{- $redis := deepCopy (get $config "redis" | default dict) -}}
{{- $url := include "image-factory.redisURL" . -}}
{{- if $url -}}
{{- $_ := set $redis "url" $url -}}
{{- else -}}
{{- $_ := unset $redis "url" -}}
{{- end -}}
{{- if $redis -}}
{{- $_ := set $config "redis" $redis -}}
{{- else -}}
{{- $_ := unset $config "redis" -}}
{{- end -}}
{{- toYaml $config -}}
{{- end }}

{{/*
Fail early on hostUsers=false where the cluster cannot honour it.
*/}}
{{- define "image-factory.hostUsers" -}}
{{- if not .Values.hostUsers -}}
{{- if semverCompare "<1.25-0" .Capabilities.KubeVersion.Version -}}
{{- fail "hostUsers: false needs Kubernetes 1.25 or newer" -}}
{{- end -}}
hostUsers: false
{{- end -}}
{{- end }}

{{/*
Shared pod-level settings of the API and worker pods. Call with (dict "ctx" $ "component" .Values.api).
*/}}
{{- define "image-factory.podScheduling" -}}
{{- $ctx := .ctx -}}
{{- with (.component.nodeSelector | default $ctx.Values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.component.affinity | default $ctx.Values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.component.tolerations | default $ctx.Values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Environment of the API and worker containers. Call with (dict "ctx" $ "component" .Values.api).
*/}}
{{- define "image-factory.env" -}}
{{- $ctx := .ctx -}}
{{- if and (not $ctx.Values.redis.enabled) (not $ctx.Values.redis.url) $ctx.Values.redis.existingSecret }}
- name: IF_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.redis.existingSecret }}
      key: {{ $ctx.Values.redis.existingSecretKey }}
{{- end }}
{{- if and (not $ctx.Values.redis.enabled) $ctx.Values.redis.url $ctx.Values.redis.password.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.redis.password.existingSecret }}
      key: {{ $ctx.Values.redis.password.key }}
- name: IF_REDIS_URL
  value: {{ include "image-factory.externalRedisURL" $ctx | quote }}
{{- end }}
{{- with $ctx.Values.env }}
{{ toYaml . }}
{{- end }}
{{- with .component.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volumes shared by the API and worker pods. Call with (dict "ctx" $ "tmpSizeLimit" "1Gi").
*/}}
{{- define "image-factory.volumes" -}}
{{- $ctx := .ctx -}}
- name: config
  configMap:
    name: {{ include "image-factory.fullname" $ctx }}
- name: tmp
  emptyDir:
    {{- with .tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- else }} {}
    {{- end }}
- name: cache-signing-key
  secret:
    secretName: {{ include "image-factory.cacheSigningKey" $ctx }}
    items:
      - key: cache-signing.key
        path: cache-signing.key
{{- with $ctx.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts shared by the API and worker containers.
*/}}
{{- define "image-factory.volumeMounts" -}}
- name: config
  mountPath: /config.yaml
  subPath: config.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: cache-signing-key
  mountPath: /etc/image-factory/keys
  readOnly: true
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod annotations that roll the pods when the configuration or a chart-managed key changes.
*/}}
{{- define "image-factory.checksums" -}}
checksum/config: {{ include "image-factory.config" . | sha256sum }}
{{- if not .Values.cacheSigningKey.existingSecret }}
checksum/cache-signing-key: {{ .Values.cacheSigningKey.key | default "" | sha256sum }}
{{- end }}
{{- end }}

{{/*
A probe with httpGet.port ("http") and httpGet.scheme filled in when omitted.
Call with (dict "ctx" $ "probe" .Values.livenessProbe).
*/}}
{{- define "image-factory.httpProbe" -}}
{{- $probe := deepCopy .probe -}}
{{- /* Helm merges an override into the default httpGet probe: a tcpSocket, exec or grpc probe replaces it. */ -}}
{{- if or (hasKey $probe "tcpSocket") (hasKey $probe "exec") (hasKey $probe "grpc") -}}
{{- $probe = omit $probe "httpGet" -}}
{{- end -}}
{{- if hasKey $probe "httpGet" -}}
{{- $get := get $probe "httpGet" | default dict -}}
{{- if not (hasKey $get "port") -}}
{{- $_ := set $get "port" "http" -}}
{{- end -}}
{{- if not (hasKey $get "scheme") -}}
{{- $_ := set $get "scheme" (include "image-factory.httpScheme" .ctx) -}}
{{- end -}}
{{- $_ := set $probe "httpGet" $get -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end }}

{{/*
Whole seconds (rounded up) of a Go duration ("90s", "5m0s", "1h30m", "1.5m", "500ms").
Call with (list "duration" "default").
*/}}
{{- define "image-factory.durationSeconds" -}}
{{- $text := index . 0 | default (index . 1) | toString -}}
{{- $scale := dict "ns" 1e-9 "us" 1e-6 "µs" 1e-6 "μs" 1e-6 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "([0-9]+\\.?[0-9]*|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)" $text -1 -}}
{{- $unit := regexFind "(ns|us|µs|μs|ms|s|m|h)$" . -}}
{{- $total = addf $total (mulf (trimSuffix $unit . | float64) (get $scale $unit)) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- end }}

{{/*
terminationGracePeriodSeconds of the API pods: http.shutdownGracePeriod (default 1m0s), in which a
stopping API finishes its downloads, plus 5 s for gunicorn to stop its processes.
*/}}
{{- define "image-factory.apiTerminationGracePeriod" -}}
{{- $grace := dig "http" "shutdownGracePeriod" "" (.Values.config | default dict) -}}
{{- add (include "image-factory.durationSeconds" (list $grace "1m0s") | int) 5 -}}
{{- end }}

{{/*
terminationGracePeriodSeconds of the worker pods: build.shutdownGracePeriod (default 5m0s), after
which a stopping worker hands its unfinished builds back to the queue, plus 30 s to stop the tools,
remove the scratch folders, re-publish the tasks and end Celery's warm shutdown.
*/}}
{{- define "image-factory.workerTerminationGracePeriod" -}}
{{- $grace := dig "build" "shutdownGracePeriod" "" (.Values.config | default dict) -}}
{{- add (include "image-factory.durationSeconds" (list $grace "5m0s") | int) 30 -}}
{{- end }}

{{/*
A Deployment strategy without the rollingUpdate block that Helm's value merge carries into a
`type: Recreate` override (the API server refuses rollingUpdate with Recreate).
*/}}
{{- define "image-factory.strategy" -}}
{{- if eq (.type | default "") "Recreate" -}}
{{- toYaml (omit . "rollingUpdate") -}}
{{- else -}}
{{- toYaml . -}}
{{- end -}}
{{- end }}
