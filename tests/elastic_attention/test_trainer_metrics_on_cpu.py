"""The rollout Omega_MSR step metrics of the elastic trainer modes, hand-computed."""

import pytest

from verl_ext.elastic_attention.trainer_metrics import rollout_msr_metrics


def test_rollout_msr_metrics_over_responses_that_carry_one():
    extra = [{"elastic_msr": 0.25}, {"elastic_msr": 0.75}, {}, None, {"elastic_msr": None}, {"elastic_msr": 0.5}]
    expected = {"elastic/rollout_msr/mean": 0.5, "elastic/rollout_msr/min": 0.25, "elastic/rollout_msr/max": 0.75,
                "elastic/rollout_msr/responses": 3.0}
    assert rollout_msr_metrics(extra) == pytest.approx(expected)
    assert rollout_msr_metrics([{}, None]) == {}  # e.g. a vLLM rollout: nothing logged (the trainer warns once)
