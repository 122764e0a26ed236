"""Benchmarks: throughput and quality of gtasr-stream beside its peers, measured in the same run."""
