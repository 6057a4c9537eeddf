"""Hugging Face encoder classification tasks (`hf`, `tweets`): data, model, export, vocabulary."""
