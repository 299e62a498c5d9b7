"""Pure builders of the Kubernetes objects the operator creates (no API calls)."""
