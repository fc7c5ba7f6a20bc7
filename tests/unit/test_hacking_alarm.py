"""The reward-hacking alarm as a pure decision over crafted validation histories (the training reward up while
val utility@256 or val claim precision falls: alarm; every other combination: none), its history read back from
metrics.jsonl records (a resumed run's repeated steps, the reward logged after each validation), and where its keys
are refused."""

from __future__ import annotations

import pytest

from caprl_kit.config import load_config
from caprl_kit.errors import ConfigError
from caprl_kit.hacking import HackingAlarmConfig, ValPoint, hacking_alarm, raised_alarms, validation_points

CFG = HackingAlarmConfig()  # window 3, min_reward_rise 0.02, min_drop 0.02
UTIL, PREC = "val/utility@256", "val/claim_precision"


def history(rewards: list[float | None], **metrics: list[float | None]) -> list[ValPoint]:
    keys = {"utility": UTIL, "precision": PREC}
    return [ValPoint(10 * i, r, {keys[k]: v[i] for k, v in metrics.items()}) for i, r in enumerate(rewards)]


def test_reward_up_while_utility_at_256_falls_raises_the_alarm() -> None:
    raised, reason = hacking_alarm(history([0.30, 0.40, 0.50], utility=[0.60, 0.55, 0.50]), CFG)
    assert raised
    assert reason == ("training reward rose 0.200 (0.300 -> 0.500) over steps 0-20 while val utility@256 fell "
                      "0.100 (0.600 -> 0.500)")


def test_reward_up_while_claim_precision_falls_raises_the_alarm() -> None:
    raised, reason = hacking_alarm(
        history([0.30, 0.35, 0.40], utility=[0.50, 0.50, 0.51], precision=[0.90, 0.80, 0.70]), CFG)
    assert raised and "val claim precision fell 0.200 (0.900 -> 0.700)" in reason
    assert "utility" not in reason  # the steady one is not named
    both = hacking_alarm(history([0.3, 0.4, 0.5], utility=[0.6, 0.5, 0.4], precision=[0.9, 0.8, 0.7]), CFG)[1]
    assert "val utility@256 fell" in both and " and val claim precision fell" in both


def test_reward_up_with_both_steady_is_no_alarm() -> None:
    assert hacking_alarm(
        history([0.30, 0.40, 0.50], utility=[0.60, 0.61, 0.60], precision=[0.90, 0.90, 0.91]), CFG) == (False, None)


def test_reward_flat_while_utility_falls_is_no_alarm() -> None:
    assert hacking_alarm(history([0.40, 0.40, 0.40], utility=[0.60, 0.50, 0.40]), CFG) == (False, None)
    assert hacking_alarm(history([0.50, 0.45, 0.40], utility=[0.60, 0.50, 0.40]), CFG) == (False, None)  # falling


def test_margins_window_and_missing_values() -> None:
    falling = [0.60, 0.50, 0.40]
    # a rise below min_reward_rise, a drop below min_drop: none; both margins are configurable
    assert not hacking_alarm(history([0.40, 0.405, 0.41], utility=falling), CFG)[0]
    assert hacking_alarm(history([0.40, 0.405, 0.41], utility=falling), HackingAlarmConfig(min_reward_rise=0.005))[0]
    assert not hacking_alarm(history([0.3, 0.4, 0.5], utility=[0.60, 0.595, 0.59]), CFG)[0]
    assert hacking_alarm(history([0.3, 0.4, 0.5], utility=[0.60, 0.595, 0.59]), HackingAlarmConfig(min_drop=0.01))[0]
    # fewer validations with a reward than the window: none (the first validation, before training, has none)
    assert not hacking_alarm(history([None, 0.3, 0.5], utility=[0.9, 0.6, 0.4]), CFG)[0]
    assert hacking_alarm(history([None, 0.3, 0.5], utility=[0.9, 0.6, 0.4]), HackingAlarmConfig(window=2))[0]
    # only the last window counts: an early fall that recovered is no alarm now
    assert not hacking_alarm(history([0.1, 0.2, 0.3, 0.4, 0.5], utility=[0.9, 0.5, 0.5, 0.5, 0.5]), CFG)[0]
    # a metric missing at a validation of the window is not judged
    assert not hacking_alarm(history([0.3, 0.4, 0.5], utility=[0.6, None, 0.4]), CFG)[0]
    # the trend is the least-squares line over the steps: one noisy dip is not a fall
    assert not hacking_alarm(history([0.3, 0.4, 0.5, 0.6], utility=[0.6, 0.4, 0.7, 0.6]),
                             HackingAlarmConfig(window=4))[0]


def test_history_from_metrics_records() -> None:
    records = [
        {"step": 0, "val/qa_accuracy": 0.2, UTIL: 0.2},
        {"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.3},
        {"step": 2, "val/qa_accuracy": 0.3, UTIL: 0.6},  # written before step 2's own log line
        {"step": 3, "reward": 9.0}, {"step": 4, "val/qa_accuracy": 0.1, UTIL: 0.1},  # the killed run's steps...
        {"step": 2, "reward": 0.5}, {"step": 3, "reward": 0.7},  # ... logged again by the resumed run
        {"step": 4, "val/qa_accuracy": 0.4, UTIL: 0.5, PREC: 0.8},
    ]
    points = validation_points(records)
    assert [(p.step, p.reward) for p in points] == [(0, None), (2, 0.1), (4, pytest.approx(0.6))]
    assert points[-1].metrics == {UTIL: 0.5, PREC: 0.8}
    assert [p.step for p in validation_points(records, upto=3)] == [0, 2]
    alarms = [{"step": 4, "monitor/hacking_alarm": 1, "monitor/hacking_reason": "why"},
              {"step": 6, "monitor/hacking_alarm": 1, "monitor/hacking_reason": "stale"},
              {"step": 6, "monitor/hacking_alarm": 0}, {"step": 8, "monitor/hacking_alarm": 1}]
    assert raised_alarms(alarms) == {4: "why", 8: ""} and raised_alarms(alarms, upto=7) == {4: "why"}


TRL_VAL = ["data.val_files=[val.parquet]"]


@pytest.mark.parametrize("recipe, overrides, key, why", [
    ("train/grpo_qwen25vl3b_verl", ["trl.val_faithfulness=true"], "trl.val_faithfulness", "trainer: verl"),
    ("train/grpo_qwen25vl3b_verl", ["trl.hacking_alarm.window=5"], "trl.hacking_alarm", "trainer: verl"),
    ("train/grpo_tiny_trl", ["trl.hacking_alarm.min_drop=0.05"], "trl.hacking_alarm", "data.val_files is empty"),
    ("train/grpo_tiny_trl", [*TRL_VAL, "trl.select_on_val=false", "trl.val_faithfulness=true"],
     "trl.val_faithfulness", "trl.select_on_val is false"),
    ("train/dpo_qwen25vl3b_trl", ["trl.hacking_alarm.window=4"], "trl.hacking_alarm", "method: dpo"),
    ("train/grpo_qwen25vl3b_verl", ["trl.select_on=qa_and_faithfulness"], "trl.select_on", "trainer: verl"),
    ("train/grpo_tiny_trl", [*TRL_VAL, "trl.val_faithfulness=true", "trl.select_on=qa_and_faithfulness"],
     "trl.select_on", "faithfulness has no weight there"),
    ("train/sanity_tiny_faithful_trl", ["trl.val_faithfulness=false"], "trl.select_on",
     "reads the validation claim precision"),
    ("train/sanity_tiny_faithful_trl", ["trl.select_on_val=false", "trl.val_faithfulness=false"], "trl.select_on",
     "trl.select_on_val is false"),
])
def test_the_audit_keys_are_refused_where_nothing_reads_them(recipe, overrides, key, why) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(recipe, overrides)
    assert [i.path for i in err.value.issues] == [key] and why in err.value.issues[0].message


@pytest.mark.parametrize("recipe, overrides", [
    ("train/grpo_tiny_trl", [*TRL_VAL, "trl.val_faithfulness=true", "trl.hacking_alarm.window=4"]),
    ("train/grpo_tiny_trl", ["trl.hacking_alarm=null"]),  # off: nothing to refuse
    ("train/grpo_qwen25vl3b_verl", ["trl.hacking_alarm=null"]),
    ("train/dpo_qwen25vl3b_trl", ["trl.val_faithfulness=true"]),  # DPO validates too
])
def test_the_audit_keys_are_accepted_where_validation_reads_them(recipe, overrides) -> None:
    cfg = load_config(recipe, overrides)
    assert cfg.trl.hacking_alarm in (None, HackingAlarmConfig(window=4), HackingAlarmConfig())


def test_select_on_weighs_accuracy_and_claim_precision_as_the_reward_weighs_its_terms() -> None:
    """The faithfulness proof's arm (qa_accuracy 1.0 + faithfulness 0.25) picks the checkpoint that lies less at a
    little less accuracy; selected on accuracy alone, the same two validations pick the other one."""
    from caprl_kit.train.trl_callbacks import selection_score

    both = load_config("train/sanity_tiny_faithful_trl", [])
    lying, truthful = ({"val/qa_accuracy": 0.95, "val/claim_precision": 0.80},
                       {"val/qa_accuracy": 0.94, "val/claim_precision": 0.90})
    assert selection_score(both, lying) == pytest.approx(1.15) and lying["val/score"] == pytest.approx(1.15)
    assert selection_score(both, truthful) == pytest.approx(1.165)
    assert selection_score(both, truthful) > selection_score(both, lying)
    assert selection_score(both, {"val/qa_accuracy": 0.5, "val/claim_precision": None}) == pytest.approx(0.5)
    accuracy = load_config("train/sanity_tiny_faithful_trl", ["trl.select_on=qa_accuracy"])
    plain = {"val/qa_accuracy": 0.95, "val/claim_precision": 0.80}
    assert selection_score(accuracy, plain) == 0.95 > selection_score(accuracy, dict(truthful))
    assert "val/score" not in plain
