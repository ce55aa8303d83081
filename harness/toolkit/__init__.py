"""The toolkit plugins import: the training loop and its settings, backbones, data protocols and caches,
and the diffusion building blocks (:mod:`harness.toolkit.nn`). Importing this package imports no torch;
its modules do."""
