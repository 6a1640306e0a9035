"""The standard workloads of docs/workloads.md."""
