"""The HPAC network: P x P patches, pixels on the skewed diagonal g = c + 2r, channels in order.

* :mod:`~hpac.nn.architecture`: ModelConfig, the causal masks, the one gated block.
* :mod:`~hpac.nn.integer`: the network on integer grids (numpy), the arithmetic every file is coded with.
* :mod:`~hpac.nn.schedule`: the group order and masked kernels as bands over it.
* :mod:`~hpac.nn.csi`: the integer network's evaluation from caches (CSI): spans of groups, or one.

Torch, for training and measuring only (coding never imports these):

* :mod:`~hpac.nn.model`: the float network.
* :mod:`~hpac.nn.quantize`: the float network on the integer grids: calibration, quantisation-aware training.
* :mod:`~hpac.nn.mixture`: the discrete logistic mixture: parameters, exact bits for training.

HPAC: Li, Bai et al. 2025; masked convolutions after PixelCNN (van den Oord et al. 2016); the
logistic mixture after PixelCNN++ (Salimans et al. 2017).
"""
