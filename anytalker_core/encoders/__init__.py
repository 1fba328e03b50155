"""The standalone encoders the pipeline runs outside a host, each loading the files users have.

- :mod:`.text`: umT5-XXL (``prompt -> [1, L, 4096]``);
- :mod:`.image`: the ViT-H image tower and its input (``picture [3, H, W] in [-1, 1] -> [1, 257, 1280]``);
- :mod:`.vae`: the Wan2.1 VAE behind the :class:`~.vae.VideoVAE` protocol, which owns the latent normalisation.

A host (ComfyUI) brings its own encoders through the same small protocols.
"""
