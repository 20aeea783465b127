import pytest

from verl_ext.re2.config import Re2Config


def test_paper_defaults():
    cfg = Re2Config()
    assert (cfg.continuations_per_prefix, cfg.max_redo_rounds, cfg.rho_max, cfg.p_empty) == (8, 5, 0.8, 0.0)
    assert cfg.stop_string == "s better to redo the question"


@pytest.mark.parametrize(
    "values,match",
    [
        ({"continuations_per_prefix": 1}, "needs >= 2 continuations"),
        ({"redo_rule": "loose"}, "re2.redo_rule='loose' must be one of"),
        ({"p_empty": 1.5}, "p_empty=1.5 must be a probability"),
        ({"bogus": 1}, r"unknown keys \['bogus'\]"),
        ({"overlong": {"buffer_length": 0}}, "buffer_length=0 must be > 0"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        Re2Config.from_mapping(values)
