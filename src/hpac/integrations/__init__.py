"""Integrations with other libraries, each behind an optional extra.

* :mod:`hpac.integrations.numcodecs_codec`: the ``hpac`` numcodecs codec, for zarr arrays
  (``pip install 'hpac[zarr]'``).
* :mod:`hpac.integrations.ray_data`: Ray Data transforms that code whole datasets on a
  cluster (``pip install 'hpac[ray]'``).

The Pillow plugin is :mod:`hpac.pillow` (Pillow is a core dependency).
"""
