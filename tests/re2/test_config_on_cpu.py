import pytest

from verl_ext.re2.config import Re2Config


def test_paper_defaults():
    cfg = Re2Config()
    assert (cfg.continuations_per_prefix, cfg.max_redo_rounds, cfg.rho_max, cfg.p_empty) == (8, 5, 0.8, 0.0)
    assert cfg.stop_strings == ["s better to redo the question"] and cfg.update_steps == "matched"


@pytest.mark.parametrize(
    "values,match",
    [
        ({"continuations_per_prefix": 1}, "needs >= 2 continuations"),
        ({"redo_rule": "loose"}, "re2.redo_rule='loose' must be one of"),
        ({"update_steps": "many"}, "re2.update_steps='many' must be one of"),
        ({"redo_variants": [""]}, "empty marker"),
        ({"p_empty": 1.5}, "p_empty=1.5 must be a probability"),
        ({"bogus": 1}, r"unknown keys \['bogus'\]"),
        ({"overlong": {"buffer_length": 0}}, "buffer_length=0 must be > 0"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        Re2Config.from_mapping(values)


def test_the_config_block_lists_every_knob_with_its_default():
    """re2_validation.yaml mirrors Re2Config (the source of the defaults), so every `re2.<key>=...` override works."""
    import dataclasses

    from omegaconf import OmegaConf

    from verl_ext.config import config_dir

    block = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/re2_validation.yaml").re2)
    defaults = dataclasses.asdict(Re2Config())
    defaults["redo_variants"] = list(defaults["redo_variants"])
    assert block == defaults
