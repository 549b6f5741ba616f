"""Benchmarks: each measured configuration runs in a child process, so its RSS, page cache and memory
cgroup are its own."""
