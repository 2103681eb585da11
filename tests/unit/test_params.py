"""Solve parameters: nova's defaults, and every bad value refused with the field named."""

from __future__ import annotations

import pytest

from nova.engine.params import ParamError, SolveParams, parse_choice, parse_solve_params


def test_absent_fields_take_novas_defaults() -> None:
    params = parse_solve_params({})
    assert params == SolveParams()
    assert (params.scale_units, params.scale_type) == ("degwidth", "ul")
    assert (params.scale_lower, params.scale_upper) == (0.1, 180.0)
    assert (params.downsample_factor, params.tweak_order, params.parity) == (2, 2, 2)
    assert params.center_ra is None and not params.has_position_hint


def test_zero_is_a_valid_position_and_lower_bound() -> None:
    params = parse_solve_params(
        {"center_ra": 0, "center_dec": 0, "radius": 5, "scale_lower": 0, "scale_upper": 2}
    )
    assert (params.center_ra, params.center_dec, params.radius) == (0.0, 0.0, 5.0)
    assert params.has_position_hint
    assert params.scale_bounds() == (0.0, 2.0)


def test_form_strings_and_json_values_parse_alike() -> None:
    from_form = parse_solve_params(
        {
            "scale_units": "APP",
            "scale_lower": "1.5",
            "scale_upper": "2",
            "parity": "1",
            "tweak_order": "0",
            "crpix_center": "true",
            "invert": "on",
            "downsample_factor": "4",
        }
    )
    from_json = parse_solve_params(
        {
            "scale_units": "arcsecperpix",
            "scale_lower": 1.5,
            "scale_upper": 2,
            "parity": 1,
            "tweak_order": 0,
            "crpix_center": True,
            "invert": True,
            "downsample_factor": 4.0,
        }
    )
    assert from_form == from_json
    assert from_form.scale_units == "arcsecperpix"


def test_estimate_and_error_give_bounds() -> None:
    params = parse_solve_params({"scale_type": "ev", "scale_est": 10, "scale_err": 20})
    low, high = params.scale_bounds()  # type: ignore[misc]
    assert low == pytest.approx(8.0) and high == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"scale_units": "furlongs"}, "scale_units"),
        ({"scale_type": "xx"}, "scale_type"),
        ({"scale_type": "ev", "scale_est": 10}, "scale_est"),
        ({"scale_type": "ev", "scale_err": 10}, "scale_est"),
        ({"scale_type": "ev", "scale_est": -1, "scale_err": 10}, "scale_est"),
        ({"scale_lower": 5, "scale_upper": 2}, "scale_upper"),
        ({"scale_lower": -1}, "scale_lower"),
        ({"scale_lower": "abc"}, "scale_lower"),
        ({"scale_upper": "nan"}, "scale_upper"),
        ({"scale_upper": "inf"}, "scale_upper"),
        ({"center_ra": 10, "center_dec": 10}, "radius"),
        ({"center_ra": 10, "radius": 3}, "center_dec"),
        ({"center_ra": 361, "center_dec": 0, "radius": 1}, "center_ra"),
        ({"center_ra": 10, "center_dec": -91, "radius": 1}, "center_dec"),
        ({"center_ra": 10, "center_dec": 0, "radius": 0}, "radius"),
        ({"parity": 3}, "parity"),
        ({"parity": "both"}, "parity"),
        ({"tweak_order": 10}, "tweak_order"),
        ({"tweak_order": 1.5}, "tweak_order"),
        ({"downsample_factor": 0}, "downsample_factor"),
        ({"image_width": -5}, "image_width"),
        ({"positional_error": 0}, "positional_error"),
        ({"crpix_center": "maybe"}, "crpix_center"),
        ({"invert": 7}, "invert"),
        ({"scale_lower": True}, "scale_lower"),
    ],
)
def test_invalid_values_name_their_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_solve_params(data)
    assert caught.value.field == field
    assert caught.value.message


def test_choice_answers() -> None:
    assert parse_choice("publicly_visible", None, ("y", "n"), "y") == "y"
    assert parse_choice("publicly_visible", "N", ("y", "n"), "y") == "n"
    with pytest.raises(ParamError):
        parse_choice("publicly_visible", "yes", ("y", "n"), "y")


def test_params_round_trip_through_a_row() -> None:
    params = parse_solve_params({"center_ra": 1, "center_dec": 2, "radius": 3, "invert": True})

    class Row:
        pass

    row = Row()
    for name, value in params.as_dict().items():
        setattr(row, name, value)
    assert SolveParams.from_row(row) == params


def test_one_declaration_serves_the_columns_the_form_and_the_api() -> None:
    """SolveParams and FIELD_RULES are the parameters; the Submission columns, the upload
    form and the OpenAPI upload options must each have every one of them, with its default."""
    import dataclasses

    from nova.db.models import Submission
    from nova.engine.params import FIELD_RULES
    from nova.web.openapi.schemas import UPLOAD_OPTIONS
    from nova.web.upload import FORM_FIELDS, FORM_FLAGS

    declared = {spec.name: spec for spec in dataclasses.fields(SolveParams)}
    # (FIELD_RULES is in the order values are checked, so an error names the same field.)
    assert sorted(name for name, _read in FIELD_RULES) == sorted(declared)
    columns = Submission.__table__.columns
    for name, spec in declared.items():
        column = columns[name]
        python_type = column.type.python_type
        assert python_type.__name__ in str(spec.type), (name, python_type, spec.type)
        assert column.nullable == ("None" in str(spec.type)), name
        column_default = column.default.arg if column.default is not None else None
        assert column_default == spec.default, (name, column_default, spec.default)
    # The form asks every parameter (header hints as "ignore_header_hints").
    assert set(FORM_FIELDS) | set(FORM_FLAGS) | {"use_header_hints"} == set(declared)
    for name, spec in declared.items():
        schema = UPLOAD_OPTIONS[name]
        if "default" in schema:
            assert schema["default"] == spec.default, name
