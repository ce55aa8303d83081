"""Built-in dataset plugins, one module per publisher, each registered under its own entry point:
``synthetic`` (generated; the default), ``medmnist`` (the 2D MedMNIST sets by name), and the papers' data in
their publishers' layouts: ``aptos``, ``ham10000``, ``isic2018``, ``chexpert``, ``bone_marrow`` (``bone-marrow``),
``imagefolder``. The image-file modules share ``reader.py`` (reading, decoding, resizing, splitting, caching);
every module completes its splits with ``harness.toolkit.data.finish`` (ids, checks, warnings, fingerprint)."""
