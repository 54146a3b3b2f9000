"""The catalog integration: client, mapping, sync core, runtime configuration, commands."""
