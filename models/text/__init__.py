"""FLUX text encoders: CLIP-L and T5-XXL (transformers modules built from code), tokenizers, prompt encoding.

Modules: `clip`, `t5` (params, presets, builders), `layouts` (file key layouts, detection),
`loading` (files -> modules), `tokenizers` (local files, download, tiny ones), `prompt` (ComfyUI
tokenization and weights), `encode` (TextEncoders, encode_flux_prompt).
"""
