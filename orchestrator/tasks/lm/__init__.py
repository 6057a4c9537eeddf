"""Causal language model tasks (`lm`, `tinylm`, `smollm2`): data, model, measurement, speculative decoding."""
