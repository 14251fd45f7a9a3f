{{/*
Names. Kubernetes names are at most 63 characters; the engine's pod names (<fullname>-engine-N)
are also its static member ids.
*/}}
{{- define "sagaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sagaflow.fullname" -}}
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

{{/*
<fullname>-<component>, at most 52 characters: the StatefulSet controller adds a revision hash
to its pods' labels, and the chart adds suffixes (-headless, -config).
*/}}
{{- define "sagaflow.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "sagaflow.fullname" $root | trunc (int (sub 51 (len $component)))) $component | trimSuffix "-" }}
{{- end }}

{{- define "sagaflow.engine.name" -}}
{{- include "sagaflow.componentName" (list . "engine") }}
{{- end }}

{{- define "sagaflow.projections.name" -}}
{{- include "sagaflow.componentName" (list . "projections") }}
{{- end }}

{{- define "sagaflow.admin.name" -}}
{{- include "sagaflow.componentName" (list . "admin") }}
{{- end }}

{{- define "sagaflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels; call with (list $ "component"). */}}
{{- define "sagaflow.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "sagaflow.chart" $root }}
{{ include "sagaflow.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: sagaflow
{{- end }}

{{- define "sagaflow.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "sagaflow.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "sagaflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Every component runs as the image's user (uid 10001, see the Dockerfile); fsGroup makes the
engine's state volume writable by it.
*/}}
{{- define "sagaflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Nothing writes outside its volumes (state, /tmp), so the root filesystem is read-only. */}}
{{- define "sagaflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
Pod-spec fields shared by every component.
- enableServiceLinks: false, because Kubernetes would otherwise set <SERVICE>_PORT and
  <SERVICE>_SERVICE_HOST variables for every Service in the namespace, and a Service named, say,
  "sagaflow-kafka" yields SAGAFLOW_KAFKA_PORT, which every sagaflow command reads as the
  librdkafka property "port" and refuses to start on.
- automountServiceAccountToken: false: no component calls the Kubernetes API.
*/}}
{{- define "sagaflow.podCommon" -}}
enableServiceLinks: false
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "sagaflow.podSecurityContext" . | nindent 2 }}
{{- end }}

{{/*
Kafka client properties as `--kafka KEY=VALUE` arguments, which every sagaflow command takes and
which win over SAGAFLOW_KAFKA_* variables. The CA file, when kafka.tls.caSecret is set, is named
by ssl.ca.location.
*/}}
{{- define "sagaflow.kafkaArgs" -}}
{{- range $key, $value := .Values.kafka.properties }}
{{- /* YAML numbers arrive as floats: 600000 would print as 6e+05. */}}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $value = int64 $value }}
{{- end }}
- --kafka
- {{ printf "%s=%v" $key $value | quote }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- --kafka
- {{ printf "ssl.ca.location=/etc/sagaflow/kafka-ca/%s" .Values.kafka.tls.caKey | quote }}
{{- end }}
{{- end }}

{{/* What every component needs to reach Kafka (and the registry, for those that use it). */}}
{{- define "sagaflow.commonEnv" -}}
- name: SAGAFLOW_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: SAGAFLOW_GROUP
  value: {{ .Values.kafka.group | quote }}
- name: SAGAFLOW_REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | int64 | quote }}
- name: SAGAFLOW_MIN_INSYNC_REPLICAS
  value: {{ .Values.kafka.minInsyncReplicas | int64 | quote }}
- name: SAGAFLOW_REGISTRY_URL
  value: {{ .Values.registry.url | quote }}
{{- if .Values.registry.basicAuth.existingSecret }}
- name: SAGAFLOW_REGISTRY_BASIC_AUTH
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.basicAuth.existingSecret }}
      key: {{ .Values.registry.basicAuth.key }}
{{- end }}
{{- if .Values.registry.bearerToken.existingSecret }}
- name: SAGAFLOW_REGISTRY_BEARER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.bearerToken.existingSecret }}
      key: {{ .Values.registry.bearerToken.key }}
{{- end }}
{{- if .Values.registry.tls.caSecret }}
- name: SAGAFLOW_REGISTRY_CA_FILE
  value: {{ printf "/etc/sagaflow/registry-ca/%s" .Values.registry.tls.caKey | quote }}
{{- end }}
- name: SAGAFLOW_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/* SASL credentials and other secret client properties, as SAGAFLOW_KAFKA_* variables. */}}
{{- define "sagaflow.envFrom" -}}
{{- if .Values.kafka.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.kafka.existingSecret }}
{{- end }}
{{- end }}

{{/* Volumes every component mounts: scratch space, and the CA files if any. */}}
{{- define "sagaflow.commonVolumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- if .Values.registry.tls.caSecret }}
- name: registry-ca
  secret:
    secretName: {{ .Values.registry.tls.caSecret }}
    items:
      - key: {{ .Values.registry.tls.caKey }}
        path: {{ .Values.registry.tls.caKey }}
{{- end }}
{{- end }}

{{- define "sagaflow.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/sagaflow/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.registry.tls.caSecret }}
- name: registry-ca
  mountPath: /etc/sagaflow/registry-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
The definitions ConfigMap's data: .Values.definitions, or the trip example when it is empty.
Both the ConfigMap and the checksum annotations render it from here, so they always agree.
*/}}
{{- define "sagaflow.definitionsData" -}}
{{- if .Values.definitions -}}
{{- toYaml .Values.definitions }}
{{- else -}}
trip.yaml: |
  {{- .Files.Get "files/trip.yaml" | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The engine's config file: engine.config's keys of default.toml, in TOML. Helm reads numbers from
YAML as floats, and a float prints as 1.2e+08, so integers go through int64.
*/}}
{{- define "sagaflow.engineToml" -}}
# Rendered from the chart's engine.config; the chart passes bootstrap, group, partitions and the
# other settings it owns as SAGAFLOW_* variables, which override this file.
{{- range $key, $value := .Values.engine.config }}
{{- if kindIs "string" $value }}
{{ $key }} = {{ $value | toJson }}
{{- else if kindIs "bool" $value }}
{{ $key }} = {{ $value }}
{{- else }}
{{ $key }} = {{ $value | int64 }}
{{- end }}
{{- end }}
{{- end }}

{{/* The query API the admin server reads through. */}}
{{- define "sagaflow.queryUrl" -}}
{{- if .Values.admin.queryUrl }}
{{- .Values.admin.queryUrl }}
{{- else if .Values.projections.enabled }}
{{- printf "http://%s:%d" (include "sagaflow.projections.name" .) (int .Values.projections.httpPort) }}
{{- else }}
{{- fail "admin.enabled needs the read models: set projections.enabled=true, or admin.queryUrl to a projections query API" }}
{{- end }}
{{- end }}
