"""Fast per-example clipping: per-layer closed forms over stored activations and output gradients.

One forward and one backward pass of the summed loss record, for each trainable layer, its input
activations `a` [B, ...] and the gradient of the loss with respect to its output `dz` [B, ...]. Each
layer's rule turns (a, dz) into per-example squared gradient norms and, given per-example weights,
into the weighted gradient sum. No per-example gradient of the whole model is ever alive at once.
Layers without a rule fall back to per-example gradients computed one example at a time
(tfdp.dp.per_example.gradients), with a warning naming them.
"""

# Registration order matters: rule_for takes the first rule that supports a layer, so the closed
# forms come first and the per-layer vectorized rule last.
from tfdp.dp.fast import conv, dense, normalization  # pylint: disable=unused-import  (registers rules)
from tfdp.dp.fast import conv_nd, embeddings, separable  # pylint: disable=unused-import
from tfdp.dp.fast import vectorized  # pylint: disable=unused-import
from tfdp.dp.fast.engine import FastEngine
from tfdp.dp.fast.rules import RULES, rule_for
