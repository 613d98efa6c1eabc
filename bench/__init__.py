"""Side-by-side benchmarks of rampgate and its peers; run them with ``python -m bench``."""
