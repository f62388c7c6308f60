"""The serving process: TensorFlow Serving and KServe v2 endpoints over the model registry.

Runs apart from the API (``manage.py serve_models``). Only ``loader`` imports
TensorFlow, and only when the first model is loaded; the API process never
imports this package.
"""
