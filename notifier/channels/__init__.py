"""Channel adapters: thin clients of the real provider HTTP APIs."""
