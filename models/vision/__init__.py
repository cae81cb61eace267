"""Vision encoders (CLIP ViT-L/14 with projection, SigLIP so400m-patch14-384) through transformers.

- `towers`: params from shapes, building, running (`VisionOutput`); `preprocess`: ComfyUI's clip_preprocess;
- `load`: ComfyUI `clip_vision/` single files and transformers folders.
"""
