"""One pure converter per LoRA file format: (state dict, targets) -> `Converted` (see `models.lora.detect`)."""
