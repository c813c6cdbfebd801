"""End to end: fake batch output → `exonta report` → HTML + PDF, checked as text, images and in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from report_fakes import SPEC_TOML, fake_summary, make_batch, standard_lots, write_result

EVIL = "<script>alert(1)</script> & \"Q\" 'x'"
PAGES = Path("/tmp/report_pages")


def _app():
    from exonta.cli.main import app

    return app


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Five lots; LOT-004 conforms, LOT-005 fails (mode 160 nm, bead standard +8 %) and holds an evil name."""
    lots = standard_lots(5, last_mode=160.0, bead_mode=108.0)
    lots["LOT-005"][EVIL] = [dict(mode=120.0, seed=91), dict(mode=121.0, seed=92)]
    out = tmp_path_factory.mktemp("batch") / "out"
    return make_batch(out, lots, failed={("LOT-005", "EV-A"): "corrupt TIFF: truncated frame 311"})


@pytest.fixture(scope="module")
def rendered(batch: Path, tmp_path_factory) -> tuple[Path, object]:
    spec = tmp_path_factory.mktemp("spec") / "spec.toml"
    spec.write_text(SPEC_TOML)
    out = tmp_path_factory.mktemp("reports")
    res = CliRunner().invoke(_app(), ["report", str(batch), "--lot", "LOT-004", "--lot", "LOT-005",
                                      "--spec", str(spec), "--out", str(out)])
    return out, res


def _pdftotext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def test_cli_exit_codes_and_files(rendered) -> None:
    out, res = rendered
    assert res.exit_code == 1, res.output          # LOT-005 fails its specification
    for lot in ("LOT-004", "LOT-005"):
        assert (out / f"{lot}.html").stat().st_size > 10_000
        assert (out / f"{lot}.pdf").read_bytes().startswith(b"%PDF-")
        meta = subprocess.run(["pdfinfo", "-meta", str(out / f"{lot}.pdf")], capture_output=True, text=True,
                              timeout=60).stdout
        assert "pdfaid:part" in meta                                 # archival PDF/A (XMP identification)
    lines = res.output.splitlines()
    assert any(l.startswith("PASS") and "lot LOT-004" in l for l in lines)
    assert any(l.startswith("FAIL") and "lot LOT-005" in l for l in lines)
    assert "above the maximum 150.0 nm" in res.output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # atomic writes leave no temp files


def test_passing_lot_exits_0(batch: Path, spec_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["report", str(batch), "--lot", "LOT-004", "--spec", str(spec_file),
                                      "--out", str(tmp_path), "--no-pdf", "--per-sample"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "LOT-004.html").is_file() and not (tmp_path / "LOT-004.pdf").exists()
    per = tmp_path / "LOT-004" / "EV-A.html"
    assert per.is_file()
    html = per.read_text()
    assert "sample <b>EV-A</b>" in html.replace("Sample", "sample") and ">PASS<" in html
    assert "beads100" in html   # the system-suitability standard is part of every report


def test_pdf_text_numbers_and_verdicts(rendered) -> None:
    out, _ = rendered
    bad = _pdftotext(out / "LOT-005.pdf")
    flat = re.sub(r"\s+", " ", bad)
    assert "FAIL" in flat and "SYSTEM SUITABILITY FAILED" in flat
    assert "160.0 nm" in flat                     # the failing mode, with its unit
    assert "deviation +8.0 % from the certified value" in flat
    assert "70.0 nm to 150.0 nm" in flat and "≤ 300.0 nm" in flat
    assert "particles/mL" in flat and "Dilution" in flat
    assert "corrupt TIFF: truncated frame 311" in flat
    assert "OUT OF TREND" in flat
    assert re.search(r"Page 1 of \d+", flat)
    assert "Review and approval" in flat and "Approved by (QA)" in flat
    assert EVIL.replace("'", "'") in flat or "<script>alert(1)</script>" in flat  # shown as text
    good = re.sub(r"\s+", " ", _pdftotext(out / "LOT-004.pdf"))
    assert "PASS" in good and "FAIL" not in good
    assert "108.0 nm" in good                     # LOT-004's pooled mode


def test_pdf_pages_as_png(rendered, tmp_path: Path) -> None:
    from PIL import Image

    out, _ = rendered
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(out / "LOT-005.pdf"), str(tmp_path / "p")], check=True,
                   timeout=120)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert 3 <= len(pages) <= 12
    for p in pages:
        arr = np.asarray(Image.open(p).convert("L"), dtype=float)
        assert arr.shape[0] > arr.shape[1]                      # portrait A4
        assert arr.std() > 5.0                                  # not blank
    first = np.asarray(Image.open(pages[0]).convert("RGB"), dtype=int)
    red = (first[..., 0] > 150) & (first[..., 1] < 80) & (first[..., 2] < 80)
    assert red.sum() > 50                                       # the FAIL verdict is red
    PAGES.mkdir(parents=True, exist_ok=True)
    for lot in ("LOT-005", "LOT-004"):
        for old in PAGES.glob(f"{lot}-*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-png", "-r", "80", str(out / f"{lot}.pdf"), str(PAGES / lot)], check=True,
                       timeout=120)
    assert list(PAGES.glob("LOT-005-*.png"))


def test_html_self_contained_and_escaped(rendered) -> None:
    out, _ = rendered
    html = (out / "LOT-005.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()                        # neither ours nor the sample name's
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;Q&#34; &#39;x&#39;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.I)
    assert "<link" not in html.lower() and "@import" not in html and "@font-face" not in html
    assert "url(" not in html
    imgs = re.findall(r"<img[^>]+src=\"([^\"]+)\"", html)
    assert len(imgs) >= 3 and all(s.startswith("data:image/png;base64,") for s in imgs)
    # the running header in the CSS is escaped for CSS, not HTML
    assert "@top-right" in html and "</style>" in html and html.count("</style>") == 1


def test_chromium_screenshot(rendered, tmp_path: Path) -> None:
    from PIL import Image

    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        for _ in range(12):  # it may still be being installed
            time.sleep(5)
            chromium = shutil.which("chromium")
            if chromium:
                break
    if chromium is None:
        pytest.skip("chromium is not installed on this machine (/usr/bin/chromium missing)")
    out, _ = rendered
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           (out / "LOT-005.html").resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert shot.is_file(), proc.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    arr = np.asarray(img, dtype=int)
    assert arr.std() > 10
    red = (arr[..., 0] > 150) & (arr[..., 1] < 80) & (arr[..., 2] < 80)
    assert red.sum() > 100                                      # the FAIL verdict box and badges
    PAGES.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, PAGES / "LOT-005-chromium.png")


def test_bad_input_exit_2(batch: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[criterion]]\nmetric = "mode_nm"\nmin = 70\nmaximum = 150\n')
    res = runner.invoke(_app(), ["report", str(batch), "--spec", str(bad), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "invalid specification" in res.output and "maximum: unknown key" in res.output
    res = runner.invoke(_app(), ["report", str(batch), "--lot", "LOT-999", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "LOT-999" in res.output
    res = runner.invoke(_app(), ["report", str(batch), "--sample", "nope", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(_app(), ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(_app(), ["report", str(empty), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no exonta result" in res.output
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.html"))


def test_plain_result_folders_one_lot(tmp_path: Path) -> None:
    root = tmp_path / "run42"
    for i, mode in enumerate([101.0, 99.0, 100.0]):
        write_result(root / f"video{i}", fake_summary(f"video{i}", mode=mode, seed=i,
                                                      warnings=["no detection-volume calibration"] if i == 0 else []))
    (tmp_path / "spec.toml").write_text('[[criterion]]\nmetric = "mode_nm"\nmin = 95\nmax = 105\n'
                                        '[[criterion]]\nmetric = "valid_tracks"\nmin = 1000\n')
    res = CliRunner().invoke(_app(), ["report", str(root), "--out", str(tmp_path / "r"), "--no-pdf",
                                      "--spec", str(tmp_path / "spec.toml")])
    assert res.exit_code == 1, res.output   # one replicate per sample: 600 valid tracks < 1000
    html = (tmp_path / "r" / "run42.html").read_text()
    assert "video0" in html and "video2" in html and "no detection-volume calibration" in html
    res = CliRunner().invoke(_app(), ["report", str(root), "--out", str(tmp_path / "r2"), "--no-pdf"])
    assert res.exit_code == 0 and "NOT EVALUATED" in res.output


def test_sample_metrics_numbers(batch: Path) -> None:
    from exonta.report.content import load_source, sample_metrics, t975

    src = load_source(batch)
    assert [l.name for l in src.lots] == ["LOT-001", "LOT-002", "LOT-003", "LOT-004", "LOT-005"]
    ev = next(s for s in src.lot("LOT-005").samples if s.name == "EV-A")
    m, missing, det = sample_metrics(ev)
    stock = np.array([0.97, 1.0, 1.03]) * 2.0e10
    assert m["n_replicates"] == 3 and m["n_failed_videos"] == 1
    assert m["concentration_per_ml"] == pytest.approx(stock.mean(), rel=1e-12)
    assert m["measured_concentration_per_ml"] == pytest.approx(stock.mean() / 1000.0, rel=1e-12)
    assert m["concentration_cv_pct"] == pytest.approx(100 * stock.std(ddof=1) / stock.mean(), rel=1e-12)
    half = t975(2) * stock.std(ddof=1) / np.sqrt(3)
    assert det["concentration_ci95"] == pytest.approx([stock.mean() - half, stock.mean() + half], rel=1e-12)
    assert m["mode_nm"] == pytest.approx(160.0, rel=1e-12)       # the pooled distribution's mode
    assert m["valid_tracks"] == 1800 and m["valid_tracks_min"] == 600
    assert m["span"] == pytest.approx((1.55 - 0.72) / 1.04, rel=1e-9)
    bead = next(s for s in src.lot("LOT-005").samples if s.name == "beads100")
    bm, bmiss, _ = sample_metrics(bead)
    assert bm["mode_cv_pct"] is None and "fewer than 2" in bmiss["mode_cv_pct"]


def test_detection_limit_metric_is_the_worst_replicate(tmp_path: Path) -> None:
    from exonta.report.content import load_source, sample_metrics
    from exonta.report.spec import Criterion, Spec, evaluate_criteria

    clipped = {"diameter_nm": None, "reason": "not estimated: 7 % of the detections ... are clipped"}
    lots = {"L1": {"EV-A": [dict(limit={"diameter_nm": d}, seed=i) for i, d in enumerate((58.0, 61.5, 60.0))],
                   "EV-B": [dict(limit={"diameter_nm": 58.0}), dict(limit=clipped, seed=1)],
                   "EV-C": [dict()]}}
    src = load_source(make_batch(tmp_path / "out", lots, pooled=False))
    by_name = {s.name: s for s in src.lot("L1").samples}
    m, missing, _ = sample_metrics(by_name["EV-A"])
    assert m["detection_limit_nm"] == pytest.approx(61.5) and "detection_limit_nm" not in missing
    m, missing, _ = sample_metrics(by_name["EV-B"])  # one replicate without a limit: no number, and why
    assert m["detection_limit_nm"] is None and "clipped" in missing["detection_limit_nm"]
    m, missing, _ = sample_metrics(by_name["EV-C"])  # an older analysis without the entry
    assert m["detection_limit_nm"] is None and "not estimated" in missing["detection_limit_nm"]
    spec = Spec(criterion=[Criterion(metric="detection_limit_nm", max=62.0)])
    results = evaluate_criteria(spec, {n: sample_metrics(s)[0] for n, s in by_name.items()},
                                {n: sample_metrics(s)[1] for n, s in by_name.items()})
    assert {c.scope: c.passed for c in results} == {"EV-A": True, "EV-B": False, "EV-C": False}


@pytest.mark.slow
def test_end_to_end_with_real_pipeline(tmp_path: Path) -> None:
    """simulate → analyze → report on real result folders (needs the whole pipeline)."""
    runner = CliRunner()
    res = runner.invoke(_app(), ["simulate", str(tmp_path / "videos"), "--preset", "beads100", "--frames", "120",
                                 "--width", "256", "--height", "256", "--format", "tif", "--seed", "5",
                                 "-n", "beads_a"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(_app(), ["analyze", str(tmp_path / "videos" / "beads_a.tif"), "--out",
                                 str(tmp_path / "results"), "--dilution", "10", "-q"])
    if res.exit_code != 0 and "internal error" in res.output:
        pytest.skip(f"the analysis pipeline does not run yet: {res.output.strip()[-300:]}")
    assert res.exit_code == 0, res.output
    (tmp_path / "spec.toml").write_text('[[criterion]]\nmetric = "mode_nm"\nmin = 10\nmax = 10000\n')
    res = runner.invoke(_app(), ["report", str(tmp_path / "results"), "--out", str(tmp_path / "rep"),
                                 "--spec", str(tmp_path / "spec.toml")])
    assert res.exit_code in (0, 1), res.output
    import json

    summary = json.loads(next((tmp_path / "results").glob("*/summary.json")).read_text())
    text = re.sub(r"\s+", " ", _pdftotext(tmp_path / "rep" / "results.pdf"))
    mode = summary["size_nm"]["mode"]
    if mode is not None:
        assert f"{mode:.1f} nm" in text
    assert summary["input"]["sha256"][:32] in text.replace(" ", "")


def test_degenerate_inputs_render(tmp_path: Path, spec_file: Path) -> None:
    """A sample whose only video failed, and a summary with missing numbers, still render (and fail)."""
    from exonta.report.content import build_report, load_source
    from exonta.report.render import css_str, render_html
    from exonta.report.spec import load_spec

    lots = {"L1": {"EV-A": [dict(mode=110.0)], "beads100": [dict(mode=100.0, conc_stock=1e8)]},
            "L2": {"EV-A": [], "EV-B": [dict(mode=100.0)]}}
    out = make_batch(tmp_path / "out", lots, pooled=False, failed={("L2", "EV-A"): "not a video"})
    # EV-B of L2: a summary without numbers (e.g. no valid track)
    bdir = out / "L2" / "EV-B" / "EV-B_rep1"
    s = fake_summary("EV-B_rep1")
    s["size_nm"] = {k: None for k in ("mean", "mode", "sd", "d10", "d50", "d90")}
    s["concentration_per_ml"] = {"value": None, "ci95_low": None, "ci95_high": None}
    s.pop("drift_um_per_s")
    s["counts"] = {}
    write_result(bdir, {**s, "size_nm": {**s["size_nm"], "mode": 1.0}})   # a table is still needed for the helper
    (bdir / "summary.json").write_text(__import__("json").dumps(s))
    content = build_report(load_source(out), "L2", load_spec(spec_file))
    assert content.verdict == "FAIL"
    ev_a = [c for c in content.criteria if c.scope == "EV-A"]
    assert ev_a and all(c.passed is False for c in ev_a)
    assert ev_a[0].reason == "no successfully analysed replicate video"
    assert all(c.passed is False for c in content.criteria if c.scope == "EV-B")
    assert content.suitability_where == "lot L1" and all(c.passed for c in content.suitability)
    html = render_html(content)
    assert "not a video" in html and "lot L1" in html and ">FAIL<" in html
    assert "None" not in re.sub(r"<table class=\"small\">.*?</table>", "", html, flags=re.S)  # no Python repr leaks
    assert css_str('a "b" </style> · c') == 'a \\000022 b\\000022  \\00003c \\00002f style\\00003e  \\0000b7  c'
