"""Measuring SR quality and speed: PSNR/SSIM (metrics), the benchmark protocol (evaluate),
side-by-side comparison (compare) and the speed benchmark (bench)."""
