"""Side-by-side timing for the benchmark scripts: configurations take turns, the best round counts.

Taking turns spreads slow drift of the machine (other load, frequency) over every configuration
alike, so their ratio means more than any one absolute figure.
"""

import time
from typing import Callable, Dict, Hashable


def best_calls_per_second(runs: Dict[Hashable, Callable[[], object]], rounds: int, calls: int,
                          warmup: int = 2) -> Dict[Hashable, float]:
  """{key: calls per second}, best of `rounds` rounds of `calls` calls, after `warmup` calls each.

  Each call must finish its work before returning (return Python values, not pending tensors).
  """
  for run in runs.values():
    for _ in range(warmup):
      run()
  best = {key: 0.0 for key in runs}
  for _ in range(rounds):
    for key, run in runs.items():
      start = time.perf_counter()
      for _ in range(calls):
        run()
      best[key] = max(best[key], calls / (time.perf_counter() - start))
  return best
