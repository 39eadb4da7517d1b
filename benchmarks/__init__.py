"""Side-by-side benchmarks (`chorus bench`): they print ratios and write a results table and plot."""
