"""Sharing adapters: model cards, push and pull (huggingface_hub), Hub endpoints."""
