// entra-assets on Azure (SPEC §6): a Flex Consumption function app (Python 3.11, Linux) with a system-assigned
// managed identity, its storage account reached by identity only, the secrets in Key Vault (app settings are
// Key Vault references), and Application Insights on a Log Analytics workspace.
//
//   az deployment group create -g <resource group> -f infra/main.bicep -p infra/main.parameters.example.json ...
//
// Every app setting the code reads is set here (tests/test_infra.py compares the two lists), by the parameter
// named in the README's settings table. Optional settings left empty are set to '' - the app treats an empty
// value as unset (shared/settings.py).
//
// Facts this template relies on, with where they were checked:
// - Flex Consumption: plan sku FC1/FlexConsumption, reserved: true; runtime, scale and deployment storage in
//   properties.functionAppConfig; FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE
//   are not used on Flex (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan and the
//   Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep templates).
// - Host storage by identity: AzureWebJobsStorage__accountName (+ __credential=managedidentity)
//   (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity).
// - Key Vault references: @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>/), resolved
//   with the app's identity, which needs "Key Vault Secrets User" on an RBAC vault; without a version the latest
//   secret is used (https://learn.microsoft.com/azure/app-service/app-service-key-vault-references).
//   UNCONFIRMED here: that Flex Consumption resolves them like the other plans (early previews of Flex did not) -
//   README "Deploy to Azure" says how to see whether a reference resolved.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------- names and place

@description('Prefix of every resource name: 3-11 lower-case letters or digits. A hash of the resource group is appended, so names are unique and stable across re-deployments.')
@minLength(3)
@maxLength(11)
param namePrefix string = 'entraassets'

@description('Azure region of all resources; Flex Consumption must be available there (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

// ---------------------------------------------------------------- Entra ID (Microsoft Graph)

@description('Tenant id of the Entra ID directory to sync -> AZURE_TENANT_ID.')
param tenantId string = subscription().tenantId

@description('How the app signs in to Microsoft Graph. clientSecret: the app registration (graphClientId) with a secret kept in Key Vault. managedIdentity: the function app\'s own identity, to which the admin grants the Graph application permissions (no secret anywhere).')
@allowed([
  'clientSecret'
  'managedIdentity'
])
param graphCredential string = 'clientSecret'

@description('Application (client) id of the app registration -> AZURE_CLIENT_ID. Required with graphCredential = clientSecret; ignored with managedIdentity (AZURE_CLIENT_ID would then name a user-assigned identity).')
param graphClientId string = ''

@description('Client secret of the app registration, stored in Key Vault as azure-client-secret -> AZURE_CLIENT_SECRET. Required with graphCredential = clientSecret.')
@secure()
param graphClientSecret string = ''

@description('Microsoft Graph base URL -> GRAPH_BASE_URL; change it only for a national cloud (https://graph.microsoft.us/v1.0, ...).')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Sign-in authority -> AZURE_AUTHORITY_HOST, e.g. https://login.microsoftonline.us for a national cloud (empty: the one that goes with GRAPH_BASE_URL).')
param azureAuthorityHost string = ''

@description('Date (YYYY-MM-DD) the client secret expires, as shown in Entra > App registrations > Certificates & secrets -> AZURE_CLIENT_CREDENTIAL_EXPIRES; status warns before it (empty: no warning from this date).')
param clientCredentialExpires string = ''

// ---------------------------------------------------------------- Assets (Jira Service Management)

@description('Token of the External import created in the target object schema, stored in Key Vault as assets-import-token -> ASSETS_IMPORT_TOKEN.')
@secure()
param assetsImportToken string

@description('Base URL of the Atlassian API -> ASSETS_API_URL.')
param assetsApiUrl string = 'https://api.atlassian.com'

@description('Date (YYYY-MM-DD) by which the import token must be replaced -> ASSETS_IMPORT_TOKEN_EXPIRES; status warns before it (empty: no warning).')
param assetsImportTokenExpires string = ''

@description('Prefix of the external ids of the object types and attributes -> ASSETS_SCHEMA_KEY (2-10 upper-case letters or digits). Change it only for a second installation in the same Assets workspace.')
param assetsSchemaKey string = 'ENTRA'

// ---------------------------------------------------------------- what is synced, and when

@description('NCRONTAB (6 fields) of timer_sync -> TIMER_SYNC_SCHEDULE.')
param timerSyncSchedule string = '0 */15 * * * *'

@description('Hours between two full reconciliations -> FULL_SYNC_INTERVAL_HOURS.')
param fullSyncIntervalHours string = '24'

@description('Comma list of the object types to sync (User, Group, Device, Application) -> SYNC_OBJECT_TYPES.')
param syncObjectTypes string = 'User,Group,Device,Application'

@description('OData $filter scoping the users -> USER_FILTER (empty: every user).')
param userFilter string = ''

@description('OData $filter scoping the groups -> GROUP_FILTER (empty: every group).')
param groupFilter string = ''

@description('Object id of a group: only its (transitive) members are synced as users -> SCOPE_GROUP_ID (empty: no group scope).')
param scopeGroupId string = ''

@description('A full run that would mark more objects Deleted than this stops and reports instead -> MAX_DEACTIVATIONS.')
param maxDeactivations string = '500'

@description('A full run that would mark more than this share (percent) of one object type\'s objects Deleted, and more than 10 of them, is held too -> MAX_DEACTIVATION_PERCENT (100: off).')
param maxDeactivationPercent string = '30'

@description('Path, inside the deployed package, of a YAML/JSON mapping file -> MAPPING_FILE, e.g. /home/site/wwwroot/mapping.yaml (empty: the default schema).')
param mappingFile string = ''

@description('Queue between the producers and submit_worker -> SYNC_QUEUE_NAME (the queue trigger reads it as %SYNC_QUEUE_NAME%).')
param syncQueueName string = 'entra-assets-changes'

@description('Queue through which a full run continues from one segment to the next -> RUN_QUEUE_NAME (full_run_segment reads it as %RUN_QUEUE_NAME%).')
param runQueueName string = 'entra-assets-runs'

@description('Seconds one segment of a full run reads Graph before it checkpoints and continues in a new invocation -> SEGMENT_SECONDS (at most 1800; functionTimeout is 01:00:00).')
param segmentSeconds string = '300'

// ---------------------------------------------------------------- change notifications (webhook)

@description('Subscribe to Microsoft Graph change notifications (users, and groups when synced): sets WEBHOOK_URL to this app\'s graph_webhook function and WEBHOOK_CLIENT_STATE. Needs webhookFunctionKey and webhookClientState.')
param enableWebhook bool = false

@description('Value of the function key named "graph" that the README sets on graph_webhook after publishing (az functionapp function keys set); it is part of WEBHOOK_URL, stored in Key Vault as webhook-url. Generate it once (openssl rand -hex 32) and pass the same value on every re-deployment.')
@secure()
param webhookFunctionKey string = ''

@description('Secret that Graph echoes in every notification -> WEBHOOK_CLIENT_STATE, stored in Key Vault as webhook-client-state (at most 128 characters). No default on purpose: a new value on each deployment would make the existing subscriptions\' notifications be dropped. Generate it once (openssl rand -hex 32) and pass the same value on every re-deployment.')
@secure()
param webhookClientState string = ''

// ---------------------------------------------------------------- Jira user links (SPEC §5): all three or none

@description('Base URL of the Jira site, e.g. https://example.atlassian.net -> JIRA_SITE_URL (empty, with jiraEmail and jiraApiToken: linking off).')
param jiraSiteUrl string = ''

@description('E-mail address of the Atlassian account that owns jiraApiToken -> JIRA_EMAIL.')
param jiraEmail string = ''

@description('API token of that Atlassian account, stored in Key Vault as jira-api-token -> JIRA_API_TOKEN. Linking is on when this is given.')
@secure()
param jiraApiToken string = ''

@description('At most this many Jira user searches per run -> JIRA_LOOKUPS_PER_RUN.')
param jiraLookupsPerRun string = '5000'

@description('At most this many Jira requests per second -> JIRA_REQUESTS_PER_SECOND.')
param jiraRequestsPerSecond string = '10'

// ---------------------------------------------------------------- hosting

@description('Format of the app\'s log lines -> LOG_FORMAT.')
@allowed([
  'text'
  'json'
])
param logFormat string = 'text'

@description('Memory of each instance, MB (Flex Consumption sizes).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of instances Flex Consumption may scale out to. The worker is a single writer (a blob lease), so extra instances only help the webhook under bursts.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days Log Analytics keeps the telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Accept only Entra-authenticated telemetry in Application Insights (local authentication off). Keep false unless every exporter in the app authenticates with the managed identity.')
param appInsightsEntraOnly bool = false

@description('Turn on Key Vault purge protection (a deleted vault or secret cannot be purged for 90 days; cannot be turned off again).')
param keyVaultPurgeProtection bool = false

@description('Object id of the admin (user, group or service principal) who runs the entra-assets CLI against this deployment: gets read access to the Key Vault secrets and data access to the storage account (status, sync, setup from their machine). Empty: none. Get yours with: az ad signed-in-user show --query id -o tsv')
param operatorPrincipalId string = ''

@description('Kind of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Tags added to every resource.')
param tags object = {}

// ---------------------------------------------------------------- names

var suffix = uniqueString(resourceGroup().id, namePrefix)
var storageAccountName = take(toLower('${namePrefix}${suffix}'), 24)
var keyVaultName = take('kv-${namePrefix}-${suffix}', 24)
var functionAppName = 'func-${namePrefix}-${suffix}'
var planName = 'plan-${namePrefix}-${suffix}'
var logAnalyticsName = 'log-${namePrefix}-${suffix}'
var appInsightsName = 'appi-${namePrefix}-${suffix}'
var deploymentContainerName = 'app-package'
var allTags = union(tags, {
  'app': 'entra-assets'
})
var useClientSecret = graphCredential == 'clientSecret'
var useJira = !empty(jiraApiToken)

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---------------------------------------------------------------- storage (host + queue + state), identity only

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: allTags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Flex Consumption needs no Azure Files content share, so keys can be off: every client uses Entra ID.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    accessTier: 'Hot'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Flex Consumption reads the app's package from this container, with the app's identity.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// ---------------------------------------------------------------- monitoring

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: allTags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: allTags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: appInsightsEntraOnly
  }
}

// ---------------------------------------------------------------- Key Vault (RBAC, soft delete) and the secrets

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: allTags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: keyVaultPurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource clientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useClientSecret) {
  parent: vault
  name: 'azure-client-secret'
  properties: {
    value: graphClientSecret
  }
}

resource jiraTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useJira) {
  parent: vault
  name: 'jira-api-token'
  properties: {
    value: jiraApiToken
  }
}

resource importTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'assets-import-token'
  properties: {
    value: assetsImportToken
  }
}

// The webhook URL carries the function key, so it is a secret too.
resource webhookUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (enableWebhook) {
  parent: vault
  name: 'webhook-url'
  properties: {
    value: 'https://${functionApp.properties.defaultHostName}/api/graph-webhook?code=${webhookFunctionKey}'
  }
}

resource clientStateSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (enableWebhook) {
  parent: vault
  name: 'webhook-client-state'
  properties: {
    value: webhookClientState
  }
}

// ---------------------------------------------------------------- Flex Consumption plan and the function app

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: allTags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: allTags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// ---------------------------------------------------------------- least-privilege roles of the app's identity
//
// On the storage account (data-plane roles only; management roles such as Owner/Contributor give no data
// access and are not granted):
// - Storage Blob Data Owner: the minimum role the Functions host documents for AzureWebJobsStorage by identity
//   (host locks and timer schedule blobs in azure-webjobs-hosts, function keys in azure-webjobs-secrets); it
//   also covers reading the Flex deployment container and the app's own state container (entra-assets: ETag
//   writes, the writer's blob lease), which need no more than Blob Data Contributor.
// - Storage Queue Data Contributor: the queue trigger of submit_worker (peek-lock, update, delete) and the move
//   of failed messages to <queue>-poison, which the host creates; the producers (timer_sync, graph_webhook) send
//   messages and create the queue when missing.
// - No Table role: no function and no binding uses tables (the host then only skips persisting its diagnostic
//   events to a table).
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets User (read secret values): what Key Vault references need, on this vault only.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: Entra-authenticated ingestion (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The admin who runs the CLI against this deployment: reads the secrets, reads and writes state and queue.
resource operatorSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

// ---------------------------------------------------------------- app settings
//
// Set after the role assignments and the secrets exist, so that the host finds its storage and the Key Vault
// references resolve when the app restarts with them. Secrets appear only as Key Vault references.

var vaultUri = vault.properties.vaultUri
var platformSettings = {
  AzureWebJobsStorage__accountName: storage.name
  // Always the managed identity for host storage, even when AZURE_CLIENT_ID/AZURE_CLIENT_SECRET are set for
  // Graph (otherwise an environment credential could be picked up for storage).
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
}
var appSettingsCommon = {
  AZURE_TENANT_ID: tenantId
  AZURE_AUTHORITY_HOST: azureAuthorityHost
  AZURE_CLIENT_CREDENTIAL_EXPIRES: clientCredentialExpires
  GRAPH_BASE_URL: graphBaseUrl
  ASSETS_IMPORT_TOKEN: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/assets-import-token/)'
  ASSETS_IMPORT_TOKEN_EXPIRES: assetsImportTokenExpires
  ASSETS_API_URL: assetsApiUrl
  ASSETS_SCHEMA_KEY: assetsSchemaKey
  SYNC_QUEUE_NAME: syncQueueName
  RUN_QUEUE_NAME: runQueueName
  SEGMENT_SECONDS: segmentSeconds
  TIMER_SYNC_SCHEDULE: timerSyncSchedule
  FULL_SYNC_INTERVAL_HOURS: fullSyncIntervalHours
  SYNC_OBJECT_TYPES: syncObjectTypes
  USER_FILTER: userFilter
  GROUP_FILTER: groupFilter
  SCOPE_GROUP_ID: scopeGroupId
  MAX_DEACTIVATIONS: maxDeactivations
  MAX_DEACTIVATION_PERCENT: maxDeactivationPercent
  MAPPING_FILE: mappingFile
  LOG_FORMAT: logFormat
}
var appSettingsSecret = useClientSecret ? {
  AZURE_CLIENT_ID: graphClientId
  AZURE_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/azure-client-secret/)'
} : {}
var appSettingsWebhook = enableWebhook ? {
  WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/webhook-url/)'
  WEBHOOK_CLIENT_STATE: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/webhook-client-state/)'
} : {}

var appSettingsJira = useJira ? {
  JIRA_SITE_URL: jiraSiteUrl
  JIRA_EMAIL: jiraEmail
  JIRA_API_TOKEN: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/jira-api-token/)'
  JIRA_LOOKUPS_PER_RUN: jiraLookupsPerRun
  JIRA_REQUESTS_PER_SECOND: jiraRequestsPerSecond
} : {}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(platformSettings, appSettingsCommon, appSettingsSecret, appSettingsWebhook, appSettingsJira)
  dependsOn: [
    blobOwner
    queueContributor
    secretsUser
    metricsPublisher
    deploymentContainer
    clientSecretSecret
    importTokenSecret
    jiraTokenSecret
    webhookUrlSecret
    clientStateSecret
  ]
}

// ---------------------------------------------------------------- outputs

output functionAppName string = functionApp.name
output functionAppHostName string = functionApp.properties.defaultHostName
@description('The URL of graph_webhook without its key (WEBHOOK_URL adds ?code=<webhookFunctionKey>).')
output webhookUrl string = 'https://${functionApp.properties.defaultHostName}/api/graph-webhook'
output principalId string = functionApp.identity.principalId
output keyVaultName string = vault.name
output storageAccountName string = storage.name
output appInsightsName string = appInsights.name
