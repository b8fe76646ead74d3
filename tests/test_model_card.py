"""The model card states the guarantee that holds for the run, its assumptions, and its coverage."""

import pytest

from tfdp.serving import model_card

_PRIVATE = {"epsilon": 2.9, "epsilon_pld": 2.5, "delta": 1e-5, "accountant": "rdp",
            "sampling": "poisson", "randomness": "secret", "noise_multiplier": 1.2,
            "l2_norm_clip": 1.0, "steps": 100, "test_accuracy": 0.9, "test_loss": 0.3,
            "model": "linear", "optimizer": "dp_sgd"}


def _card(**changes):
  return model_card.build({**_PRIVATE, **changes})


def test_the_proven_guarantee_names_its_assumptions_and_what_it_does_not_cover():
  card = _card(dp_guarantee="proven")
  text = card["guarantee"]
  assert "add/remove-one" in text and "covered_fields" in text
  for phrase in ("secure random source", "kept secret", "groups of examples", "test data",
                 "hyperparameters or runs chosen by looking at results on the private data",
                 "--train_examples", "subset is public", "independent of the private training"):
    assert phrase in text, phrase
  assert card["assumptions"] == list(model_card.ASSUMPTIONS)
  assert card["covered_fields"][0] == model_card.WEIGHTS
  assert {"epsilon", "test_accuracy", "l2_norm_clip", "randomness"} <= set(card["covered_fields"])
  assert card["not_covered"] == []


@pytest.mark.parametrize("kind,opening", [
    ("shuffle", "NOT A PROOF"),
    ("reproducible", "NO DIFFERENTIAL-PRIVACY GUARANTEE against anyone who knows the seed"),
    ("unproven", "NO PROVEN DIFFERENTIAL-PRIVACY GUARANTEE"),
    ("none", "Trained without differential privacy"),
])
def test_runs_without_a_proof_do_not_get_the_proven_text(kind, opening):
  card = _card(dp_guarantee=kind)
  assert card["guarantee"].startswith(opening) and card["dp_guarantee"] == kind
  if kind == "shuffle":  # The approximation still says what it would mean, and what it covers.
    assert model_card.WEIGHTS in card["covered_fields"]
  else:
    assert not card["guarantee"].startswith("Example-level") and card["assumptions"] == []
    assert card["covered_fields"] == []
    assert card["not_covered"][:1] == [model_card.WEIGHTS]
    assert {"test_accuracy", "test_loss"} <= set(card["not_covered"])


def test_metrics_that_do_not_say_which_guarantee_holds_get_none_proven():
  assert _card()["dp_guarantee"] == "reproducible"  # Older runs drew their noise from the seed.
  assert model_card.build({"epsilon": None})["dp_guarantee"] == "none"
  with pytest.raises(ValueError, match="unknown dp_guarantee 'sure'"):
    _card(dp_guarantee="sure")


def test_not_private_monitoring_is_listed_as_not_covered():
  card = _card(dp_guarantee="proven", not_private_monitoring={"note": "x", "train_loss": 0.1})
  assert card["not_covered"] == ["not_private_monitoring"]
  assert "not_private_monitoring" not in card["covered_fields"]


def test_timing_is_listed_as_not_covered():
  """Wall time grows with the chunks each drawn batch needed: the drawn sizes are private."""
  card = _card(dp_guarantee="proven", timing={"examples_per_second": 900.0, "not_private": "x"})
  assert card["not_covered"] == ["timing"] and "timing" not in card["covered_fields"]


def test_skipped_images_are_listed_as_not_covered():
  """Which training files were unusable is a fact about the private data, released without noise."""
  card = _card(dp_guarantee="proven", skipped_images={"train": 2, "test": 0, "examples": ["a.jpg"]})
  assert card["not_covered"] == ["skipped_images"]
  assert "skipped_images" not in card["covered_fields"]


def test_the_card_carries_what_the_guarantee_rests_on():
  for field in ("randomness", "dp_guarantee", "l1_norm_clip", "epsilon_if_dp_sgd", "weights_file",
                "train_subset", "dice_error_clip"):
    assert field in model_card.FIELDS, field
  card = _card(dp_guarantee="proven", noise="laplace", l2_norm_clip=None, l1_norm_clip=5.0)
  assert card["l1_norm_clip"] == 5.0 and "l1_norm_clip" in card["covered_fields"]
