"""The HPAC network: P x P patches, pixels on the skewed diagonal g = c + 2r, channels in order.

* :mod:`~hpac.nn.model`: ModelConfig and the float network (training), the one gated block.
* :mod:`~hpac.nn.integer`: the same network on integer grids, the arithmetic every file is coded with.
* :mod:`~hpac.nn.schedule`: the group order and masked kernels as bands over it.
* :mod:`~hpac.nn.csi`: the decoder's group-by-group evaluation from caches (CSI).
* :mod:`~hpac.nn.mixture`: the discrete logistic mixture: parameters, exact bits for training.

HPAC: Li, Bai et al. 2025; masked convolutions after PixelCNN (van den Oord et al. 2016); the
logistic mixture after PixelCNN++ (Salimans et al. 2017).
"""
