"""ReLoRA operator: the kopf controller (never imports torch)."""
