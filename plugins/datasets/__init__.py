"""Built-in dataset plugins: ``synthetic`` (the default), the MedMNIST sets, and the papers' data in their
publishers' layouts."""
