"""Shipped models.

* :mod:`~hpac.zoo.catalog`: one row per model; loading, resolving a file's model by name and id.
* :mod:`~hpac.zoo.weights`: safetensors weights with their id (``data/*.safetensors``).
"""
