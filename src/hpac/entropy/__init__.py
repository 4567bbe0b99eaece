"""Symbols <-> range-coder words: what the coder is handed besides the network's mixtures.

* :mod:`~hpac.entropy.afc`: adaptive focus coding, integer mixtures -> windowed tables + escape.
* :mod:`~hpac.entropy.zeroflags`: a point mass at a gray plane's symbol 0.
* :mod:`~hpac.entropy.valuemap`: stored values <-> dense coded symbols, per plane.
* :mod:`~hpac.entropy.regions`: patches a classical codec codes (screenshots, charts).

The range coder itself is constriction's queue range coder.
"""
