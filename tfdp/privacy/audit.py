"""Empirical privacy: a lower bound on ε from one training run, and membership inference.

The proven ε is a theorem about the mechanism we meant to run; a bug in clipping, sampling or noise
would not change the number printed. The audit measures what the trained model leaks about
canaries whose membership only the auditor knows (Steinke, Nasr & Jagielski 2023, "Privacy
Auditing with One (1) Training Run").

The game. m canaries are made (tfdp.data.canaries); each is put in the training set independently
with probability 1/2, by coins of the auditor's own (S_i in {in, out}). After training, the auditor
scores every canary by the released model (its loss, lower meaning "more likely in"), guesses
"in" for the r/2 lowest losses and "out" for the r/2 highest, and abstains on the rest.

The theorem (their Theorem 3). If training is (ε, δ)-DP with respect to each canary (adding or
removing one example), the number W of correct guesses among the r made satisfies, for every v,

    P[W >= v] <= P[B >= v] + 2 m δ max_{1 <= i <= v} P[v - i <= B < v] / i,   B ~ Binomial(r, p),

with p = e^ε / (1 + e^ε), the accuracy of ε-randomized response. `p_value` is that right-hand
side. Observing v correct guesses with p_value(ε) <= 1 - confidence rejects "the run is (ε, δ)-DP"
at that confidence, so the largest such ε is a lower bound on the true ε (`epsilon_lower_bound`).
Several guess counts r are tried, with a Bonferroni correction (each at (1 - confidence) / their
number), so the choice among them costs what it should. A lower bound above the proven ε would
mean the proof does not hold for the code that ran: a probable bug (`above_proven`).

What the audit releases. The canaries' losses come from the model on training examples (and held-
out ones) without noise: the audit's figures are not covered by the run's guarantee. They are
opt-in (--audit_canaries) and labelled as such wherever they appear (metrics, model card). The
canaries count in N for the accountant: they are training examples like any other.

    bound = audit.epsilon_lower_bound(canaries=1000, guesses=100, correct=92, delta=1e-5)
"""

import dataclasses
import math
from typing import Dict, Optional, Sequence

import numpy as np
from scipy import optimize
from scipy import special
from scipy import stats
from sklearn import metrics as sk_metrics

CONFIDENCE = 0.95
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # Guesses r as fractions of m, fixed in advance.
MIA_FPRS = (0.01, 0.001)
NOTE = ("computed from the canaries' losses under the released model, without noise: not covered "
        "by the privacy guarantee (opt-in, --audit_canaries)")


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
  """P[at least `correct` of `guesses` right] under (ε, δ)-DP: Steinke et al.'s Theorem 3 bound.

  Args:
    canaries: m, each included independently with probability 1/2.
    guesses: r <= m guesses made (abstentions excluded).
    correct: v <= r of them right.
    epsilon, delta: the null hypothesis, (ε, δ)-DP.
  """
  if not 0 <= correct <= guesses <= canaries:
    raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries "
                     f"({canaries})")
  if epsilon < 0 or not 0 <= delta <= 1:
    raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
  accuracy = special.expit(epsilon)
  tail = stats.binom.sf(correct - 1, guesses, accuracy)  # P[B >= v].
  if delta == 0 or correct == 0:
    return float(tail)
  shifts = np.arange(1, correct + 1)
  window = stats.binom.sf(correct - shifts - 1, guesses, accuracy) - tail  # P[v - i <= B < v].
  return float(min(1.0, tail + 2 * canaries * delta * np.max(window / shifts)))


def epsilon_lower_bound(canaries: int, guesses: int, correct: int, delta: float,
                        confidence: float = CONFIDENCE) -> float:
  """The largest ε that `correct` of `guesses` right rejects at `confidence`; 0 if none."""
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  significance = 1 - confidence
  excess = lambda epsilon: significance - p_value(canaries, guesses, correct, epsilon, delta)
  if guesses == 0 or excess(0.0) <= 0:
    return 0.0
  high = 1.0
  while excess(high) > 0:
    if high > 1e3:  # Unreachable (p_value -> 1 as ε grows); a guard for the loop.
      return math.inf
    high *= 2
  return float(optimize.brentq(excess, high / 2 if high > 1 else 0.0, high, xtol=1e-6))


def guess_counts(canaries: int, fractions: Sequence[float] = GUESS_FRACTIONS) -> list:
  """The guess counts r tried, fixed before the scores are seen: even, >= 2, <= m."""
  counts = {min(canaries, max(2, 2 * round(f * canaries / 2))) // 2 * 2 for f in fractions}
  return sorted(c for c in counts if c >= 2)


@dataclasses.dataclass(frozen=True)
class Guesses:
  """One guess count's outcome: r guesses made, v right, and the ε it proves at its share of
  the significance."""
  guesses: int
  correct: int
  epsilon_lower_bound: float


def guess(losses: np.ndarray, included: np.ndarray, count: int) -> tuple:
  """(guesses, correct) for `count` guesses: "in" for the count/2 lowest losses, "out" for the
  count/2 highest. losses: float [m]; included: bool [m], the auditor's secret."""
  order = np.argsort(losses, kind="stable")
  half = count // 2
  right = int(np.sum(included[order[:half]])) + int(np.sum(~included[order[len(order) - half:]]))
  return 2 * half, right


def audit(losses: np.ndarray, included: np.ndarray, delta: float,
          confidence: float = CONFIDENCE, proven_epsilon: Optional[float] = None) -> Dict:
  """The one-run audit of m canaries: the best bound over the fixed guess counts (Bonferroni).

  Args:
    losses: float [m], each canary's loss under the released model.
    included: bool [m], whether each canary was in the training set (the auditor's coins).
    delta: the run's δ (the null hypothesis is (ε, δ)-DP).
    confidence: of the lower bound.
    proven_epsilon: the run's proven ε, to flag a bound above it; None for non-private runs.

  Returns:
    A dict of audit_epsilon_lower_bound, audit_guesses, audit_correct, the membership-inference
    figures on the canaries (mia_auc, mia_tpr_at_fpr_0.01, mia_tpr_at_fpr_0.001), and an
    "audit" dict with the details and the note that none of it is covered by the guarantee.
  """
  losses, included = np.asarray(losses, np.float64), np.asarray(included, bool)
  if losses.shape != included.shape or losses.ndim != 1 or len(losses) < 2:
    raise ValueError(f"need one loss per canary and at least 2 canaries, got {losses.shape} "
                     f"losses and {included.shape} inclusions")
  if not np.all(np.isfinite(losses)):
    raise ValueError("a canary's loss is not finite; the audit needs finite scores")
  m = len(losses)
  counts = guess_counts(m)
  share = 1 - (1 - confidence) / len(counts)  # Bonferroni over the guess counts.
  tried = []
  for count in counts:
    made, right = guess(losses, included, count)
    tried.append(Guesses(made, right, epsilon_lower_bound(m, made, right, delta, share)))
  best = max(tried, key=lambda g: (g.epsilon_lower_bound, g.correct / g.guesses))
  above = proven_epsilon is not None and best.epsilon_lower_bound > proven_epsilon
  return {
      "audit_epsilon_lower_bound": best.epsilon_lower_bound,
      "audit_guesses": best.guesses,
      "audit_correct": best.correct,
      **membership_inference(-losses[included], -losses[~included]),
      "audit": {"canaries": m, "included": int(included.sum()), "confidence": confidence,
                "delta": delta, "method": "Steinke, Nasr & Jagielski 2023, one run, "
                "loss scores, Bonferroni over the guess counts",
                "tried": [dataclasses.asdict(g) for g in tried],
                "proven_epsilon": proven_epsilon, "above_proven": above,
                "verdict": verdict(best.epsilon_lower_bound, proven_epsilon), "note": NOTE},
  }


def verdict(bound: float, proven_epsilon: Optional[float]) -> str:
  """One line for logs and the model card; loud when the bound exceeds the proof."""
  if proven_epsilon is None:
    return f"empirical ε >= {bound:.3f} (no proven ε: the run is not private)"
  if bound > proven_epsilon:
    return (f"PROBABLE BUG: the audit's lower bound ε >= {bound:.3f} exceeds the proven "
            f"ε = {proven_epsilon:.3f}; the code that ran does not match the proof")
  return f"empirical ε >= {bound:.3f}, consistent with the proven ε = {proven_epsilon:.3f}"


def membership_inference(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> Dict:
  """Loss-threshold membership inference: ROC AUC and TPR at FPR 1% and 0.1%.

  Scores are higher for "more likely a member" (minus the loss). A TPR at an FPR below
  1 / len(nonmember_scores) is the TPR at no false positive.
  """
  if len(member_scores) == 0 or len(nonmember_scores) == 0:
    return {"mia_auc": None, **{f"mia_tpr_at_fpr_{f:g}": None for f in MIA_FPRS}}
  truth = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
  scores = np.r_[member_scores, nonmember_scores]
  fpr, tpr, _ = sk_metrics.roc_curve(truth, scores)
  return {"mia_auc": float(sk_metrics.roc_auc_score(truth, scores)),
          **{f"mia_tpr_at_fpr_{f:g}": float(np.max(tpr[fpr <= f])) for f in MIA_FPRS}}
