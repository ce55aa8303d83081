"""Results: the leaderboard aggregation of a runs folder and the pure statistics behind it (confidence
intervals, paired tests, the Pareto front)."""
