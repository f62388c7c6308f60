"""The training worker's code. Only ``models`` and ``run`` (inside functions) import TensorFlow."""
