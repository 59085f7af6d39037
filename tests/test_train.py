"""`lens train`: a quick subset run (2,000 train / 500 test, 1 epoch) checked against
independent computations: the dataset files read with pyarrow/PIL, scikit-learn metrics,
and the saved checkpoint re-run by hand."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from lens.warehouse import Warehouse

pytestmark = pytest.mark.slow

N_TRAIN, N_TEST = 2000, 500


def _lens(wh_path: Path, *args: str, expect: int | None = 0):
    from lens.cli import cli as lens_cli

    result = CliRunner().invoke(lens_cli, ["--warehouse", str(wh_path), *args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
    return result


def _read_split(cifar_dir: Path, split: str) -> pa.Table:
    return pq.read_table(cifar_dir / f"{split}.parquet")


def _decode(table: pa.Table, row: int) -> np.ndarray:
    data = table.column("img").combine_chunks().field("bytes")[row].as_py()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_dir):
    """One quick training run shared by the tests of this module."""
    path = tmp_path_factory.mktemp("train") / "lens.duckdb"
    out = _lens(path, "train", "--data", str(cifar_dir), "--no-pretrained", "--limit-train", str(N_TRAIN),
                "--limit-test", str(N_TEST), "--epochs", "1", "--batch-size", "64", "--run", "quick")
    return Warehouse(path), out.output


def test_one_prediction_per_test_example_with_the_datasets_labels(trained, cifar_dir):
    wh, _ = trained
    df = wh.query("select example_id, label from predictions where run_id = 'quick' order by example_id")
    assert len(df) == N_TEST and df.example_id.is_unique
    test = _read_split(cifar_dir, "test")
    by_index = dict(zip(test.column("index").to_pylist(), test.column("label").to_pylist()))
    assert [by_index[i] for i in df.example_id] == df.label.tolist()
    # stratified: 50 of each of the 10 classes
    assert np.bincount(df.label, minlength=10).tolist() == [N_TEST // 10] * 10


def test_probabilities_top3_and_loss_agree(trained):
    wh, _ = trained
    df = wh.query("select * from predictions where run_id = 'quick'")
    probs = np.stack(df.probs.to_numpy()).astype(np.float64)
    assert probs.shape == (N_TEST, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (df.pred.to_numpy() == probs.argmax(axis=1)).all()
    np.testing.assert_allclose(df.confidence, probs.max(axis=1), rtol=1e-6)
    top3 = np.stack(df.top3_class.to_numpy())
    top3p = np.stack(df.top3_prob.to_numpy())
    expected = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    assert (top3 == expected).all()
    np.testing.assert_allclose(top3p, np.take_along_axis(probs, expected, axis=1), rtol=1e-6)
    assert (np.diff(top3p, axis=1) <= 0).all()
    true_p = probs[np.arange(N_TEST), df.label.to_numpy()]
    np.testing.assert_allclose(df.loss, -np.log(true_p), rtol=1e-4, atol=1e-6)


def test_failures_are_exactly_the_misclassifications_with_their_images(trained, cifar_dir):
    wh, _ = trained
    preds = wh.query("select example_id, label, pred from predictions where run_id = 'quick' order by example_id")
    fails = wh.query("select * from failures where run_id = 'quick' order by example_id")
    wrong = preds[preds.label != preds.pred]
    assert fails.example_id.tolist() == wrong.example_id.tolist()
    assert fails.pred.tolist() == wrong.pred.tolist()
    assert 0 < len(fails) < N_TEST
    test = _read_split(cifar_dir, "test")
    row_of = {v: i for i, v in enumerate(test.column("index").to_pylist())}
    for _, f in fails.head(5).iterrows():
        stored = np.asarray(Image.open(io.BytesIO(f.image_png)).convert("RGB"))
        assert (stored == _decode(test, row_of[f.example_id])).all()
        assert (f.width, f.height) == (32, 32)


def test_class_metrics_equal_scikit_learn(trained):
    from sklearn.metrics import precision_recall_fscore_support

    wh, _ = trained
    preds = wh.query("select label, pred from predictions where run_id = 'quick'")
    cm = wh.query("select * from class_metrics where run_id = 'quick' order by class_id")
    p, r, f, s = precision_recall_fscore_support(preds.label, preds.pred, labels=list(range(10)), zero_division=0)
    np.testing.assert_allclose(cm["precision"], p)
    np.testing.assert_allclose(cm.recall, r)
    np.testing.assert_allclose(cm.f1, f)
    assert cm.support.tolist() == s.tolist()
    assert cm.class_name.tolist()[:3] == ["airplane", "automobile", "bird"]


def test_training_log_has_overall_and_per_class_rows_matching_the_predictions(trained):
    wh, _ = trained
    log = wh.query("select * from training_log where run_id = 'quick' order by epoch, class_id")
    assert log.class_id.tolist() == list(range(-1, 10))
    assert (log.epoch == 1).all()
    per_class = log[log.class_id >= 0]
    # the last epoch's evaluation is the stored predictions: recompute it from them
    preds = wh.query("select label, pred, loss from predictions where run_id = 'quick'")
    acc = preds.assign(ok=preds.label == preds.pred).groupby("label").ok.mean()
    loss = preds.groupby("label").loss.mean()
    np.testing.assert_allclose(per_class.eval_accuracy, acc.sort_index(), atol=1e-9)
    np.testing.assert_allclose(per_class.eval_loss, loss.sort_index(), rtol=1e-4)
    assert per_class.n_eval.tolist() == [N_TEST // 10] * 10
    assert per_class.n_train.sum() == N_TRAIN == log.n_train.iloc[0]  # 2000 % 64 != 1: nothing dropped
    overall = log.iloc[0]
    assert overall.eval_accuracy == pytest.approx((preds.label == preds.pred).mean())
    assert overall.train_loss == pytest.approx(
        (per_class.train_loss * per_class.n_train).sum() / per_class.n_train.sum())
    assert overall.lr == pytest.approx(0.0, abs=1e-9)  # cosine ends at 0 after the last step
    assert overall.seconds > 0


def test_features_and_checkpoint_reproduce_the_stored_predictions(trained, cifar_dir):
    import torch

    from lens.models import load_checkpoint, normalize, penultimate

    wh, _ = trained
    run = wh.query("select * from runs where run_id = 'quick'").iloc[0]
    config = json.loads(run.config)
    assert run.kind == "train" and run.model == "resnet18" and run.eval_split == "test"
    assert config["limit_train"] == N_TRAIN and config["seed"] == 0 and config["epochs"] == 1
    assert config["backbone_lr"] == config["head_lr"] == 1e-3  # no pretrained weights
    counts = wh.query("select split, count(*) as n, min(len(vector)) as d, max(len(vector)) as d2"
                      " from features where run_id = 'quick' group by split order by split")
    assert counts.split.tolist() == ["eval", "train"]
    assert counts.n.tolist() == [N_TEST, N_TRAIN] and (counts.d == 512).all() and (counts.d2 == 512).all()

    model, meta = load_checkpoint(wh.artifact_path(run.checkpoint_path))  # relative to the warehouse folder
    assert meta["mean"] == config["mean"] and meta["class_names"][0] == "airplane"
    stored = wh.query("select f.example_id, f.vector, p.probs from features f join predictions p"
                      " using (run_id, example_id) where f.run_id = 'quick' and f.split = 'eval'"
                      " order by f.example_id limit 8")
    test = _read_split(cifar_dir, "test")
    row_of = {v: i for i, v in enumerate(test.column("index").to_pylist())}
    images = np.stack([_decode(test, row_of[i]) for i in stored.example_id])
    with torch.no_grad():
        feats = penultimate(model, normalize(images, meta["mean"], meta["std"]))
        probs = torch.softmax(model.fc(feats), dim=1).numpy()
    np.testing.assert_allclose(feats.numpy(), np.stack(stored.vector.to_numpy()), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(probs, np.stack(stored.probs.to_numpy()), atol=1e-5)

    # training features carry the training split's labels
    train = _read_split(cifar_dir, "train")
    tl = dict(zip(train.column("index").to_pylist(), train.column("label").to_pylist()))
    tf = wh.query("select example_id, label from features where run_id = 'quick' and split = 'train'")
    assert [tl[i] for i in tf.example_id] == tf.label.tolist()


def test_rerun_does_nothing_and_reports_changed_options(trained, cifar_dir):
    wh, _ = trained
    before = wh.query("select created_at from runs where run_id = 'quick'").created_at.iloc[0]
    out = _lens(wh.path, "train", "--data", str(cifar_dir), "--no-pretrained", "--limit-train", str(N_TRAIN),
                "--limit-test", str(N_TEST), "--epochs", "2", "--batch-size", "64", "--run", "quick").output
    assert "already exists" in out and "epochs 1 (now 2)" in out and "Training" not in out
    assert wh.query("select created_at from runs where run_id = 'quick'").created_at.iloc[0] == before


def test_same_seed_gives_identical_predictions_and_force_replaces(tmp_path, cifar_dir):
    args = ["train", "--data", str(cifar_dir), "--no-pretrained", "--limit-train", "300", "--limit-test", "100",
            "--epochs", "1", "--batch-size", "32", "--seed", "7", "--run", "tiny"]
    path = tmp_path / "lens.duckdb"
    wh = Warehouse(path)
    q = "select example_id, pred, probs from predictions order by example_id"
    _lens(path, *args)
    first = wh.query(q)
    created = wh.query("select created_at from runs").created_at.iloc[0]
    _lens(path, "sample", "--run", "tiny", "--per-class", "2")
    assert wh.query("select count(*) as n from samples").n.iloc[0] > 0

    # --force retrains from scratch with the same seed: identical predictions, and the
    # run's rows (its old sample too) replaced
    _lens(path, *args, "--force")
    second = wh.query(q)
    assert len(second) == 100 and first.pred.tolist() == second.pred.tolist()
    assert np.array_equal(np.stack(first.probs.to_numpy()), np.stack(second.probs.to_numpy()))
    assert wh.query("select count(*) as n from samples").n.iloc[0] == 0
    assert wh.query("select count(*) as n from runs").n.iloc[0] == 1
    assert wh.query("select created_at from runs").created_at.iloc[0] > created


def _small_parquet(cifar_dir: Path, dest: Path, *, corrupt_test_row: int | None) -> Path:
    dest.mkdir()
    for split, n in (("train", 40), ("test", 20)):
        table = _read_split(cifar_dir, split).slice(0, n)
        if split == "test" and corrupt_test_row is not None:
            img = table.column("img").combine_chunks()
            data = img.field("bytes").to_pylist()
            data[corrupt_test_row] = b"not a png"
            new = pa.StructArray.from_arrays([pa.array(data, pa.binary()), img.field("path")], ["bytes", "path"])
            table = table.set_column(table.column_names.index("img"), "img", new)
        pq.write_table(table, dest / f"{split}.parquet")
    return dest


def test_bad_data_errors_before_training_and_writes_nothing(tmp_path, cifar_dir):
    bad = _small_parquet(cifar_dir, tmp_path / "bad", corrupt_test_row=3)
    wh_path = tmp_path / "lens.duckdb"
    res = _lens(wh_path, "train", "--data", str(bad), "--no-pretrained", "--run", "bad", expect=1)
    assert "not a readable image" in res.output and "test.parquet" in res.output
    assert "Training" not in res.output  # the stage says "Training ..." when the loop starts
    assert Warehouse(wh_path).query("select count(*) as n from runs").n.iloc[0] == 0
    assert not (tmp_path / "artifacts").exists()

    res = _lens(wh_path, "train", "--data", str(tmp_path / "nowhere"), "--no-pretrained", expect=1)
    assert "not found" in res.output


def test_pretrained_offline_says_what_to_do(tmp_path, cifar_dir, monkeypatch):
    # No cached weights, and every download refused at once (no network here either way).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    good = _small_parquet(cifar_dir, tmp_path / "good", corrupt_test_row=None)
    wh_path = tmp_path / "lens.duckdb"
    res = _lens(wh_path, "train", "--data", str(good), "--pretrained", "--run", "p", expect=1)
    assert "pretrained" in res.output and "--weights FILE" in res.output and "--no-pretrained" in res.output
    assert Warehouse(wh_path).query("select count(*) as n from runs").n.iloc[0] == 0


def test_learning_rate_defaults():
    from lens.stages.train import effective_lrs

    assert effective_lrs(pretrained=True, weights=None, head_lr=None, backbone_lr=None)[:2] == (1e-3, 1e-4)
    assert effective_lrs(pretrained=False, weights="w.pt", head_lr=None, backbone_lr=None)[:2] == (1e-3, 1e-4)
    assert effective_lrs(pretrained=False, weights=None, head_lr=None, backbone_lr=None)[:2] == (1e-3, 1e-3)
    assert effective_lrs(pretrained=False, weights=None, head_lr=5e-3, backbone_lr=None)[:2] == (5e-3, 5e-3)
    assert effective_lrs(pretrained=False, weights=None, head_lr=None, backbone_lr=2e-4)[:2] == (1e-3, 2e-4)


def test_weights_file_is_loaded_into_the_backbone(tmp_path):
    import torch
    from torchvision.models import resnet18

    from lens.models import build_resnet18

    torch.manual_seed(123)
    ref = resnet18(num_classes=1000)
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model = build_resnet18(10, weights=tmp_path / "w.pt")
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    assert model.fc.out_features == 10


def test_contracts_hold_for_a_trained_and_sampled_run(trained):
    from tests.contracts import check_contracts

    wh, _ = trained
    _lens(wh.path, "sample", "--run", "quick", "--per-class", "5")
    with wh.connect() as con:
        counts = check_contracts(con, require_rows=(
            "runs", "classes", "predictions", "failures", "training_log", "features", "samples", "stage_runs",
            "class_metrics", "run_metrics", "confusion", "training_curve"))
    per_class = wh.query("select label, count(*) as n from failures where run_id = 'quick' group by label")
    assert counts["features"] == N_TRAIN + N_TEST
    assert counts["samples"] == int(np.minimum(per_class.n, 5).sum())
    stages = wh.query("select stage from stage_runs where run_id = 'quick' order by stage").stage.tolist()
    assert stages == ["sample", "train"]


def test_train_epoch_applies_the_batch_transform_and_drops_a_lone_last_example():
    import torch

    from lens.models import build_resnet18
    from lens.training import build_optimizer, stats_tensors, to_device_images, train_epoch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = to_device_images(rng.integers(0, 256, (65, 32, 32, 3), dtype=np.uint8), "cpu")
    labels = torch.from_numpy(rng.integers(0, 3, 65))
    model = build_resnet18(3)
    opt, sched = build_optimizer(model, head_lr=1e-3, backbone_lr=1e-3, total_steps=2)
    seen = []

    def transform(x, y):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        seen.append(y.clone())
        return x.float().div(255.0).flip(-1)  # float in [0, 1] is accepted as well

    stats = train_epoch(model, opt, sched, images, labels, batch_size=32, generator=torch.Generator().manual_seed(1),
                        mean_t=stats_tensors([0.5] * 3, [0.25] * 3, "cpu")[0],
                        std_t=stats_tensors([0.5] * 3, [0.25] * 3, "cpu")[1], num_classes=3,
                        transform=transform, progress=False)
    assert [len(y) for y in seen] == [32, 32]  # 65 = 2 x 32 + 1: the lone example is left out
    assert stats.count.tolist() == np.bincount(torch.cat(seen).numpy(), minlength=3).tolist()
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
