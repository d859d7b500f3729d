// Alerts by e-mail (main.bicep deploys this module when alertEmail is given): log search alert rules over the
// app's Application Insights, each sending to one action group.
//
// What each rule reads - tests/test_infra_alerts.py checks these names against what the code emits:
// - `requests` named "submit_worker": one per invocation of the queue trigger, from the Functions host and from
//   the app's own span (shared/telemetry.py `invocation`); `success` is false when it raised. Every timer tick
//   queues a message (a full run's records or a delta catch-up), so a healthy app has one within each interval.
// - `traces` whose customDimensions.event names an app event (the `extra={"event": ...}` of a log call, exported
//   by shared/telemetry.py with its other extras as customDimensions):
//   "run.finished" (kind, stage: one per run history record), "queue.depth" (poison: the messages in
//   <queue>-poison), "credential.status" (kind, days_left: each credential that `status` reports).
//
// Windows: a log alert's evaluationFrequency and windowSize take a fixed set of values, so the rules whose
// period follows the timer filter on ago() in the query and use the longest window they need (P1D).
// https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule

targetScope = 'resourceGroup'

@description('Azure region of the alert rules.')
param location string

@description('Tags of the resources.')
param tags object

@description('The hash main.bicep appends to every resource name.')
param suffix string

@description('Resource id of the Application Insights component the rules query.')
param appInsightsId string

@description('E-mail address of the action group.')
param alertEmail string

@description('Minutes between two timer_sync ticks.')
param timerIntervalMinutes int

// The no-run alert fires when no worker pass succeeded for twice the timer interval.
var noRunMinutes = 2 * timerIntervalMinutes
// A credential warns 30 days ahead, as `status` does (shared/admin/credential_expiry.py WARN_DAYS).
var expiryWarnDays = 30

var rules = [
  {
    name: 'no-successful-run'
    severity: 1
    displayName: 'entra-assets: no successful run for ${noRunMinutes} minutes'
    description: 'No invocation of submit_worker succeeded for twice the timer interval: the app is stopped, cannot read its queue, or every run fails. See `entra-assets status` and the function\'s invocations.'
    evaluationFrequency: 'PT15M'
    windowSize: 'P1D'
    query: 'requests\n| where timestamp > ago(${noRunMinutes}m)\n| where name == "submit_worker" and success == true'
    operator: 'LessThan'
    threshold: 1
  }
  {
    name: 'poison-queue'
    severity: 2
    displayName: 'entra-assets: messages in the poison queue'
    description: 'The latest queue reading shows messages in <queue>-poison: changes that failed 5 times and were set aside. README "Queue, claim check and the poison queue" says how to inspect and replay them.'
    evaluationFrequency: 'PT15M'
    windowSize: 'P1D'
    query: 'traces\n| where tostring(customDimensions.event) == "queue.depth"\n| extend poison = toint(customDimensions.poison)\n| summarize arg_max(timestamp, poison)\n| where poison > 0'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'full-run-failed'
    severity: 1
    displayName: 'entra-assets: a full run failed'
    description: 'A full reconciliation ended Failed (Graph or Assets errors, or departures held back by the accidental-deletion guard). `entra-assets status` shows the reason.'
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    query: 'traces\n| where tostring(customDimensions.event) == "run.finished"\n| where tostring(customDimensions.kind) == "full" and tostring(customDimensions.stage) == "Failed"'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    name: 'credential-expiring'
    severity: 2
    displayName: 'entra-assets: a credential expires within ${expiryWarnDays} days'
    description: 'The client secret or certificate, or the Assets import token (with ASSETS_IMPORT_TOKEN_EXPIRES), expires within ${expiryWarnDays} days. README "Deploy to Azure", step 8, says how to replace it.'
    evaluationFrequency: 'PT6H'
    windowSize: 'P2D'
    query: 'traces\n| where tostring(customDimensions.event) == "credential.status"\n| extend kind = tostring(customDimensions.kind), days_left = toint(customDimensions.days_left)\n| summarize arg_max(timestamp, days_left) by kind\n| where days_left <= ${expiryWarnDays}'
    operator: 'GreaterThan'
    threshold: 0
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-entra-assets-${suffix}'
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'entraassets'
    enabled: true
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Stateful (autoMitigate): one e-mail when a rule starts firing, one when it is resolved.
resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: 'alert-entra-assets-${rule.name}-${suffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
