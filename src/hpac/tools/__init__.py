"""The programs built on the codec.

* :mod:`~hpac.tools.cli`: the ``hpac`` command.
* :mod:`~hpac.tools.batch`: folders of images, resumable.
* :mod:`~hpac.tools.bench`: hpac beside PNG, WebP, JPEG-LS, JPEG 2000 and JPEG XL.
* :mod:`~hpac.tools.train`: pre-training and quantisation-aware fine-tuning.
"""
