"""Which JSON numbers TF Serving's parser refuses as too big for a double.

TF Serving parses requests with rapidjson 1.1.0 (``ParseJson`` in ``util/json_tensor.cc``:
``kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag``, so not
``kParseFullPrecisionFlag``). Its ``ParseNumber`` answers "Number too big to be stored in
double." for an integer part that grows past 1.7976931348623157e307 once it no longer fits 64
bits, and for a positive exponent above 308 less the fraction digits it took into the
significand; any other number it reads, an integer beyond int64 and uint64 as a double, a
finite number beyond the double range as infinity (``1.8e308``). Python reads them all, and
orjson refuses every number a double cannot hold, so only the stdlib fallback of
``codec.parse_json`` asks, of an integer beyond 64 bits or a number Python reads as infinite.
Not followed: a zero with an exponent above 308 (``0e400``), which rapidjson refuses and both
Python and orjson read as 0.
"""
from __future__ import annotations

_GUARD = 1.7976931348623157e307  # DBL_MAX / 10: rapidjson's check before each further digit
_FAST_SIGNIFICAND = 2**53 - 1  # fraction digits join a 64-bit significand while it is at most this
_SIGNIFICANT_DIGITS = 17  # then a double one, while fewer digits than this are significant


def too_big(token: str) -> bool:
    """Whether rapidjson refuses the number ``token``, spelled as JSON's grammar allows."""
    negative = token.startswith("-")
    mantissa, _, exponent = token[negative:].lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    limit = 2**63 if negative else 2**64 - 1
    significand, double = 0, None  # exact while it fits 64 bits, then rapidjson's double
    significant = 0  # digits rapidjson counts: all but the first of the exact integer part
    for position, char in enumerate(whole):
        digit = ord(char) - 48
        if double is None and significand * 10 + digit <= limit:
            significand = significand * 10 + digit
            significant += position > 0
            continue
        if double is None:
            double = float(significand)
        if double >= _GUARD:
            return True
        double = double * 10 + digit
    if not exponent or exponent[0] == "-":
        return False
    exp_frac = 0  # minus the fraction digits taken into the significand
    taken = 0
    if double is None:
        while taken < len(fraction) and significand <= _FAST_SIGNIFICAND:
            significand = significand * 10 + ord(fraction[taken]) - 48
            taken += 1
            significant += significand != 0
        exp_frac -= taken
        double = float(significand)
    for char in fraction[taken:]:
        if significant < _SIGNIFICANT_DIGITS:
            double = double * 10 + ord(char) - 48
            exp_frac -= 1
            significant += double > 0
    return int(exponent.lstrip("+")) > 308 - exp_frac
