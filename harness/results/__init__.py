"""Results: from a runs folder read once (``harness.store.load_runs``) to what a leaderboard shows.

``leaderboard`` aggregates trials into rows (mean, spread and confidence interval over seeds, ranks);
``summary`` pairs trials by image identity and applies the statistics (the primary two-level paired
bootstrap, multiple-comparison correction, rank bands, secondary tests, the cross-dataset analysis) and
collects the warnings; ``curves`` flags trials still improving at the end of their budget; ``stats`` holds
the pure statistics and ``calibration`` the simulation that checks them."""
