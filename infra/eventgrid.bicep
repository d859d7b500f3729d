// Change notifications through Event Grid (notificationDelivery = eventgrid; main.bicep deploys this module).
//
// Microsoft Graph delivers the change notifications of a subscription whose notificationUrl is
// "EventGrid:?azuresubscriptionid=...&resourcegroup=...&partnertopic=...&location=..." to a partner topic that
// Graph itself creates in this resource group - if the "Microsoft Graph API" partner is authorized here (the
// partner configuration below). The topic must then be activated, and an event subscription on it delivers the
// events (CloudEvents) to the app's sync queue, authenticated with a managed identity.
// https://learn.microsoft.com/azure/event-grid/subscribe-to-graph-api-events
//
// So the first deployment cannot create the event subscription: the topic does not exist until `entra-assets
// setup` has created the Graph subscription. Two steps (README "Deploy to Azure"):
//   1. deploy with partnerTopicName empty: the partner configuration, the delivery identity and its role, the
//      app's Event Grid role; then `entra-assets setup` (Graph creates the topic; the app activates it);
//   2. attach the delivery identity to the topic and deploy again with partnerTopicName: the event subscription.
//
// Facts and their confidence:
// - partnerRegistrationImmutableId of the Microsoft Graph API partner, c02e0126-707c-436d-b6a1-175d2748fb58, and
//   its partnerName MicrosoftGraphAPI: the same in several public templates and Terraform modules; not found on
//   a Microsoft page - UNCONFIRMED. The portal's "Authorize partner" step is the fallback (README).
// - One partner configuration per resource group, named 'default', location 'global': this deployment's list
//   REPLACES the authorized partners of the resource group (deploy into a resource group of its own).
// - Delivery with a user-assigned identity to a storage queue works when the account has no firewall rules
//   (https://learn.microsoft.com/azure/event-grid/handler-storage-queues); the identity must also be attached to
//   the partner topic ("uses the managed identity setup on the parent resource") - Bicep cannot PATCH a topic
//   Graph owns, hence step 2's az command.

targetScope = 'resourceGroup'

@description('Azure region of the partner topic and of the delivery identity.')
param location string

@description('Tags of the resources.')
param tags object

@description('The hash main.bicep appends to every resource name.')
param suffix string

@description('The storage account holding the sync queue.')
param storageAccountName string

@description('The sync queue (SYNC_QUEUE_NAME) the events are delivered to.')
param queueName string

@description('Principal id of the function app\'s system-assigned identity.')
param appPrincipalId string

@description('The partner topic Graph created; empty until it exists (no event subscription then).')
param partnerTopicName string

@description('When the Microsoft Graph API partner\'s authorization ends (ISO 8601, UTC).')
param partnerAuthorizationExpires string

// UNCONFIRMED (see above): the Microsoft Graph API partner registration.
var graphPartnerRegistrationId = 'c02e0126-707c-436d-b6a1-175d2748fb58'
var roles = {
  eventGridContributor: '1e241071-0855-49ea-94dc-649edcd759de'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}

// Lets Graph create (and later update or delete) partner topics in this resource group until the expiry.
resource partnerConfiguration 'Microsoft.EventGrid/partnerConfigurations@2025-02-15' = {
  name: 'default'
  location: 'global'
  tags: tags
  properties: {
    partnerAuthorization: {
      defaultMaximumExpirationTimeInDays: 365
      authorizedPartnersList: [
        {
          partnerRegistrationImmutableId: graphPartnerRegistrationId
          partnerName: 'MicrosoftGraphAPI'
          authorizationExpirationTimeInUtc: partnerAuthorizationExpires
        }
      ]
    }
  }
}

// The identity Event Grid delivers with. User-assigned, so that its role exists before the topic does and
// survives a topic Graph re-creates.
resource deliveryIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-eventgrid-${suffix}'
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource queueService 'queueServices' existing = {
    name: 'default'

    resource queue 'queues' existing = {
      name: queueName
    }
  }
}

// Storage Queue Data Message Sender on the sync queue only: Event Grid adds messages, nothing else.
resource deliverySender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::queueService::queue.id, deliveryIdentity.id, roles.storageQueueDataMessageSender)
  scope: storage::queueService::queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
    principalId: deliveryIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// EventGrid Contributor on this resource group: `setup` activates the partner topic Graph creates (its name is
// known only then, so the role cannot be scoped to it) and checks its event subscription. It manages Event Grid
// resources only - no data, no other resource type.
resource appEventGridContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, appPrincipalId, roles.eventGridContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- step 2: once Graph created the topic

resource partnerTopic 'Microsoft.EventGrid/partnerTopics@2025-02-15' existing = if (!empty(partnerTopicName)) {
  name: partnerTopicName
}

// Every event of the topic goes to the queue: the topic carries only this app's subscriptions (users, groups
// and their lifecycle events), and the lifecycle event type names are UNCONFIRMED, so no type filter could be
// trusted; the worker ignores a type it does not know.
resource toSyncQueue 'Microsoft.EventGrid/partnerTopics/eventSubscriptions@2025-02-15' = if (!empty(partnerTopicName)) {
  parent: partnerTopic
  name: 'entra-assets-queue'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: deliveryIdentity.id
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storage.id
          queueName: queueName
          // One day, like Event Grid's own retry horizon: older changes are caught up by the delta anyway.
          queueMessageTimeToLiveInSeconds: 86400
        }
      }
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
  dependsOn: [
    deliverySender
  ]
}

output deliveryIdentityId string = deliveryIdentity.id
output deliveryIdentityPrincipalId string = deliveryIdentity.properties.principalId
output partnerConfigurationId string = partnerConfiguration.id
