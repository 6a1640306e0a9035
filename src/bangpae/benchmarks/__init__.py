"""Standard workloads of BENCHMARK.md."""
