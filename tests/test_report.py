"""`lens report` on a seeded complete run: every section, model text escaped by the template."""

from __future__ import annotations

import re

from _seed import XSS, seed_complete_run

from lens.stages import report


def test_report_sections_and_model_text_escaped(wh, tmp_path):
    seed_complete_run(wh, n_predictions=80, n_failures=20)
    with wh.transaction() as con:
        run_id = con.execute("select run_id from runs").fetchone()[0]
        # a <script> in an answer shown in the clusters section (the representative's summary)
        con.execute("update hypothesis_dimensions set summary = ? where dimension = 'fix'", [XSS])
        con.execute("update classes set class_name = ? where class_id = 0", ["<b>bold</b> & co"])
    out = report.run(wh, run_id=run_id, out=tmp_path / "report.html")
    text = out.path.read_text()
    assert out.sections == report.SECTIONS and out.bytes == len(text.encode())
    for section in report.SECTIONS:
        assert f"<section id='{section}'>" in text
    assert "data:image/png;base64," in text
    # model text is text: escaped, never markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt; and &lt;img src=x onerror=alert(1)&gt;" in text
    assert "<script>alert(1)" not in text and "<img src=x" not in text
    # class names in tables escaped by the template (and in Plotly's labels by html.escape)
    assert "<td>&lt;b&gt;bold&lt;/b&gt; &amp; co</td>" in text and "<b>bold</b>" not in text
    # the only scripts: plotly.js and Plotly's figures
    scripts = re.findall(r"<script[^>]*>", text)
    assert scripts and all(s in ("<script>", '<script type="text/javascript">') for s in scripts)
    assert not re.search(r"<(script|link|img)\b[^>]*\b(src|href)=[\"']?(https?:)?//", text)


def test_report_of_a_run_without_clusters_says_what_to_run(wh, tmp_path):
    seed_complete_run(wh, n_predictions=40, n_failures=10)
    with wh.transaction() as con:
        run_id = con.execute("select run_id from runs").fetchone()[0]
        con.execute("delete from clusters")
        con.execute("delete from training_log")
    text = report.run(wh, run_id=run_id, out=tmp_path / "r.html").path.read_text()
    assert "No clusters yet (run <code>lens embed</code> and <code>lens cluster</code>)." in text
    assert "<p>No training log (the run was imported).</p>" in text
    assert "No controlled experiment yet" in text
