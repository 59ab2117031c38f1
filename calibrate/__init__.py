"""GPU calibration: torch microbenchmarks on a real GPU, fitted into kvsim's cost models.

``kvsim-calibrate run --out DIR`` measures (GPU only), ``kvsim-calibrate fit DIR`` fits a
profile anywhere, ``kvsim-calibrate report DIR`` compares the fitted profile's predictions with
fresh held-out and end-to-end measurements. This package is the only one that imports torch,
and only inside the measuring modules, so fitting and loading work on a laptop.
"""
