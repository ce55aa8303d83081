"""The contract a plugin author reads: the hook specs, the spec types a plugin registers, the data and
predictor types that flow between the core and a method, and the result record. Nothing here imports
torch; ``harness`` re-exports the public names."""
