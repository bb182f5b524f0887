"""Benchmarks of JCAS against its baseline and of the factorised pair-wise paths against dense references."""
