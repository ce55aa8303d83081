"""The run path: configs resolved into trials, ``run_trial`` (the one function every executor calls), the
executors (local, Ray Tune), latency timing and hyperparameter tuning."""
