"""Property test: any array either passes validation exactly when it fits the spec, or gets
InvalidInput; nothing else ever escapes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecl import InvalidInput
from edgecl.bundle import InputSpec
from edgecl.device import InputValidator

SPEC = InputSpec(shape=(2, 3, 3), value_range=(0.0, 1.0), mean=(0.0, 0.0), std=(1.0, 1.0))
VALIDATOR = InputValidator(SPEC, max_batch=4)

shapes = st.one_of(
    st.just((2, 3, 3)), st.tuples(st.integers(0, 6), st.just(2), st.just(3), st.just(3)),
    hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4))
dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_])


def fits(a: np.ndarray) -> bool:
    batch = a[None] if a.ndim == 3 else a
    return (a.dtype == np.float32 and a.ndim in (3, 4) and batch.shape[1:] == (2, 3, 3)
            and 1 <= batch.shape[0] <= 4 and bool(np.isfinite(batch).all())
            and bool(((batch >= 0) & (batch <= 1)).all()))


@settings(max_examples=300, deadline=None)
@given(shapes.flatmap(lambda s: dtypes.flatmap(lambda d: hnp.arrays(d, s))))
def test_validator_accepts_exactly_what_fits(a):
    try:
        out = VALIDATOR.check(a)
    except InvalidInput as exc:
        assert not fits(a), f"valid input refused: {exc}"
        assert "float32 NCHW" in str(exc) or "max_batch" in str(exc)
    else:
        assert fits(a), f"invalid input accepted: dtype {a.dtype} shape {a.shape}"
        assert out.shape[1:] == (2, 3, 3) and out.flags.c_contiguous


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float32, (2, 2, 3, 3), elements=st.floats(width=32, allow_nan=True,
                                                              allow_infinity=True)),
       hnp.arrays(np.bool_, (2, 2, 3, 3)))
def test_a_mask_hides_nothing_from_the_validator(data, mask):
    masked = np.ma.MaskedArray(data, mask=mask)
    try:
        out = VALIDATOR.check(masked)
    except InvalidInput:
        assert not fits(data)
    else:
        assert fits(data) and type(out) is np.ndarray
        assert np.array_equal(out, data)
