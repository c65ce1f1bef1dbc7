"""Sound2Sight's networks, one module per part.

- ``models.sound2sight``: the public API, ``Sound2SightConfig`` and ``Sound2Sight`` (the
  teacher-forced pass, sampling, the losses).
- ``models.latent``: the prior and the posterior (``LatentNetwork``: causal transformer over
  frames and audio, Gaussian LSTM).
- ``models.lstm``: the LSTM predictor and Gaussian LSTM; ``models.transformer``: the causal
  transformer.
- ``models.discriminator``: the multimodal discriminator and its loss weights.
- ``models.decoder``: what the model asks of a frame decoder (``FrameDecoder``, and the
  split-skip fast path ``SplitSkipDecoder``).
- ``models.dcgan`` and ``models.vgg``: frame encoders and decoders; ``models.audio``: the
  per-frame audio encoder; ``models.layers``: shared blocks and weight initialisation.

Checkpoints are written, read and migrated by ``checkpoints`` (``checkpoints.load_model``
rebuilds a model from its file). The step-by-step reference used by the tests and the
benchmark is ``tests/stepwise.py``.
"""
