{{- define "loraloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loraloop.fullname" -}}
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

{{- define "loraloop.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "loraloop.labels" -}}
app.kubernetes.io/name: {{ include "loraloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "loraloop.commonLabels" . }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "server") */}}
{{- define "loraloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loraloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "loraloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loraloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "loraloop.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/*
Settings as ConfigMap data, one to one: (dict "prefix" "LORALOOP_" "values" $map).
Nested maps recurse with "__" (pydantic-settings' nested delimiter), lists become JSON, null
leaves the setting unset. YAML numbers reach templates as float64: whole ones are printed as
integers, so 4294967296 does not become "4.294967296e+09".
*/}}
{{- define "loraloop.settingsData" -}}
{{- $prefix := .prefix }}
{{- range $name, $value := .values }}
{{- $key := printf "%s%s" $prefix (upper $name) }}
{{- if kindIs "map" $value }}
{{- include "loraloop.settingsData" (dict "prefix" (printf "%s__" $key) "values" $value) }}
{{- else if kindIs "slice" $value }}
{{ $key }}: {{ toJson $value | quote }}
{{- else if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{ $key }}: {{ int64 $value | quote }}
{{- else if not (kindIs "invalid" $value) }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The API keys: the server's alone (the worker and Job pods serve no API). */}}
{{- define "loraloop.apiKeysEnv" -}}
{{- with .Values.secrets.apiKeys }}
{{- if .existingSecret }}
- name: LORALOOP_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- end }}

{{/* Secret references shared by the server, worker and Job pods. */}}
{{- define "loraloop.secretEnv" -}}
{{- with .Values.secrets.database }}
{{- if .existingSecret }}
- name: LORALOOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .key }}
{{- end }}
{{- end }}
{{- with .Values.secrets.s3 }}
{{- if .existingSecret }}
- name: LORALOOP_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .accessKeyIdKey }}
- name: LORALOOP_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Resources with GPUs added to requests and limits: (dict "resources" $r "gpu" $gpu "resourceName" $name) */}}
{{- define "loraloop.resources" -}}
{{- $resources := deepCopy (default dict .resources) }}
{{- if gt (int .gpu.count) 0 }}
{{- $_ := set $resources "requests" (merge (dict .resourceName (int .gpu.count)) (default dict $resources.requests)) }}
{{- $_ := set $resources "limits" (merge (dict .resourceName (int .gpu.count)) (default dict $resources.limits)) }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/* Writable emptyDirs under a read-only root filesystem (/tmp, the home, /dev/shm). */}}
{{- define "loraloop.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: home
  emptyDir: {}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shmSizeLimit }}
{{- end }}

{{- define "loraloop.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/loraloop
- name: shm
  mountPath: /dev/shm
{{- end }}

{{/* Refuse values that cannot work, with what to change. */}}
{{- define "loraloop.validate" -}}
{{- $secrets := dict "api_keys" "secrets.apiKeys" "database_url" "secrets.database" "s3_access_key_id" "secrets.s3" "s3_secret_access_key" "secrets.s3" }}
{{- $owned := dict "host" "port" "port" "port" "data_dir" "data" "cache_dir" "adapterCache" "shutdown_timeout_seconds" "shutdownTimeoutSeconds" }}
{{- range $name, $_ := merge (dict) .Values.config .Values.worker.config }}
{{- with get $secrets $name }}
{{- fail (printf "config.%s is a secret: put it in a Kubernetes Secret and name that Secret in %s.existingSecret" $name .) }}
{{- end }}
{{- with get $owned $name }}
{{- fail (printf "config.%s is set by the chart: use the value %s instead" $name .) }}
{{- end }}
{{- end }}
{{- $needed := add .Values.preStopSleepSeconds .Values.shutdownTimeoutSeconds 15 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds (%d) + shutdownTimeoutSeconds (%d) + 15 s for the cut, the job hand-off and the log flush: set it to %d or more, or lower shutdownTimeoutSeconds" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) (int .Values.shutdownTimeoutSeconds) (int $needed)) }}
{{- end }}
{{- if and (not .Values.secrets.apiKeys.existingSecret) (not .Values.config.allow_open_access) }}
{{- fail "secrets.apiKeys.existingSecret is empty: name a Secret holding LORALOOP_API_KEYS, or set config.allow_open_access: true to serve an open API" }}
{{- end }}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled .Values.worker.enabled }}
{{- if not (hasPrefix "s3://" (toString .Values.config.registry_url)) }}
{{- fail "several pods (replicaCount > 1, autoscaling or the worker) share one registry: set config.registry_url to s3://bucket/prefix" }}
{{- end }}
{{- if not .Values.secrets.database.existingSecret }}
{{- fail "several pods (replicaCount > 1, autoscaling or the worker) share one database: set secrets.database.existingSecret to a Secret holding a PostgreSQL URL" }}
{{- end }}
{{- if .Values.data.existingClaim }}
{{- fail "data.existingClaim is for a single replica: leave it empty when several pods run" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "loraloop.kubernetesRunner" -}}
{{- if and .Values.worker.enabled (hasPrefix "kubernetes" .Values.worker.runner) }}true{{ end }}
{{- end }}

{{- define "loraloop.workerServiceAccountName" -}}
{{- if include "loraloop.kubernetesRunner" . }}
{{- printf "%s-worker" (include "loraloop.fullname" .) }}
{{- else }}
{{- include "loraloop.serviceAccountName" . }}
{{- end }}
{{- end }}

{{- define "loraloop.jobTemplatePath" -}}
/etc/loraloop/job-template.yaml
{{- end }}

{{/* Settings only the worker reads, merged over .Values.config. */}}
{{- define "loraloop.workerSettings" -}}
{{- $settings := deepCopy .Values.worker.config }}
{{- $_ := set $settings "job_runner" .Values.worker.runner }}
{{- if include "loraloop.kubernetesRunner" . }}
{{- $job := .Values.worker.job }}
{{- $fromJob := dict "namespace" .Release.Namespace "pod_template_file" (include "loraloop.jobTemplatePath" .) "shm_size" $job.shm.sizeLimit "backoff_limit" $job.backoffLimit "ttl_seconds_after_finished" $job.ttlSecondsAfterFinished }}
{{- with $job.activeDeadlineSeconds }}{{ $_ := set $fromJob "active_deadline_seconds" . }}{{ end }}
{{- $kubernetes := merge (default dict $settings.kubernetes) $fromJob }}
{{- $_ := set $settings "kubernetes" $kubernetes }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/* Base weights, read-only, for the server, the worker and Job pods. */}}
{{- define "loraloop.baseModelMount" -}}
{{- if .Values.baseModel.existingClaim }}
- name: base-model
  mountPath: {{ .Values.baseModel.mountPath }}
  {{- with .Values.baseModel.subPath }}
  subPath: {{ . }}
  {{- end }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "loraloop.baseModelVolume" -}}
{{- if .Values.baseModel.existingClaim }}
- name: base-model
  persistentVolumeClaim:
    claimName: {{ .Values.baseModel.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{/* The PodTemplateSpec of a training run (runner: kubernetes*), which the worker reads as
kubernetes.pod_template_file. The runner sets the command (torchrun ... -m training run-job ID),
labels, /dev/shm (kubernetes.shm_size) and the Job's own fields (backoff, TTL, deadline) over it. */}}
{{- define "loraloop.jobTemplate" -}}
{{- $job := .Values.worker.job -}}
metadata:
  labels:
    {{- include "loraloop.selectorLabels" (dict "root" . "component" "training-job") | nindent 4 }}
  {{- with $job.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "loraloop.serviceAccountName" . }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $job.runtimeClassName }}
  runtimeClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: trainer
      image: {{ include "loraloop.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      envFrom:
        - configMapRef:
            name: {{ include "loraloop.fullname" . }}-config
      env:
        - name: LORALOOP_DATA_DIR
          value: /data
        - name: LORALOOP_CACHE_DIR
          value: /cache
        {{- with (include "loraloop.secretEnv" . | trim) }}{{ . | nindent 8 }}{{ end }}
      resources:
        {{- include "loraloop.resources" (dict "resources" $job.resources "gpu" $job.gpu "resourceName" .Values.gpu.resourceName) | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: home
          mountPath: /home/loraloop
        - name: data
          mountPath: /data
        - name: adapter-cache
          mountPath: /cache
        {{- with (include "loraloop.baseModelMount" . | trim) }}{{ . | nindent 8 }}{{ end }}
  volumes:
    - name: tmp
      emptyDir: {}
    - name: home
      emptyDir: {}
    - name: data
      emptyDir: {}
    - name: adapter-cache
      emptyDir: {}
    {{- with (include "loraloop.baseModelVolume" . | trim) }}{{ . | nindent 4 }}{{ end }}
  {{- with $job.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $job.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $job.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
