"""What the tests and the benchmarks share, and the product does not need: closed-loop episodes
without ROS (``episode``), logged experience from a model plant (``exploration``), Monte-Carlo
evaluation of an estimator (``estimator_evaluation``), and the probe that judges a running stack
against the sim's ground truth (``fault_probe``).

It lives beside ``mbrl_control`` in the source tree and is not installed (setup.py packages
``mbrl_control`` only): tests import it from the repository root (pytest.ini ``pythonpath``), the
benchmarks through bench/common.py, which puts the repository root on ``sys.path``. Nothing under
``mbrl_control`` may import it (test/unit/test_package_layout.py).
"""
