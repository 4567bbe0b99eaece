"""Integrations with other libraries.

* :mod:`hpac.integrations.pillow`: the Pillow plugin (``import hpac.integrations.pillow``).
* :mod:`hpac.integrations.numcodecs_codec`: the ``hpac`` numcodecs codec, for zarr arrays
  (``pip install 'hpac[zarr]'``).
* :mod:`hpac.integrations.ray_data`: Ray Data transforms that code whole datasets on a
  cluster (``pip install 'hpac[ray]'``).
"""
