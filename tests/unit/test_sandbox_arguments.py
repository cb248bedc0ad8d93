"""The benchmarks' argparse types: good input passes, bad input is one line."""

import argparse

import pytest

from swarmhub.sandbox import arguments


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (arguments.positive_int, "50", 50),
        (arguments.positive_int, " 7 ", 7),
        (arguments.positive_int_list, "100,300,1000", [100, 300, 1000]),
        (arguments.non_negative_int, "0", 0),
        (arguments.positive_seconds, "0.5", 0.5),
        (arguments.non_negative_seconds, "0", 0.0),
    ],
)
def test_good_input(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (arguments.positive_int, "0"),
        (arguments.positive_int, "-3"),
        (arguments.positive_int, "2.5"),
        (arguments.positive_int, "many"),
        (arguments.positive_int_list, "100,,300"),
        (arguments.positive_int_list, "100,0"),
        (arguments.non_negative_int, "-1"),
        (arguments.positive_seconds, "0"),
        (arguments.positive_seconds, "nan"),
        (arguments.positive_seconds, "inf"),
        (arguments.non_negative_seconds, "-1"),
        (arguments.non_negative_seconds, "soon"),
    ],
)
def test_bad_input_is_one_line(parse, text):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        parse(text)
    assert "\n" not in str(raised.value)
    assert " is not a " in str(raised.value)
