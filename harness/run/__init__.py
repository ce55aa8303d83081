"""The run path: requests and settings, configs resolved into trials, ``fit_trial`` (the one fit path, for run
and tune) and ``run_trial`` (the one function every executor calls), the models trials keep, the executors
(local, Ray Tune), latency timing and hyperparameter tuning. See docs/architecture.md."""
