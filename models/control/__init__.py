"""FLUX control models: ControlNets (XLabs, Mistoline, InstantX/diffusers incl. Union and inpainting).

- `params`: ControlNetParams and detection from shapes; `model`: FluxControlNet and the injection rules;
- `load`: files and diffusers folders (converters in `models.formats.control_flux`);
- `apply`: CONTROL_NET handles, applications chained in conditionings, hints and residuals at sampling time.
"""
