"""LoRA and other weight patches: the math, file-format detection and converters, and loading."""
