"""Side-by-side benchmarks of Sluice against its peers (issue 7). Run: python -m bench.run"""
