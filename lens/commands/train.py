"""`lens train`: fine-tune a baseline model and record its predictions and failures."""

from __future__ import annotations

import click

from lens.stages.train import (
    DEFAULT_AUGMENT_TOP,
    DEFAULT_BACKBONE_LR,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_HEAD_LR,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_SEED,
    DEVICES,
)


@click.command()
@click.option("--data", envvar="LENS_DATA", default=None, show_envvar=True,
              help="Dataset source: a folder of train/test Parquet files, an image-folder tree, or 'cifar10'.")
@click.option("--run", "run_id", default=None, help="Run name (default: the dataset folder's name).")
@click.option("--epochs", default=DEFAULT_EPOCHS, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=2))
@click.option("--limit-train", default=None, type=click.IntRange(min=1),
              help="Train on a stratified subset of N images (quick runs).")
@click.option("--limit-test", default=None, type=click.IntRange(min=1),
              help="Evaluate on a stratified subset of N images.")
@click.option("--device", type=click.Choice(DEVICES), default=DEFAULT_DEVICE, show_default=True,
              help="auto = cuda, then mps, then cpu.")
@click.option("--seed", default=DEFAULT_SEED, show_default=True, help="Seeds the model, the shuffles and the subsets.")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True,
              help="Start from torchvision's ImageNet weights (downloaded; fails offline: use --weights or --no-pretrained).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="Local ResNet-18 state dict to start from (its fc layer is replaced).")
@click.option("--head-lr", default=None, type=float, help=f"Learning rate of the new head  [default: {DEFAULT_HEAD_LR:g}]")
@click.option("--backbone-lr", default=None, type=float,
              help=f"Learning rate of the backbone  [default: {DEFAULT_BACKBONE_LR:g} with pretrained weights or "
                   f"--weights; with --no-pretrained, the head's rate ({DEFAULT_BACKBONE_LR:g} is a fine-tuning rate, "
                   f"too slow from scratch)]")
@click.option("--image-size", default=DEFAULT_IMAGE_SIZE, show_default=True, type=click.IntRange(min=8),
              help="Images are resized to this square size once, when decoded.")
@click.option("--force", is_flag=True, help="Replace an existing run of that name (retrain).")
@click.option("--augment-from", default=None, metavar="RUN",
              help="Iteration 2: turn RUN's top recommended fix clusters into augmentations and train a new run.")
@click.option("--augment-top", default=DEFAULT_AUGMENT_TOP, show_default=True, type=click.IntRange(min=1),
              help="How many of RUN's top recommendations to consider.")
@click.option("--labels-from", default=None, metavar="RUN",
              help="Train and evaluate with the label corrections imported for RUN (`lens labels import`): "
                   "corrected training labels change what is learnt, corrected evaluation labels what is scored.")
@click.pass_obj
def train(wh, data, run_id, epochs, batch_size, limit_train, limit_test, device, seed, pretrained, weights,
          head_lr, backbone_lr, image_size, force, augment_from, augment_top, labels_from):
    """Fine-tune ResNet-18 and record every prediction, failure and epoch.

    The reference recipe: ResNet-18 with a new head, 32x32 inputs normalised with the
    training set's mean/std, AdamW (head 1e-3, backbone 1e-4), cosine schedule, batch
    128, 3 epochs, no augmentation, seeded. Without pretrained weights the backbone
    learns at the head's rate unless --backbone-lr says otherwise.

    Writes runs, classes, predictions, failures (with images), training_log (per epoch,
    overall and per class), features (512-d, eval and train) and the checkpoint, all at
    the end in one transaction. A run that already exists is left alone (--force
    retrains it).

    \b
    Example:
      lens train --data ../shared/data/cifar10 --no-pretrained --run baseline
      lens train --data ../shared/data/cifar10 --no-pretrained --limit-train 2000 --limit-test 500 --epochs 1 --run quick
      lens sql "select class_name, f1 from class_metrics where run_id = 'baseline'"
      lens train --data ../shared/data/cifar10 --no-pretrained --augment-from baseline --run augmented
      lens train --data ../shared/data/cifar10 --no-pretrained --labels-from baseline --run relabelled
    """
    from lens.stages import train as stage

    res = stage.run(
        wh, data=data, run_id=run_id, epochs=epochs, batch_size=batch_size, limit_train=limit_train,
        limit_test=limit_test, device=device, seed=seed, pretrained=pretrained, weights=weights,
        head_lr=head_lr, backbone_lr=backbone_lr, image_size=image_size, force=force, echo=click.echo,
        augment_from=augment_from, augment_top=augment_top, labels_from=labels_from,
    )
    if res.skipped:
        click.echo(res.message)
        return
    click.echo(
        f"Trained run {res.run_id!r} on {res.device} in {res.seconds:.0f}s: accuracy {res.accuracy:.1%} on "
        f"{res.n_eval:,} examples, {res.failures:,} failures. Checkpoint: {res.checkpoint}"
    )
    if augment_from:
        click.echo(f"Did the augmentation help? This run differs from {augment_from!r} in more than the augmentation "
                   f"(weights, training noise), so comparing the two cannot tell. A controlled experiment can (same "
                   f"checkpoint, seed, data order and budget, with and without each change): "
                   f"lens experiment --from {augment_from} --seeds 2")
    if labels_from:
        click.echo(f"What the corrections changed: lens compare {labels_from} {res.run_id}")
    click.echo(f"Next: lens sample --run {res.run_id} --per-class 15")


commands = [train]
