"""The torch-free runtime: tokenizer, batching, engines, pooling and the :class:`Encoder`."""
