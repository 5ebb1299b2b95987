"""Inference engines behind one small contract (:class:`~embedrt.runtime.backends.base.Backend`)."""
