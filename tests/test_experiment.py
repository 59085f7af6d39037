"""`lens experiment` on a planted colour shortcut: tiny 16x16 images whose class is a bar's
orientation (horizontal / vertical) and, in the training split only, also the background hue.
The test split swaps the hues, so a model that learned the shortcut fails there. Its fix
clusters recommend colour jitter (which removes the shortcut: it must beat the control) and
random erasing (useless here: it must not)."""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image

from lens.warehouse import Warehouse, insert_arrow, stable_id
from tests.contracts import check_contracts

pytestmark = pytest.mark.slow

SIDE, N_TRAIN, N_TEST = 16, 384, 128
CLASSES = ("horizontal", "vertical")
REPO = Path(__file__).resolve().parent.parent


def _image(label: int, hue: float, rng) -> np.ndarray:
    rgb = np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.8, 0.8)) * 255
    img = np.tile(rgb, (SIDE, SIDE, 1)) + rng.normal(0, 8, (SIDE, SIDE, 3))
    r, c = rng.integers(2, SIDE - 6, 2)
    if label == 0:
        img[r:r + 2, c:c + 5] += 40
    else:
        img[r:r + 5, c:c + 2] += 40
    return np.clip(img, 0, 255).astype(np.uint8)


def make_planted(root: Path) -> Path:
    """An image-folder dataset: train hues 0.00 / 0.05 by class, test hues swapped."""
    for split, n, swap, seed in (("train", N_TRAIN, False, 0), ("test", N_TEST, True, 1)):
        rng = np.random.default_rng(seed)
        for i in range(n):
            label = i % 2
            hue = (0.05 if (label == 1) != swap else 0.0) + rng.uniform(-0.01, 0.01)
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(label, hue, rng)).save(d / f"{i:04d}.png")
    return root


def lens(wh_path: Path, *args: str, expect: int | None = 0) -> str:
    from lens.cli import cli as lens_cli

    result = CliRunner().invoke(lens_cli, ["--warehouse", str(wh_path), *args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
    return result.output


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: these tiny batches gain nothing from two, and beside other jobs on 2 cores
    OpenMP's spinning made this module 10x slower with two (318 s vs 30 s measured)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FIX_CLUSTERS = {
    0: ("background colour", "Colour jitter: the background colour, not the bar, decides the class."),
    1: ("occluded bars", "Random erasing, so partly hidden bars are still recognised."),
    2: ("more examples", "Collect more training images of this class."),
}


def seed_fix_clusters(wh: Warehouse, run_id: str) -> dict[int, list[int]]:
    """Fix clusters over the run's failures: even ones in cluster 0 (colour), odd ones in 1 (erasing)
    and 2 (more data), alternately."""
    with wh.transaction() as con:
        ids = [r[0] for r in con.execute(
            "select example_id from failures where run_id = ? order by example_id", [run_id]).fetchall()]
        members = {0: ids[0::2], 1: ids[1::4], 2: ids[3::4]}
        hyp, dims, mem, clusters = [], [], [], []
        for c, (name, text) in FIX_CLUSTERS.items():
            hids = [stable_id(run_id, e, "planted") for e in members[c]]
            for h, e in zip(hids, members[c]):
                hyp.append({"hypothesis_id": h, "run_id": run_id, "example_id": e, "backend": "import",
                            "model": "planted", "prompt_name": "reference", "prompt_sha256": "planted",
                            "status": "ok", "attempts": 1, "created_at": pd.Timestamp("2024-01-01")})
                dims.append({"hypothesis_id": h, "run_id": run_id, "example_id": e, "dimension": "fix",
                             "text": text})
                mem.append({"run_id": run_id, "dimension": "fix", "hypothesis_id": h, "example_id": e,
                            "cluster_id": c, "kmeans_label": c})
            clusters.append({"run_id": run_id, "dimension": "fix", "cluster_id": c, "name": name,
                             "name_method": "planted", "size": len(hids), "k": 2, "representatives": hids[:3],
                             "medoid_text": text})
        for table, rows in (("hypotheses", hyp), ("hypothesis_dimensions", dims), ("cluster_members", mem),
                            ("clusters", clusters)):
            insert_arrow(con, table, pa.Table.from_pylist(rows))
    return members


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A warehouse with run 'base' (trained on the planted split) and its two fix clusters."""
    root = tmp_path_factory.mktemp("planted")
    data = make_planted(root / "data")
    path = root / "wh" / "lens.duckdb"
    lens(path, "train", "--data", str(data), "--no-pretrained", "--run", "base", "--epochs", "3",
         "--batch-size", "64", "--image-size", str(SIDE))
    wh = Warehouse(path)
    members = seed_fix_clusters(wh, "base")
    return {"path": path, "data": data, "members": members}


def copy_warehouse(base, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(base["path"], dest / "lens.duckdb")
    shutil.copytree(base["path"].parent / "artifacts", dest / "artifacts")
    return dest / "lens.duckdb"


@pytest.fixture(scope="module")
def experiment(base, tmp_path_factory):
    """`lens experiment --from base --top 3 --epochs 1 --seeds 2` on a copy of the base warehouse."""
    path = copy_warehouse(base, tmp_path_factory.mktemp("exp"))
    with Warehouse(path).connect() as con:
        before = con.execute("select cluster_id, effect from recommendations where run_id = 'base'").fetchall()
    out = lens(path, "experiment", "--from", "base", "--top", "3", "--epochs", "1", "--seeds", "2")
    return {"path": path, "wh": Warehouse(path), "output": out, "before": before}


def test_planted_colour_jitter_beats_the_control_and_erasing_does_not(experiment):
    wh = experiment["wh"]
    rows = wh.query("select arm, scope, targeted, delta, delta_lower, delta_upper, seed_deltas, verdict "
                    "from recommendation_effects where scope = 'overall' or targeted order by arm, scope")
    by = {(r.arm, r.scope): r for r in rows.itertuples()}
    colour, erasing = by[("colour_jitter", "overall")], by[("random_erasing", "overall")]
    assert colour.verdict == "beats control" and colour.delta_lower > 0 and min(colour.seed_deltas) > 0
    assert erasing.verdict != "beats control"
    oversample = [r for (arm, scope), r in by.items() if arm.startswith("oversample_") and scope == "overall"]
    assert len(oversample) == 1 and oversample[0].verdict != "beats control"  # more of the same shortcut
    assert by[("colour_jitter", "cluster")].verdict == "beats control"
    assert by[("random_erasing", "cluster")].verdict != "beats control"
    out = experiment["output"]
    assert "Adopt: colour_jitter" in out and "background colour" in out


def test_recommendations_rank_by_measured_lift(experiment):
    assert {e for _, e in experiment["before"]} == {"untested"}
    recs = experiment["wh"].query(
        "select rank, cluster_id, effect, lift, lift_lower, cluster_lift from recommendations "
        "where run_id = 'base' order by rank")
    assert recs.cluster_id[0] == 0 and sorted(recs.cluster_id) == [0, 1, 2]
    assert recs.effect[0] == "beats control" and recs.lift_lower[0] > 0 and recs.cluster_lift[0] > 0
    assert set(recs.effect[1:]) <= {"no clear effect", "worse than control"}


def test_arms_share_seed_checkpoint_and_data_order(experiment):
    arms = experiment["wh"].query("select a.run_id, a.arm, a.seed, a.batches_sha256, a.checkpoint_sha256, r.config, "
                                  "r.parent_run_id from experiment_arms a join runs r using (run_id) order by seed, arm")
    assert len(arms) == 8 and set(arms.arm) - {"control", "colour_jitter", "random_erasing"} in (
        {"oversample_0"}, {"oversample_1"})
    assert (arms.parent_run_id == "base").all() and arms.checkpoint_sha256.nunique() == 1
    configs = [json.loads(c) for c in arms.config]
    for key in ("batch_size", "head_lr", "backbone_lr", "epochs", "limit_train", "limit_test"):
        assert len({json.dumps(c[key]) for c in configs}) == 1, key
    for seed, group in arms.groupby("seed"):
        # the same shuffle for every arm; the same images in it before each augmentation (the
        # data arm swaps some positions' examples for its classes')
        assert len({json.loads(c)["order_sha256"] for c in group.config}) == 1
        augmented = group[~group.arm.str.startswith("oversample")]
        assert augmented.batches_sha256.nunique() == 1, group
        assert group.batches_sha256.nunique() == 2
    assert arms.groupby("seed").batches_sha256.first().nunique() == 2  # seeds differ
    with experiment["wh"].connect() as con:
        same_examples = con.execute(
            "select count(distinct run_id), count(*) from prediction_rows p join experiment_arms a using (run_id)"
        ).fetchone()
        base_n = con.execute("select count(*) from prediction_rows where run_id = 'base'").fetchone()[0]
        check_contracts(con, require_rows=("experiments", "experiment_arms", "recommendation_effects"))
    assert same_examples == (8, 8 * base_n)


def test_effects_match_an_independent_computation(experiment, base):
    from sklearn.metrics import f1_score

    wh = experiment["wh"]
    preds = wh.query("select a.arm, a.seed, p.example_id, p.label, p.pred from prediction_rows p "
                     "join experiment_arms a using (run_id)")
    wide = preds.pivot_table(index=["seed", "example_id", "label"], columns="arm", values="pred").reset_index()
    eff = wh.query("select * from recommendation_effects where arm = 'colour_jitter'")
    arm_right, ctl_right = wide.colour_jitter == wide.label, wide.control == wide.label
    overall = eff[eff.scope == "overall"].iloc[0]
    assert overall.n == len(wide) and overall.arm_correct == arm_right.sum()
    assert np.isclose(overall.delta, arm_right.mean() - ctl_right.mean())
    assert overall.delta_lower <= overall.eval_lower <= overall.delta <= overall.eval_upper <= overall.delta_upper
    # training noise: per-seed deltas around each arm's mean, pooled over the arms (1 df per arm here)
    wide_all = preds.assign(right=preds.pred == preds.label).groupby(["arm", "seed"]).right.mean().unstack("arm")
    deltas = wide_all.drop(columns="control").sub(wide_all.control, axis=0)
    pooled_sd = np.sqrt(((deltas - deltas.mean()) ** 2).sum().sum() / (len(deltas.columns) * (len(deltas) - 1)))
    assert overall.noise_df == len(deltas.columns) and np.isclose(overall.seed_noise_sd, pooled_sd)
    assert np.allclose(overall.seed_deltas, deltas["colour_jitter"].sort_index().to_numpy())
    cluster0 = wide.example_id.isin(base["members"][0])
    targeted = eff[eff.targeted].iloc[0]
    assert targeted.cluster_id == 0 and targeted.n == cluster0.sum()
    assert np.isclose(targeted.arm_share, arm_right[cluster0].mean())
    assert np.isclose(targeted.control_share, ctl_right[cluster0].mean())
    for cls in (0, 1):
        row = eff[(eff.scope == "class") & (eff.class_id == cls)].iloc[0]
        f1 = lambda col: f1_score(wide.label, wide[col], labels=[cls], average=None, zero_division=0)[0]  # noqa: E731
        assert np.isclose(row.f1_arm, f1("colour_jitter")) and np.isclose(row.f1_control, f1("control"))
        assert row["name"] == CLASSES[cls]


def test_a_killed_experiment_resumes_arm_by_arm(base, tmp_path):
    path = copy_warehouse(base, tmp_path / "kill")
    env = {**os.environ, "LENS_WAREHOUSE": str(path), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lens", "experiment", "--from", "base", "--top", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("arm 2/3"):  # the control arm is stored, the next one is training
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert any("arm base.exp.control.s0: accuracy" in s for s in seen), "".join(seen)
    wh = Warehouse(path)
    stored = wh.query("select run_id, created_at from experiment_arms")
    assert stored.run_id.tolist() == ["base.exp.control.s0"]
    assert wh.query("select count(*) as n from runs where run_id like 'base.exp.%'").n[0] == 1  # nothing half-written

    out = lens(path, "experiment", "--from", "base", "--top", "2")
    assert "Resuming experiment 'base.exp'" in out and "arm base.exp.control.s0: done already" in out
    assert "arm 1/2 base.exp.colour_jitter.s0" in out  # only the two arms that were missing
    after = wh.query("select run_id, created_at from experiment_arms order by run_id")
    assert len(after) == 3
    assert after.set_index("run_id").created_at["base.exp.control.s0"] == stored.created_at[0]  # not redone
    again = lens(path, "experiment", "--from", "base", "--top", "2")
    assert again.count("done already") == 3 and "arm 1/" not in again

    other = lens(path, "experiment", "--from", "base", "--top", "2", "--epochs", "2", expect=1)
    assert "exists with other options (epochs 1, now 2)" in other and "--force" in other
    redo = lens(path, "experiment", "--from", "base", "--top", "1", "--force", "--keep-checkpoints")
    assert "arm 2/2 base.exp.colour_jitter.s0" in redo
    runs = wh.query("select run_id, checkpoint_path from runs where run_id like 'base.exp.%' order by run_id")
    assert runs.run_id.tolist() == ["base.exp.colour_jitter.s0", "base.exp.control.s0"]  # erasing arm deleted
    assert all(wh.artifact_path(p).is_file() for p in runs.checkpoint_path)


def test_what_to_run_first_and_other_refusals(base, tmp_path):
    from tests._seed import seed_complete_run

    path = copy_warehouse(base, tmp_path / "errors")
    wh = Warehouse(path)
    seed_complete_run(wh, "imported")  # a run with clusters and no checkpoint
    with wh.transaction() as con:
        con.execute("insert into runs select 'bare', kind, created_at, dataset, eval_split, num_classes, model, "
                    "checkpoint_path, parent_run_id, config from runs where run_id = 'base'")
    out = lens(path, "experiment", "--from", "imported", expect=1)
    assert "no model to fine-tune" in out and "lens train" in out and len(out.strip().splitlines()) == 1
    out = lens(path, "experiment", "--from", "bare", expect=1)
    assert "no recommendations yet" in out and "lens run --run bare" in out and len(out.strip().splitlines()) == 1
    out = lens(path, "experiment", "--from", "nosuchrun", expect=1)
    assert "No run named 'nosuchrun'" in out


def test_augment_from_points_to_a_controlled_experiment(base, tmp_path):
    path = copy_warehouse(base, tmp_path / "aug")
    out = lens(path, "train", "--data", str(base["data"]), "--no-pretrained", "--run", "aug", "--epochs", "1",
               "--batch-size", "64", "--image-size", str(SIDE), "--augment-from", "base", "--limit-train", "128")
    assert "lens experiment --from base" in out


def test_report_has_the_experiment_and_its_decision(experiment, tmp_path):
    out = tmp_path / "report.html"
    lens(experiment["path"], "report", "--run", "base", "--out", str(out))
    text = out.read_text()
    section = text[text.index("<section id='experiments'>"):]
    section = section[: section.index("</section>")]
    assert "Adopt <b>colour_jitter</b>" in section and "beats control" in section
    assert "random_erasing" in section and "background colour" in section
