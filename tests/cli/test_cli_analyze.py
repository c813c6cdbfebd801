"""In-process CLI tests of `exonta analyze`: bad input gives one line and exit code 2."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from exonta.cli.main import app

runner = CliRunner()


def _tiff(path, n=5, h=32, w=40, dtype=np.uint8):
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 50, size=(n, h, w)).astype(dtype))
    return path


def _assert_clean_error(res, fragment):
    assert res.exit_code == 2, res.output
    err = res.stderr
    assert "Traceback" not in res.output and "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("exonta: error:")
    assert fragment in lines[0], lines[0]


def test_missing_video(tmp_path):
    res = runner.invoke(app, ["analyze", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "out")])
    _assert_clean_error(res, "not found")
    assert not (tmp_path / "out").exists()


def test_missing_pixel_size(tmp_path):
    v = _tiff(tmp_path / "v.tif")
    res = runner.invoke(app, ["analyze", str(v), "--fps", "30", "--out", str(tmp_path / "out")])
    _assert_clean_error(res, "--pixel-size-um")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--pixel-size-um", "0"), ("--fps", "-3"), ("--pixel-size-um", "nan"),
                                         ("--temperature-c", "500"), ("--dilution", "0")])
def test_nonsense_metadata(tmp_path, flag, value):
    v = _tiff(tmp_path / "v.tif")
    args = ["analyze", str(v), "--pixel-size-um", "0.1", "--fps", "30", flag, value, "--out", str(tmp_path / "o")]
    res = runner.invoke(app, args)
    _assert_clean_error(res, flag.strip("-").replace("-", "_"))


@pytest.mark.parametrize("value, fragment", [("1,2,3", "four whole numbers"), ("a,b,c,d", "four whole numbers"),
                                             ("5,2,3,4", "0 <= x0 < x1")])
def test_bad_exclude_region(tmp_path, value, fragment):
    v = _tiff(tmp_path / "v.tif")
    res = runner.invoke(app, ["analyze", str(v), "--pixel-size-um", "0.1", "--fps", "30", "--exclude-region", value,
                              "--out", str(tmp_path / "o")])
    _assert_clean_error(res, fragment)
    assert not (tmp_path / "o").exists()


def test_corrupt_video(tmp_path):
    v = tmp_path / "bad.avi"
    v.write_bytes(np.random.default_rng(1).bytes(5000))
    res = runner.invoke(app, ["analyze", str(v), "--pixel-size-um", "0.1", "--fps", "30", "--out", str(tmp_path / "o")])
    _assert_clean_error(res, "bad.avi")
    assert not (tmp_path / "o").exists()


def test_unknown_config_key(tmp_path):
    v = _tiff(tmp_path / "v.tif")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[detect]\nthreshold_sn = 4\n")
    res = runner.invoke(app, ["analyze", str(v), "--pixel-size-um", "0.1", "--fps", "30", "--config", str(cfg),
                              "--out", str(tmp_path / "o")])
    _assert_clean_error(res, "threshold_sn")


def test_version_and_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("exonta ")
    res = runner.invoke(app, ["analyze", "--help"])
    assert res.exit_code == 0 and "--pixel-size-um" in res.stdout


def test_import_prefetch_starts_once_at_the_detection(monkeypatch):
    """The result writer's imports start in a thread only once the detection reports (the main thread's own
    imports are done then: concurrent imports of modules that import each other can deadlock)."""
    from exonta.cli import analyze as cli_analyze

    started = []
    monkeypatch.setattr(cli_analyze, "_prefetch_imports", lambda: started.append(1))
    seen = []
    report = cli_analyze._prefetch_on_detect(lambda d, t, s: seen.append((d, t, s)) or (s != "stop"))
    assert report(0, 1, "open") is True and started == []
    assert report(0, 10, "detect") is True and started == [1]
    report(5, 10, "detect")
    report(1, 1, "link")
    assert started == [1] and report(0, 1, "stop") is False
    assert seen[:2] == [(0, 1, "open"), (0, 10, "detect")]


def test_summary_table_shows_sample_sizes_only_when_calibrated(capsys):
    from exonta.cli.analyze import print_summary

    summary = {"size_nm": {"mode": 96.0, "d50": 111.0, "peaks": [{"diameter_nm": 96.0, "number_fraction": 1.0}]},
               "concentration_per_ml": {"value": 1.3e9, "ci95_low": 1e9, "ci95_high": 1.6e9},
               "counts": {"mean_particles_per_frame": 20.0, "n_valid_tracks": 900, "n_tracks": 3000},
               "input": {"path": "ev.tif"}, "drift_um_per_s": [0.0, 0.0], "warnings": []}
    print_summary(summary, None)
    assert "in the sample" not in capsys.readouterr().out
    summary["concentration_per_ml"]["size_nm"] = {"d10": 68.0, "d50": 109.5, "d90": 173.3}
    print_summary(summary, None)
    out = capsys.readouterr().out
    assert "in the sample" in out and "68 / 110 / 173" in out


def test_summary_table_names_track_and_sample_fractions_of_peaks(capsys, monkeypatch):
    from exonta.cli.analyze import print_summary

    monkeypatch.setenv("COLUMNS", "200")  # one table row per line

    peaks = [{"diameter_nm": 98.0, "number_fraction": 0.35}, {"diameter_nm": 201.0, "number_fraction": 0.65}]
    summary = {"size_nm": {"mode": 201.0, "d50": 150.0, "peaks": peaks},
               "concentration_per_ml": {"value": 2e8, "ci95_low": 1.5e8, "ci95_high": 2.5e8},
               "counts": {"mean_particles_per_frame": 20.0, "n_valid_tracks": 900, "n_tracks": 3000},
               "input": {"path": "mix.tif"}, "drift_um_per_s": [0.0, 0.0], "warnings": []}
    print_summary(summary, None)
    out = capsys.readouterr().out
    assert "35% of tracks" in out and "65% of tracks" in out and "% in the sample" not in out
    summary["concentration_per_ml"]["size_nm"] = {
        "d10": 90.0, "d50": 110.0, "d90": 210.0,
        "peaks": [{"diameter_nm": 98.0, "number_fraction": 0.52}, {"diameter_nm": 201.0, "number_fraction": 0.48}]}
    print_summary(summary, None)
    out = capsys.readouterr().out
    assert "35% of tracks, 52% in the sample" in out and "65% of tracks, 48% in the sample" in out


def test_fast_search_flag_analyses_the_sample_with_the_binned_search(tmp_path):
    from pathlib import Path

    video = Path(__file__).resolve().parents[2] / "sample_data" / "beads100.tif"
    res = runner.invoke(app, ["analyze", str(video), "--out", str(tmp_path / "out"), "--fast-search", "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads(next((tmp_path / "out").glob("*/summary.json")).read_text())
    assert summary["parameters"]["detect"]["search_binning"] == 2
    assert summary["size_nm"]["d50"] == pytest.approx(100.0, rel=0.08)  # the sample's 100 nm beads
    assert summary["counts"]["n_valid_tracks"] > 50


def test_summary_names_where_each_acquisition_value_came_from(capsys, monkeypatch):
    from exonta.cli.analyze import acquisition_line, print_summary

    monkeypatch.setenv("COLUMNS", "200")
    summary = {"size_nm": {"d50": 103.4}, "concentration_per_ml": {"value": 1.97e9},
               "counts": {"mean_particles_per_frame": 24.8, "n_valid_tracks": 148, "n_tracks": 321},
               "input": {"path": "mm.tif"}, "drift_um_per_s": [0.0, 0.0], "warnings": [],
               "acquisition": {"pixel_size_um": 0.166, "fps": 30.001, "exposure_s": 0.0333333, "temperature_c": 22.0},
               "acquisition_sources": {"pixel_size_um": "file", "fps": "file", "exposure_s": "default",
                                       "temperature_c": "cli"}}
    assert acquisition_line(summary) == ("acquisition: 0.166 µm/px (file), 30 frames/s (file), exposure 33.3 ms "
                                         "(assumed), 22 °C (given)")
    print_summary(summary, None)
    assert "acquisition: 0.166 µm/px (file)" in capsys.readouterr().out
    assert acquisition_line({"acquisition": {}}) is None


def test_summary_table_shows_a_dash_for_missing_statistics_and_the_drift_error(capsys, monkeypatch):
    """Too few tracks (a buffer blank): "—" and no interval instead of "nan" and "nan–nan"; the drift row carries
    its standard error."""
    from exonta.cli.analyze import print_summary

    monkeypatch.setenv("COLUMNS", "200")
    nan = float("nan")
    summary = {"size_nm": {"mode": nan, "d50": nan, "ci95": {"d50": [nan, nan]}, "peaks": []},
               "concentration_per_ml": {"value": 0.0, "ci95_low": 0.0, "ci95_high": 3e6},
               "counts": {"mean_particles_per_frame": 0.0, "n_valid_tracks": 2, "n_tracks": 284},
               "input": {"path": "blank.tif"}, "drift_um_per_s": [-0.81, -5.79],
               "drift_se_um_per_s": [2.7, 2.6], "warnings": []}
    print_summary(summary, None)
    out = capsys.readouterr().out
    assert "nan" not in out and "D50 (nm)" in out and "—" in out
    assert "-0.81, -5.79" in out and "± 2.7, 2.6 (SE)" in out
    assert "in sized tracks" not in out  # an older summary without the tracked spots: nothing invented
    summary["concentration_per_ml"]["tracked_spots_per_frame"] = 20.34
    print_summary(summary, None)
    assert "counted; 20.3 in sized tracks" in capsys.readouterr().out
