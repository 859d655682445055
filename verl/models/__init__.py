"""Model layer: ``load`` (``load_vlm``, ``load_processor``, vision-tower helpers), ``tiny`` (``build_tiny_vlm``,
offline tiny VLMs), ``processors`` (torchvision-free image-only processors), ``multimodal`` (prompts -> inputs),
``vlm_forward`` (log-probs with images encoded once per prompt). Import the submodules directly."""
