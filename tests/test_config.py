import pytest

from exonta.config import AnalysisConfig, DetectParams, load_config, resolve_acquisition
from exonta.errors import ExontaInputError


def test_precedence_cli_over_config_over_sidecar_over_file(tmp_path):
    video = tmp_path / "v.tif"
    video.write_bytes(b"")
    (tmp_path / "v.exonta.toml").write_text("[acquisition]\npixel_size_um = 0.2\nfps = 25\ntemperature_c = 30\n")
    (tmp_path / "exonta.toml").write_text("[acquisition]\nexposure_s = 0.01\nfps = 10\n[detect]\nthreshold_snr = 7\n")
    cfgfile = tmp_path / "c.toml"
    cfgfile.write_text("[acquisition]\nfps = 50\n[detect]\nthreshold_snr = 4\n")
    cfg, warnings, src = load_config(
        video, config_file=cfgfile, explicit_acquisition={"dilution": 10},
        file_metadata={"pixel_size_um": 0.9, "fps": 99, "exposure_s": 0.005})
    a = cfg.acquisition
    assert a.pixel_size_um == 0.2 and src["pixel_size_um"] == "sidecar"  # sidecar beats file metadata
    assert a.fps == 50 and src["fps"] == "config"  # config beats sidecar and file
    assert a.exposure_s == 0.01 and src["exposure_s"] == "sidecar"  # folder sidecar beats file
    assert a.temperature_c == 30
    assert a.dilution == 10 and src["dilution"] == "cli"
    assert cfg.detect.threshold_snr == 4  # config file beats folder sidecar
    assert warnings == []


def test_file_metadata_used_when_nothing_else():
    acq, warnings, src = resolve_acquisition(file_metadata={"pixel_size_um": 0.166, "fps": 30.0})
    assert acq.pixel_size_um == 0.166 and src["fps"] == "file"
    assert acq.exposure_s == pytest.approx(1 / 30)
    assert acq.viscosity_mpas == pytest.approx(0.9544, abs=1e-4)  # water at default 22 °C
    assert len(warnings) == 2  # temperature and exposure defaults are announced


@pytest.mark.parametrize("missing, flag", [("pixel_size_um", "--pixel-size-um"), ("fps", "--fps")])
def test_missing_required_values_are_a_clear_error(missing, flag):
    vals = {"pixel_size_um": 0.1, "fps": 30}
    vals.pop(missing)
    with pytest.raises(ExontaInputError, match=flag):
        resolve_acquisition(explicit=vals)


@pytest.mark.parametrize("bad", [
    {"pixel_size_um": 0.0}, {"pixel_size_um": -1}, {"pixel_size_um": float("nan")}, {"fps": float("inf")},
    {"temperature_c": 150}, {"dilution": 0}, {"exposure_s": 1.0}, {"pixel_size_um": "abc"}, {"fps": True},
])
def test_nonsense_values_rejected(bad):
    vals = {"pixel_size_um": 0.1, "fps": 30, **bad}
    with pytest.raises(ExontaInputError, match="acquisition"):
        resolve_acquisition(explicit=vals)


def test_a_temperature_in_kelvin_is_named_as_such():
    with pytest.raises(ExontaInputError, match=r"looks like kelvin: give degrees Celsius \(295 K = 21.9 °C\)"):
        resolve_acquisition(explicit={"pixel_size_um": 0.1, "fps": 30, "temperature_c": 295})
    assert resolve_acquisition(explicit={"pixel_size_um": 0.1, "fps": 30, "temperature_c": 37})[0].temperature_c == 37


def test_unknown_keys_rejected(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[acquisition]\npixel_size_um = 0.1\nfps = 30\nfoo = 1\n")
    with pytest.raises(ExontaInputError, match="foo"):
        load_config(config_file=f)
    f.write_text("[acquisition]\npixel_size_um = 0.1\nfps = 30\n[detect]\nthreshhold_snr = 3\n")
    with pytest.raises(ExontaInputError, match="threshhold_snr"):
        load_config(config_file=f)
    f.write_text("[detektion]\n")
    with pytest.raises(ExontaInputError, match="detektion"):
        load_config(config_file=f, explicit_acquisition={"pixel_size_um": 0.1, "fps": 30})


def test_invalid_toml_and_missing_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[acquisition\n")
    with pytest.raises(ExontaInputError, match="not valid TOML"):
        load_config(config_file=f)
    with pytest.raises(ExontaInputError, match="not found"):
        load_config(config_file=tmp_path / "nope.toml")


def test_parameters_hash_changes_with_parameters_only():
    a = AnalysisConfig()
    b = AnalysisConfig(detect=DetectParams(threshold_snr=6))
    assert a.parameters_hash() == AnalysisConfig().parameters_hash()
    assert a.parameters_hash() != b.parameters_hash()
    assert "acquisition" not in a.parameters_dict()


def test_config_saved_by_the_first_depth_model_still_loads():
    """config.toml files written before the counting-threshold model name four retired options."""
    from pydantic import ValidationError

    from exonta.config import ConcentrationParams

    old = {"brightness_column": "signal", "soft_threshold": True, "defocus_model": True, "noise_correction": True,
           "min_linked_frames": 4}
    assert ConcentrationParams(**old).min_linked_frames == 4
    with pytest.raises(ValidationError):
        ConcentrationParams(brightness_columns="signal")  # a typo is still an error


def test_a_temperature_warmer_than_nta_cells_is_questioned_as_fahrenheit():
    """72 °F given as °C is taken as hot water (viscosity 0.39 instead of 0.95 mPa·s: sizes 2.4× too small); it is
    accepted (a heated cell is possible) with a warning that names the Fahrenheit reading."""
    from exonta.config import resolve_acquisition

    acq, warns, src = resolve_acquisition({"pixel_size_um": 0.166, "fps": 30.0, "temperature_c": 72.0})
    assert acq.temperature_c == 72.0 and acq.viscosity_mpas < 0.45
    hot = [w for w in warns if "Fahrenheit" in w]
    assert len(hot) == 1 and "72 °F = 22.2 °C" in hot[0] and "0.393 mPa·s" in hot[0]
    _, warns, _ = resolve_acquisition({"pixel_size_um": 0.166, "fps": 30.0, "temperature_c": 72.0,
                                       "viscosity_mpas": 1.0})
    hot = [w for w in warns if "Fahrenheit" in w]
    assert len(hot) == 1 and "absolute temperature" in hot[0] and "water viscosity" not in hot[0]
    for t in (22.0, 37.0, 55.0):
        _, warns, _ = resolve_acquisition({"pixel_size_um": 0.166, "fps": 30.0, "temperature_c": t})
        assert not [w for w in warns if "Fahrenheit" in w]


def test_a_dilution_given_as_a_fraction_is_questioned():
    """--dilution is the factor (1000 for 1:1000); a fraction multiplies the concentration by it instead."""
    from exonta.config import resolve_acquisition

    acq, warns, _ = resolve_acquisition({"pixel_size_um": 0.166, "fps": 30.0, "dilution": 0.001})
    assert acq.dilution == 0.001
    frac = [w for w in warns if "dilution" in w]
    assert len(frac) == 1 and "diluted 1:1000, give --dilution 1000 " in frac[0]
    for d in (1.0, 1000.0):
        assert not [w for w in resolve_acquisition({"pixel_size_um": 0.166, "fps": 30.0, "dilution": d})[1]
                    if "dilution" in w]
