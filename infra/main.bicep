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
// - The security scan: `checkov -d infra --framework bicep` (tests/test_infra_scan.py runs it and fails on any
//   failed check). A check that does not apply here is skipped on its resource with `checkov:skip=ID: reason`.
// - Event Grid delivery (notificationDelivery = eventgrid) lives in eventgrid.bicep, the alerts in alerts.bicep.

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

@description('Comma list of the object types to sync (User, Group, Device, Application, License) -> SYNC_OBJECT_TYPES.')
param syncObjectTypes string = 'User,Group,Device,Application,License,Managed Device'

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

@description('The Assets site\'s object allowance -> ASSETS_OBJECT_LIMIT (Premium and Enterprise include 50,000; set your site\'s with the extra-objects add-on). A full run that would take the objects entra-assets keeps past it is held.')
param assetsObjectLimit string = '50000'

@description('How often (days) the timer\'s full run is a repair that pushes every record again, putting back hand edits in Assets -> REPAIR_INTERVAL_DAYS (0: never).')
param repairIntervalDays string = '7'

@description('Path, inside the deployed package, of a YAML/JSON mapping file -> MAPPING_FILE, e.g. /home/site/wwwroot/mapping.yaml (empty: the default schema).')
param mappingFile string = ''

@description('Queue between the producers and submit_worker -> SYNC_QUEUE_NAME (the queue trigger reads it as %SYNC_QUEUE_NAME%).')
param syncQueueName string = 'entra-assets-changes'

@description('Queue through which a full run continues from one segment to the next -> RUN_QUEUE_NAME (full_run_segment reads it as %RUN_QUEUE_NAME%).')
param runQueueName string = 'entra-assets-runs'

@description('Seconds one segment of a full run reads Graph before it checkpoints and continues in a new invocation -> SEGMENT_SECONDS (at most 1800; functionTimeout is 01:00:00).')
param segmentSeconds string = '300'

// ---------------------------------------------------------------- change notifications

@description('How Microsoft Graph delivers change notifications -> NOTIFICATION_DELIVERY. webhook: Graph posts to graph_webhook (needs enableWebhook and a public endpoint). eventgrid: Graph delivers to an Event Grid partner topic in this resource group, an event subscription puts the events on the sync queue; the function app then needs no public endpoint (README "Deploy to Azure", two-step first deployment).')
@allowed([
  'webhook'
  'eventgrid'
])
param notificationDelivery string = 'webhook'

@description('With eventgrid: the name of the partner topic Graph created, once it exists (second deployment). Empty on the first deployment: the app settings then name the topic Graph is to create (output partnerTopicName) and no event subscription is deployed yet.')
param partnerTopicName string = ''

@description('With eventgrid: days the Microsoft Graph API partner stays authorized to create partner topics here (1-365); every re-deployment renews the authorization from the deployment time.')
@minValue(1)
@maxValue(365)
param partnerAuthorizationDays int = 365


@description('Subscribe to Microsoft Graph change notifications (users, and groups when synced): sets WEBHOOK_URL to this app\'s graph_webhook function and WEBHOOK_CLIENT_STATE. Needs webhookFunctionKey and webhookClientState.')
param enableWebhook bool = false

@description('Value of the function key named "graph" that the README sets on graph_webhook after publishing (az functionapp function keys set); it is part of WEBHOOK_URL, stored in Key Vault as webhook-url. Generate it once (openssl rand -hex 32) and pass the same value on every re-deployment.')
@secure()
param webhookFunctionKey string = ''

@description('Secret that Graph echoes in every notification and Event Grid event (webhook and eventgrid) -> WEBHOOK_CLIENT_STATE, stored in Key Vault as webhook-client-state (at most 128 characters). No default on purpose: a new value on each deployment would make the existing subscriptions\' notifications be dropped. Generate it once (openssl rand -hex 32) and pass the same value on every re-deployment.')
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

@description('Public network access of the function app: Enabled or Disabled. Default: Enabled with webhook (Graph must reach graph_webhook), Disabled with eventgrid (no function needs inbound traffic; the status page is then reached from a private endpoint, or use `entra-assets status`).')
@allowed([
  'Enabled'
  'Disabled'
])
param appPublicNetworkAccess string = (notificationDelivery == 'eventgrid') ? 'Disabled' : 'Enabled'

@description('Client id of an Entra app registration for signing in to the app (App Service authentication, Entra ID provider): every request except graph_webhook then needs an Entra sign-in of this tenant, the status page included. Empty: App Service authentication off (the status page is behind its function key only).')
param authClientId string = ''

@description('Spread the Flex Consumption instances over availability zones (the platform then keeps at least two always-ready instances, billed as such; not every region supports it: az functionapp list-flexconsumption-locations --zone-redundant).')
param zoneRedundant bool = false

@description('Redundancy of the storage account. Its state is derived from Entra ID and rebuilt by a full run, so LRS is the default; ZRS goes with zoneRedundant, GRS/GZRS if you want a copy in the paired region.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days after the deployment at which a Key Vault secret without a known expiry is marked to expire (its `exp` attribute); every re-deployment moves it. The client secret and the import token use clientCredentialExpires / assetsImportTokenExpires when given.')
@minValue(30)
@maxValue(730)
param secretExpiryDays int = 365

@description('Time of this deployment (leave the default): the base of the secrets\' expiry and of the partner authorization.')
param deployedAt string = utcNow()

// ---------------------------------------------------------------- alerts

@description('E-mail address the alerts go to (an action group): no successful run for twice the timer interval, messages in the poison queue, a failed full run, a credential or the import token expiring within 30 days. Empty: no alerts.')
param alertEmail string = ''

@description('Minutes between two timer_sync ticks, as timerSyncSchedule says (15 for the default \'0 */15 * * * *\'): the no-successful-run alert fires after twice this without one.')
@minValue(1)
@maxValue(720)
param timerIntervalMinutes int = 15

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
var useEventGrid = notificationDelivery == 'eventgrid'
// The webhook's settings and secrets only in webhook mode: with eventgrid, Graph never posts to the app.
var useWebhook = enableWebhook && !useEventGrid
// The client state in both modes: Graph puts it in every webhook notification and every Event Grid event, and
// the app refuses what does not carry it.
var useClientState = useWebhook || useEventGrid
// The topic Graph is asked to create (EventGrid: notification URL); partnerTopicName names it once it exists.
var eventGridTopicName = empty(partnerTopicName) ? 'entra-assets-${suffix}' : partnerTopicName
// Key Vault `exp` is seconds since the epoch; a date parameter means midnight UTC of that day.
var secretHorizon = dateTimeToEpoch(dateTimeAdd(deployedAt, 'P${secretExpiryDays}D'))
var clientSecretExpiry = empty(clientCredentialExpires) ? secretHorizon : dateTimeToEpoch('${clientCredentialExpires}T00:00:00Z')
var importTokenExpiry = empty(assetsImportTokenExpires) ? secretHorizon : dateTimeToEpoch('${assetsImportTokenExpires}T00:00:00Z')

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
  // checkov:skip=CKV_AZURE_35: the app has no VNet integration, so the Functions host and Event Grid reach this account over its public endpoint - a default Deny would stop the app; shared keys are off, every client signs in with Entra ID
  // checkov:skip=CKV_AZURE_206: a cost choice - the account holds state rebuilt from Entra ID by a full run and transient queue messages; storageSku=Standard_GRS or Standard_GZRS replicates it
  // checkov:skip=CKV_AZURE_59: public network access stays on for the reason of CKV_AZURE_35; no anonymous access (allowBlobPublicAccess false, shared keys off)
  // checkov:skip=CKV_AZURE_43: the name is computed (namePrefix of 3-11 lower-case letters or digits + uniqueString, lower-cased, at most 24 characters), which checkov cannot evaluate
  name: storageAccountName
  location: location
  tags: allTags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    // Flex Consumption needs no Azure Files content share, so keys can be off: every client uses Entra ID.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    accessTier: 'Hot'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The queue between the producers and submit_worker (the app also creates it when missing). With eventgrid,
// Event Grid's event subscription delivers the Graph events here too.
resource syncQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: syncQueueName
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
  // checkov:skip=CKV_AZURE_109: Key Vault references are resolved by the App Service platform and the admin's CLI reads secrets from their machine, both over the public endpoint (no VNet integration here): a firewall Deny would break both; access is RBAC only
  // checkov:skip=CKV_AZURE_189: the same reason - public network access is needed to resolve the Key Vault references without a private endpoint; only Entra principals with a role on this vault get a secret
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
    // Irreversible by design: a deleted vault or secret stays recoverable for softDeleteRetentionInDays. A
    // re-deployment into the same resource group after deleting the vault must recover it first (README).
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource clientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useClientSecret) {
  // checkov:skip=CKV_AZURE_41: checkov reads no body of a conditional resource (= if ...); exp is set below, tests/test_infra_scan.py checks it
  // checkov:skip=CKV_AZURE_114: checkov reads no body of a conditional resource (= if ...); contentType is set below, tests/test_infra_scan.py checks it
  parent: vault
  name: 'azure-client-secret'
  properties: {
    value: graphClientSecret
    contentType: 'text/plain'
    attributes: {
      exp: clientSecretExpiry
    }
  }
}

resource jiraTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useJira) {
  // checkov:skip=CKV_AZURE_41: checkov reads no body of a conditional resource (= if ...); exp is set below, tests/test_infra_scan.py checks it
  // checkov:skip=CKV_AZURE_114: checkov reads no body of a conditional resource (= if ...); contentType is set below, tests/test_infra_scan.py checks it
  parent: vault
  name: 'jira-api-token'
  properties: {
    value: jiraApiToken
    contentType: 'text/plain'
    attributes: {
      exp: secretHorizon
    }
  }
}

resource importTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'assets-import-token'
  properties: {
    value: assetsImportToken
    contentType: 'text/plain'
    attributes: {
      exp: importTokenExpiry
    }
  }
}

// The webhook URL carries the function key, so it is a secret too.
resource webhookUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useWebhook) {
  // checkov:skip=CKV_AZURE_41: checkov reads no body of a conditional resource (= if ...); exp is set below, tests/test_infra_scan.py checks it
  // checkov:skip=CKV_AZURE_114: checkov reads no body of a conditional resource (= if ...); contentType is set below, tests/test_infra_scan.py checks it
  parent: vault
  name: 'webhook-url'
  properties: {
    value: 'https://${functionApp.properties.defaultHostName}/api/graph-webhook?code=${webhookFunctionKey}'
    contentType: 'text/uri-list'
    attributes: {
      exp: secretHorizon
    }
  }
}

resource clientStateSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (useClientState) {
  // checkov:skip=CKV_AZURE_41: checkov reads no body of a conditional resource (= if ...); exp is set below, tests/test_infra_scan.py checks it
  // checkov:skip=CKV_AZURE_114: checkov reads no body of a conditional resource (= if ...); contentType is set below, tests/test_infra_scan.py checks it
  parent: vault
  name: 'webhook-client-state'
  properties: {
    value: webhookClientState
    contentType: 'text/plain'
    attributes: {
      exp: secretHorizon
    }
  }
}

// ---------------------------------------------------------------- Flex Consumption plan and the function app

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: a cost and region choice - zone redundancy on Flex Consumption keeps at least two always-ready instances billed and is not offered in every region; zoneRedundant=true turns it on
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
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Graph's change notifications and browsers opening the status page present no client certificate; callers authenticate with a function key (and an Entra sign-in with authClientId)
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed worker count (siteConfig.numberOfWorkers): instances scale per trigger from functionAppConfig.scaleAndConcurrency; the worker is a single writer by design
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support the platform health check (healthCheckPath), and no function here is anonymous to probe; failures are watched by the alerts of alerts.bicep
  // checkov:skip=CKV_AZURE_222: appPublicNetworkAccess is Disabled with notificationDelivery=eventgrid; with webhook Graph must reach graph_webhook over the internet (function key + clientState)
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
    publicNetworkAccess: appPublicNetworkAccess
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
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
  ASSETS_OBJECT_LIMIT: assetsObjectLimit
  REPAIR_INTERVAL_DAYS: repairIntervalDays
  MAPPING_FILE: mappingFile
  LOG_FORMAT: logFormat
  NOTIFICATION_DELIVERY: notificationDelivery
}
var appSettingsSecret = useClientSecret ? {
  AZURE_CLIENT_ID: graphClientId
  AZURE_CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/azure-client-secret/)'
} : {}
var appSettingsWebhook = useWebhook ? {
  WEBHOOK_URL: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/webhook-url/)'
} : {}
var appSettingsClientState = useClientState ? {
  WEBHOOK_CLIENT_STATE: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/webhook-client-state/)'
} : {}

// Where Graph is to deliver: the partner topic in this subscription, resource group and region (SPEC §2).
var appSettingsEventGrid = useEventGrid ? {
  EVENTGRID_PARTNER_TOPIC: eventGridTopicName
  EVENTGRID_SUBSCRIPTION_ID: subscription().subscriptionId
  EVENTGRID_RESOURCE_GROUP: resourceGroup().name
  EVENTGRID_LOCATION: location
  // setup attaches it to the partner topic and creates the event subscription to the sync queue with it
  EVENTGRID_DELIVERY_IDENTITY: eventGrid.outputs.deliveryIdentityId
} : {}

var appSettingsJira = useJira ? {
  JIRA_SITE_URL: jiraSiteUrl
  JIRA_EMAIL: jiraEmail
  JIRA_API_TOKEN: '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/jira-api-token/)'
  JIRA_LOOKUPS_PER_RUN: jiraLookupsPerRun
  JIRA_REQUESTS_PER_SECOND: jiraRequestsPerSecond
} : {}

// checkov applies its checks of the 'web' config (siteConfig: logging, .NET version, Azure Files, network access,
// authentication) to every Microsoft.Web/sites/config resource; this one is the 'appsettings' list, where such
// properties would become app settings.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: not the 'web' config - App Service authentication is the authsettingsV2 resource below (with authClientId)
  // checkov:skip=CKV_AZURE_63: not the 'web' config - HTTP logs of Flex Consumption go to Application Insights (requests), not App Service file logs
  // checkov:skip=CKV_AZURE_65: not the 'web' config - detailed error pages are an IIS feature; errors go to Application Insights
  // checkov:skip=CKV_AZURE_66: not the 'web' config - failed request tracing is an IIS feature; failed invocations go to Application Insights
  // checkov:skip=CKV_AZURE_80: not the 'web' config - a Python app has no .NET Framework version
  // checkov:skip=CKV_AZURE_88: not the 'web' config - Flex Consumption mounts no Azure Files share (the package is in a blob container, the state in blobs)
  // checkov:skip=CKV_AZURE_222: not the 'web' config - public network access is set on the site (appPublicNetworkAccess)
  parent: functionApp
  name: 'appsettings'
  properties: union(platformSettings, appSettingsCommon, appSettingsSecret, appSettingsWebhook, appSettingsClientState, appSettingsEventGrid,
    appSettingsJira)
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
    syncQueue
    eventGrid
  ]
}

// ---------------------------------------------------------------- App Service authentication (optional)
//
// Deployed in both cases (off without authClientId), so that a re-deployment without it also turns it off.
var authOff = {
  platform: {
    enabled: false
  }
}
//
// With authClientId, every request but graph_webhook's needs an Entra sign-in of this tenant before it reaches
// a function (the status page keeps its function key on top). No client secret: the sign-in uses the ID token
// of the registration (enable "ID tokens" on it, redirect URI https://<app>/.auth/login/aad/callback).
// https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad ; UNCONFIRMED here that
// Flex Consumption honours authsettingsV2 like the other plans.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: this is App Service authentication (V2: the switch is platform.enabled, checkov reads the V1 'enabled')
  // checkov:skip=CKV_AZURE_56: sign-in needs an Entra app registration the template cannot create: with authClientId, platform.enabled is true; without it the status page keeps its function key (and with eventgrid the site has no public access)
  // checkov:skip=CKV_AZURE_63: not the 'web' config - HTTP logs of Flex Consumption go to Application Insights (requests)
  // checkov:skip=CKV_AZURE_65: not the 'web' config - detailed error pages are an IIS feature
  // checkov:skip=CKV_AZURE_66: not the 'web' config - failed request tracing is an IIS feature
  // checkov:skip=CKV_AZURE_80: not the 'web' config - a Python app has no .NET Framework version
  // checkov:skip=CKV_AZURE_88: not the 'web' config - Flex Consumption mounts no Azure Files share
  // checkov:skip=CKV_AZURE_222: not the 'web' config - public network access is set on the site (appPublicNetworkAccess)
  parent: functionApp
  name: 'authsettingsV2'
  properties: empty(authClientId) ? authOff : {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      // Graph posts notifications without a sign-in; graph_webhook checks its function key and clientState.
      excludedPaths: useWebhook ? [
        '/api/graph-webhook'
      ] : []
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
          clientId: authClientId
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// ---------------------------------------------------------------- Event Grid delivery and alerts

module eventGrid 'eventgrid.bicep' = if (useEventGrid) {
  name: 'eventgrid'
  params: {
    location: location
    tags: allTags
    suffix: suffix
    storageAccountName: storage.name
    queueName: syncQueue.name
    appPrincipalId: functionApp.identity.principalId
    partnerTopicName: partnerTopicName
    partnerAuthorizationExpires: dateTimeAdd(deployedAt, 'P${partnerAuthorizationDays}D')
  }
}

module alerts 'alerts.bicep' = if (!empty(alertEmail)) {
  name: 'alerts'
  params: {
    location: location
    tags: allTags
    suffix: suffix
    appInsightsId: appInsights.id
    alertEmail: alertEmail
    timerIntervalMinutes: timerIntervalMinutes
  }
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
@description('With eventgrid: the partner topic Graph is asked to create (pass it as partnerTopicName once it exists).')
output partnerTopicName string = useEventGrid ? eventGridTopicName : ''
@description('With eventgrid: the user-assigned identity Event Grid delivers with (attach it to the partner topic).')
output eventGridDeliveryIdentityId string = useEventGrid ? eventGrid.outputs.deliveryIdentityId : ''
