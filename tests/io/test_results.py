import json
import os

import numpy as np
import pandas as pd
import pytest

from exonta.errors import ExontaInputError
from exonta.io import results


def test_write_result_dir_is_complete_and_replaces(tmp_path):
    df = pd.DataFrame({"a": [1, 2]})
    out = results.write_result_dir(tmp_path, "v1", {"summary.json": {"schema": results.SUMMARY_SCHEMA, "x": float("nan")},
                                                    "t.parquet": df, "t.csv": df, "n.txt": "hi"})
    assert sorted(p.name for p in out.iterdir()) == ["n.txt", "summary.json", "t.csv", "t.parquet"]
    assert json.loads((out / "summary.json").read_text())["x"] is None  # NaN → null, valid JSON
    assert pd.read_parquet(out / "t.parquet").equals(df)
    results.write_result_dir(tmp_path, "v1", {"summary.json": {"schema": results.SUMMARY_SCHEMA, "x": 2}})
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no temp or old folders left behind


def test_failed_writer_leaves_nothing(tmp_path):
    def boom(path):
        path.write_text("partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        results.write_result_dir(tmp_path, "v", {"a.txt": "ok", "b.txt": boom})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_input_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ExontaInputError, match="not writable"):
        results.write_result_dir(ro, "v", {"a.txt": "x"})


def test_unwritable_output_path_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExontaInputError, match="cannot create output folder"):
        results.write_result_dir(f / "sub", "v", {"a.txt": "x"})


def test_safe_name_cannot_escape():
    assert results.safe_name("../../etc") == "_.._etc"
    assert "/" not in results.safe_name("a/b\\c") and results.safe_name("..") == "unnamed"
    assert results.safe_name("Probe µ 1") == "Probe µ 1"


def test_atomic_write_text_and_read_summary(tmp_path):
    p = tmp_path / "summary.json"
    results.atomic_write_text(p, json.dumps({"schema": results.SUMMARY_SCHEMA}))
    assert results.read_summary(tmp_path)["schema"] == results.SUMMARY_SCHEMA
    p.write_text("{broken")
    with pytest.raises(ExontaInputError, match="not valid JSON"):
        results.read_summary(tmp_path)
    p.write_text('{"schema": "other"}')
    with pytest.raises(ExontaInputError, match="not an exonta summary"):
        results.read_summary(tmp_path)


def test_config_to_toml_round_trip():
    import tomllib

    text = results.config_to_toml({"acquisition": {"fps": 30.0, "name": 'a "q"', "skip": None},
                                   "detect": {"invert": True, "n": 3}}, header="made by test")
    data = tomllib.loads(text)
    assert data == {"acquisition": {"fps": 30.0, "name": 'a "q"'}, "detect": {"invert": True, "n": 3}}


def test_result_name_of_files_and_folders(tmp_path):
    folder = tmp_path / "run.01"
    folder.mkdir()
    assert results.result_name(folder) == "run.01"  # a folder of images keeps its whole name
    assert results.result_name(tmp_path / "beads 100.tif") == "beads 100"
    assert results.result_name("a:b.avi") == "a_b"  # the CLI's collision check sees the name actually written


def test_atomic_write_honours_the_umask(tmp_path):
    import stat

    old = os.umask(0o027)
    try:
        results.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_csv_files_read_back_identical_to_pandas_csv():
    """Result CSVs are written by Arrow's encoder; read back they equal pandas' own CSV of the same table
    (floats exactly, missing values, booleans, text with separators and quotes, odd column names)."""
    import io

    import numpy as np

    from exonta.io.results import _csv_bytes

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"particle": np.arange(50), "D_um2_s": rng.lognormal(0, 1, 50),
                       "x,y": np.where(rng.random(50) < 0.2, np.nan, rng.normal(0, 1e-12, 50)),
                       "valid": rng.random(50) < 0.5, "note": [f'spot "{i}", edge' for i in range(50)]})
    got = pd.read_csv(io.BytesIO(_csv_bytes(df)))
    pd.testing.assert_frame_equal(got, pd.read_csv(io.StringIO(df.to_csv(index=False))), check_exact=True)
    assert _csv_bytes(df).splitlines()[0] == b'particle,D_um2_s,"x,y",valid,note'


def test_write_parquet_round_trips_and_dictionary_encodes_only_integers(tmp_path):
    import pyarrow.parquet as pq

    from exonta.io.results import write_parquet

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"frame": np.repeat(np.arange(50), 20), "x": rng.uniform(0, 100, 1000),
                       "snr": rng.uniform(3, 30, 1000), "particle": np.tile(np.arange(20), 50)})
    path = tmp_path / "t.parquet"
    write_parquet(df, path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    meta = pq.ParquetFile(path).metadata.row_group(0)
    enc = {meta.column(i).path_in_schema: set(meta.column(i).encodings) for i in range(meta.num_columns)}
    is_dict = {name: any("DICTIONARY" in e for e in e_set) for name, e_set in enc.items()}
    assert is_dict == {"frame": True, "x": False, "snr": False, "particle": True}
