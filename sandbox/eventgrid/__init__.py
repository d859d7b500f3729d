"""The Azure Event Grid emulator: partner topics Microsoft Graph delivers change notifications to."""
