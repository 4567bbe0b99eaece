"""SARP-FT: per-image low-rank adapters paid for in the file.

* :mod:`~hpac.adapters.lora`: the decoder's side: adapter integers, their coding, the merge.
* :mod:`~hpac.adapters.fit`: the encoder's side: fitting on growing contiguous regions.
* :mod:`~hpac.adapters.effort`: the effort levels (``--effort``).

LoRA: Hu et al. 2021; LoRA-FA (frozen projection): Zhang et al. 2023.
"""
