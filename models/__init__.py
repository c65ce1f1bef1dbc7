"""Sound2Sight model: frame/audio encoders, transformers, LSTMs, discriminator, the full model.

``models.sound2sight`` holds the public API (``Sound2SightConfig``, ``Sound2Sight``,
``load_model``); ``models.latent`` the prior and posterior; ``models.discriminator`` the
multimodal discriminator; ``models.decoder`` what the model asks of a frame decoder. The
step-by-step reference used by the tests and the benchmark is ``tests/stepwise.py``.
"""
