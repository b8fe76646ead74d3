"""`PrivacyBudget`: ε in a private fit's epoch logs, and the stop before the budget is spent.

A private model's `fit` puts one first in its callback list, so every callback after it
(`History`, `CSVLogger`, `TensorBoard`, `ProgbarLogger`, `ModelCheckpoint`) sees `epsilon`
(RDP, the budget's accountant) and `epsilon_pld` in the epoch's logs. The figures are functions
of σ, q, δ and the step count only: public, no privacy cost. After every epoch and at the end of
`fit` it records the weights with their ledger (tfdp.keras.weights_ledger), before any later
callback saves them, so weights that leave the model carry the privacy they spent.
"""

import tensorflow as tf


class PrivacyBudget(tf.keras.callbacks.Callback):
  """Adds ε to the epoch logs, stops `fit` once the next step would exceed the target, and
  records the weights with their ledger after every epoch and at the end.

  The compiled step refuses a step past the target on its own; this callback ends the epoch
  loop there and says why. Put it in `callbacks` yourself to choose its place; `fit` adds one
  first otherwise.

  Args:
    pld: also report `epsilon_pld` (slower than RDP: about a second per epoch).
  """

  def __init__(self, pld: bool = True):
    super().__init__()
    self._pld = pld
    self.exhausted = False  # Whether fit ended because the budget allows no further step.
    self._cut_short = False  # Whether that happened before the epochs fit was asked for.
    self._epoch = 0
    self._resumed_checked = False

  def _ledger(self):
    return self.model.privacy_ledger

  def _budget_spent(self) -> bool:
    allowed = self.model.max_privacy_steps
    return allowed is not None and int(self.model.privacy_steps.numpy()) >= allowed

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    if not self._resumed_checked:  # After BackupAndRestore's restore in on_train_begin.
      self._resumed_checked = True
      ledger = self._ledger()
      if ledger.steps:
        ledger.record("resume", epoch=epoch)
    if self._budget_spent():
      self._stop()

  def on_train_batch_begin(self, batch, logs=None):
    self.model.apply_noise_schedule()  # σ of the next step under the ledger's noise schedule.

  def on_train_batch_end(self, batch, logs=None):
    if self._budget_spent():
      self._stop(last_batch=batch + 1 >= (self.params.get("steps") or 0))

  def on_epoch_end(self, epoch, logs=None):
    self.model.register_weights()
    if logs is None:
      return
    ledger = self._ledger()
    fields = ledger.epsilon_fields() if self._pld else {
        "epsilon": ledger.epsilon() if ledger.proven else None}
    logs.update({key: value for key, value in fields.items() if value is not None})
    logs["privacy_steps"] = ledger.steps

  def on_train_end(self, logs=None):
    self.model.register_weights()
    if self._cut_short:
      ledger = self._ledger()
      print(f"Stopped after {ledger.steps} steps: the next would spend more than "
            f"ε = {ledger.target_epsilon}.")

  def _stop(self, last_batch: bool = False):
    self.exhausted = True
    self._cut_short |= not (last_batch and self._epoch + 1 >= self.params.get("epochs", 0))
    self.model.stop_training = True
