"""One module per family of compute, each implementing the ``Backend`` protocol in ``base``."""
