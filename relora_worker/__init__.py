"""ReLoRA worker: re-adapts LoRA adapters to a new base-model release."""
