import pytest

# XAttention small enough for test lengths (tens of tokens) and a threshold that drops blocks.
XATTENTION = {"stride": 4, "block": 16, "threshold": 0.1}
PATTERN_OPTIONS = {
    "fa-ssa": {"pattern": "fa-ssa"},
    "fa-xa": {"pattern": "fa-xa", "xattention": XATTENTION},
    "xa-ssa": {"pattern": "xa-ssa", "xattention": XATTENTION},
}


@pytest.fixture(params=sorted(PATTERN_OPTIONS))
def pattern(request) -> dict:
    """ElasticAttentionConfig options of each of the paper's patterns."""
    return PATTERN_OPTIONS[request.param]
