"""The hub: adapter reading, the metadata store, the blob store, the registry service and its
HTTP server. Knows nothing of the composer."""
