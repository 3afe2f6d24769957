"""Token type ids and feature channel layout (the tokenizer contract).

Feature vector: 15 float32 channels
    0:3   point xyz (POINT, Q_POINT) or ray hit point x_hit * hit (RAY, A_RAY)
    3:6   ray origin o
    6:9   ray direction d
    9     ray t
    10    point distance (UDF)
    11    ray hit flag
    12:15 ray normal * hit
"""

BOS, POINT, RAY, MISSING_RAY, EOS, Q_POINT, A_POINT, Q_RAY, A_RAY = range(9)
TYPE_NAMES = ("BOS", "POINT", "RAY", "MISSING_RAY", "EOS", "Q_POINT", "A_POINT", "Q_RAY", "A_RAY")
N_TYPES_LEGACY = 5
N_TYPES_QA = 9
FEAT_DIM = 15

CH_XYZ = slice(0, 3)
CH_O = slice(3, 6)
CH_D = slice(6, 9)
CH_T = 9
CH_DIST = 10
CH_HIT = 11
CH_N = slice(12, 15)

ANSWER_TYPES = (A_POINT, A_RAY)
QUERY_LIKE_TYPES = (Q_POINT, Q_RAY, POINT, RAY)
POINT_TARGET_TYPES = (A_POINT, POINT)
RAY_TARGET_TYPES = (A_RAY, RAY)


def n_types(qa_tokens: bool) -> int:
    return N_TYPES_QA if qa_tokens else N_TYPES_LEGACY


def required_len(n_point: int, n_ray: int, qa_tokens: bool, add_eos: bool) -> int:
    """Sequence length T of a tokenised shape."""
    per = 2 if qa_tokens else 1
    return 1 + per * (n_point + n_ray) + int(bool(add_eos))
