"""Pictures for people: training curves, prediction grids, confusion matrix, per-class IoU.

Drawn with matplotlib on its file-only ``Agg`` backend (no display needed); every
function writes one PNG and returns its path.
"""

from __future__ import annotations


import numpy as np

from segzoo.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    """Write ``figure`` to ``path`` atomically (the format from its suffix) and free it; returns ``path``."""
    try:
        with atomic_write(path) as temporary:
            figure.savefig(temporary, dpi=100, bbox_inches="tight")
    finally:
        _pyplot().close(figure)
    return path


def plot_training_curves(history, path, monitor="val_mean_iou"):
    """Loss and mean IoU per epoch (training and validation), the best ``monitor`` epoch marked.

    Args:
        history: ``{"loss": [...], "val_loss": [...], "mean_iou": [...], "val_mean_iou": [...]}``
            as ``keras.callbacks.History.history`` holds it (missing keys are skipped).
        path: the PNG to write.
        monitor: the series whose maximum marks the best epoch.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    best = int(np.argmax(history[monitor])) + 1 if history.get(monitor) else None
    for ax, (title, keys) in zip(axes, (("loss", ("loss", "val_loss")),
                                        ("mean IoU", ("mean_iou", "val_mean_iou")))):
        for key in keys:
            values = history.get(key) or []
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, marker="o" if len(values) < 30 else None, markersize=3,
                        label="validation" if key.startswith("val_") else "training")
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set(title=title, xlabel="epoch", ylabel=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(figure, path)


def plot_prediction_grid(rows, path, class_names=None, colors=None):
    """One row per image: image | truth | prediction | confidence, with column titles and a colour bar.

    Args:
        rows: ``(image, truth_overlay, prediction_overlay, confidence)`` tuples: three RGB
            ``uint8 (H, W, 3)`` arrays and the top-class probability ``float (H, W)`` in 0..1.
        path: the PNG to write.
        class_names, colors: optional legend of the overlay colours (class id order).
    """
    plt = _pyplot()
    rows = list(rows)
    if not rows:
        raise ValueError("plot_prediction_grid needs at least one row.")
    height, width = rows[0][0].shape[:2]
    scale = 3.0 / max(height, width)
    figure, axes = plt.subplots(len(rows), 4, squeeze=False, layout="constrained",
                                figsize=(4 * width * scale + 1.2, len(rows) * height * scale + 0.8))
    titles = ("image", "truth", "prediction", "confidence")
    for index, (image, truth, prediction, confidence) in enumerate(rows):
        for column, picture in enumerate((image, truth, prediction)):
            axes[index, column].imshow(picture)
        shown = axes[index, 3].imshow(confidence, cmap="viridis", vmin=0.0, vmax=1.0)
        for column, ax in enumerate(axes[index]):
            ax.set_xticks([]), ax.set_yticks([])
            if index == 0:
                ax.set_title(titles[column])
    figure.colorbar(shown, ax=axes[:, 3].tolist(), label="top-class probability", shrink=0.8)
    if class_names and colors:
        from matplotlib.patches import Patch

        handles = [Patch(color=np.asarray(c) / 255.0, label=n) for n, c in zip(class_names, colors)]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
    return _save(figure, path)


def plot_confusion_matrix(confusion, class_names, path):
    """Heat map of the confusion matrix (rows = truth), each row normalised to 1, counts annotated.

    Args:
        confusion: ``(C, C)`` pixel counts, rows = true class, columns = predicted class.
        class_names: ``C`` names.
        path: the PNG to write.
    """
    plt = _pyplot()
    confusion = np.asarray(confusion, np.float64)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    size = 1.6 + 0.6 * len(class_names)
    figure, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (share of each true class)")
    if len(class_names) <= 20:
        for (i, j), share in np.ndenumerate(shares):
            ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if share > 0.5 else "black")
    figure.colorbar(shown, ax=ax, label="share of the true class's pixels")
    return _save(figure, path)


def plot_per_class_iou(per_class_iou, path, mean_iou=None):
    """Horizontal bar chart of IoU per class (a class absent from truth and prediction shows as n/a).

    Args:
        per_class_iou: ``{name: IoU in 0..1 or None}``.
        path: the PNG to write.
        mean_iou: drawn as a dashed line when given.
    """
    plt = _pyplot()
    names = list(per_class_iou)
    values = [per_class_iou[n] for n in names]
    figure, ax = plt.subplots(figsize=(7, 1.0 + 0.4 * len(names)), layout="constrained")
    positions = np.arange(len(names))
    ax.barh(positions, [0.0 if v is None else v for v in values], color="tab:blue")
    for position, value in zip(positions, values):
        ax.text(0.01 if value is None else min(value, 0.9) + 0.01, position,
                "n/a" if value is None else f"{value:.3f}", va="center")
    if mean_iou is not None:
        ax.axvline(mean_iou, color="tab:orange", linestyle="--", label=f"mean IoU {mean_iou:.3f}")
        ax.legend(loc="lower right")
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set(xlim=(0.0, 1.0), xlabel="IoU", title="IoU per class")
    ax.grid(axis="x", alpha=0.3)
    return _save(figure, path)
