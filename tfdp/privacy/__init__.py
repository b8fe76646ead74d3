"""Privacy accounting for DP-SGD: pure Python over dp_accounting, no TensorFlow.

    tfdp.privacy.epsilon(num_examples=60000, batch_size=256, epochs=60, noise_multiplier=1.1,
                         delta=1e-5)                       # ε by RDP (accountant="pld" for PLD)
    tfdp.privacy.calibrate_noise(num_examples=50000, batch_size=1024, epochs=40,
                                 target_epsilon=3, delta=1e-5)   # σ
    python -m tfdp.privacy --num_examples=60000 --batch_size=256 --epochs=60 --noise_multiplier=1.1
"""

from tfdp.privacy.planner import calibrate_noise
from tfdp.privacy.planner import epsilon
