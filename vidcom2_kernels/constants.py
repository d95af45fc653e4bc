"""The fixed numbers of VidCom2 (see ALGORITHM.md); every backend reads them from here."""

#: Bandwidths ``a`` of the multi-scale Gaussian similarity ``sum_a exp(-d^2 / (2a))``.
#: All are powers of two, so ``-d^2 / (2a)`` is an exact scaling in float32.
GAUSSIAN_BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)
#: Fraction of channels kept (those of lowest variance over the video).
CHANNEL_FRACTION = 0.5
#: Softmax temperature of the frame uniqueness.
TEMPERATURE = 0.01
#: Lower bound of a token's L2 norm before dividing by it.
NORM_EPS = 1e-12
#: Features count as non-finite (validation raises) when a value is NaN, +-Inf or at least this large
#: in magnitude: below it no float32 statistic of the pipeline can overflow (a channel's sum of
#: squared deviations over 2**31 rows, a row's sum of squares over 2**32 channels).
MAX_ABS = 2.0**44
#: DyCoke: lower bound of each norm in the cosine similarity ``x.y / (max(|x|, eps) max(|y|, eps))``.
COSINE_EPS = 1e-8


def kept_channels(num_channels: int) -> int:
    """``max(1, floor(C * 0.5))``: how many channels the score uses."""
    return max(1, int(num_channels * CHANNEL_FRACTION))
