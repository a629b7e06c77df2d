{{/* The release's full name, capped at 63 characters (a DNS label). */}}
{{- define "theseus-agent.fullname" -}}
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

{{- define "theseus-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "theseus-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "theseus-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "theseus-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "theseus-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: theseus
{{- end -}}

{{- define "theseus-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "theseus-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "theseus-agent.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "theseus-agent.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "theseus-agent.clusterName" -}}
{{- required "clusterName is required: the name of this cluster, as in the agent certificate (theseus certs secret --cluster NAME)" .Values.clusterName -}}
{{- end -}}

{{/*
The rules for the application kinds, with the verbs each step of a migration uses: get/list/watch (Discover, the
waits of Quiesce, Stage and Unstage), create (Stage, holder and mover pods), patch (Quiesce, Unquiesce, Activate,
adopting an existing object), delete (Unstage, retiring the source after a move, holder and mover pods).
*/}}
{{- define "theseus-agent.appRules" -}}
{{- range (concat .Values.rbac.appRules .Values.rbac.extraAppRules) }}
{{- with .why }}
# {{ . }}
{{- end }}
- apiGroups: {{ toJson .apiGroups }}
  resources: {{ toJson .resources }}
  verbs: {{ toJson (default (list "get" "list" "watch" "create" "patch" "delete") .verbs) }}
{{- end }}
{{- if .Values.rbac.stageRbacObjects }}
# An application's own Roles and RoleBindings: staging them needs bind and escalate, since Kubernetes refuses to let
# the agent create or bind a Role granting more than it holds (rbac.stageRbacObjects: false turns this off).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete", "bind", "escalate"]
{{- else }}
# An application's own Roles and RoleBindings are read for the plan (they move only with rbac.stageRbacObjects).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch"]
{{- end }}
# Events are listed with the application (never moved: the plan says why) and the agent reads them to explain a
# pod that does not start.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["get", "list", "watch"]
{{- end -}}
