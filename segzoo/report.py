"""``report.html``: one page with a run's metrics table and every picture it wrote.

The page refers to its pictures by relative path, so the folder can be moved or
zipped as a whole; it needs no network and no script.
"""

from __future__ import annotations

import html
import os

from segzoo.files import atomic_write, write_json

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}img,video{max-width:100%;border:1px solid #ddd}figcaption{color:#555}"""


def _rows(rows):
    """Table rows of ``(label, value, ...)``: the label as a header cell, each value a number cell."""
    return "".join(f"<tr><th>{html.escape(str(label))}</th>"
                   + "".join(f"<td class=num>{html.escape(str(v))}</td>" for v in values) + "</tr>"
                   for label, *values in rows)


def _score(value):
    return "n/a" if value is None else f"{value:.4f}"


def summary_rows(report):
    """``(label, text)`` pairs of a report's headline figures (mean IoU, accuracy, cost, latency), with the
    scores of test-time augmentation and what it costs when the report has a ``"tta"`` entry."""
    tta = report.get("tta")
    rows = [("mean IoU", _score(report["mean_iou"]))]
    if tta:
        rows.append(("mean IoU with TTA", _score(tta["mean_iou"])))
    if "pixel_accuracy" in report:
        rows.append(("pixel accuracy", _score(report["pixel_accuracy"])))
        if tta:
            rows.append(("pixel accuracy with TTA", _score(tta["pixel_accuracy"])))
    if "parameters" in report:
        latency = report["latency"]
        height, width = latency["input_shape"][:2]
        rows += [("parameters", f"{report['parameters'] / 1e6:.2f} M"),
                 ("GFLOPs", f"{report['gflops']:.2f} (multiply-adds, {width}x{height})"),
                 ("latency", f"{latency['median_ms']:.1f} ms median, {latency['p90_ms']:.1f} ms p90 "
                             f"(batch {latency['batch_size']})")]
    if tta:
        from segzoo.tta import cost

        rows.append(("TTA", cost(tta)))
    machine = report.get("machine") or {}
    if machine:
        rows.append(("machine", ", ".join(str(v) for v in machine.values() if v not in (None, [], ""))))
    return rows


def write_html_report(path, title, report, pictures=(), videos=(), extra_rows=()):
    """Write ``report.html``: headline figures, per-class IoU, then every picture and video.

    Args:
        path: the HTML file to write.
        title: the page's title.
        report: a :func:`segzoo.evaluation.evaluation_report`-style dict (``mean_iou``,
            ``per_class_iou`` and, when present, cost, latency and the ``"tta"`` scores, shown beside
            the single-pass ones).
        pictures: ``(caption, file)`` pairs; files are written relative to ``path``'s folder.
        videos: ``(caption, file)`` pairs, shown as HTML5 video.
        extra_rows: more ``(label, text)`` rows for the headline table.

    Returns:
        ``path``.
    """
    folder = os.path.dirname(os.path.abspath(path))

    def relative(file):
        return html.escape(os.path.relpath(os.path.abspath(os.path.join(folder, file)), folder).replace(os.sep, "/"))

    tta = report.get("tta")
    per_class = [(name, _score(iou), *([_score(tta["per_class_iou"][name])] if tta else []))
                 for name, iou in report["per_class_iou"].items()]
    header = "<tr><th>class</th><th>IoU</th>" + ("<th>IoU with TTA</th>" if tta else "") + "</tr>"
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<table>{_rows([*summary_rows(report), *extra_rows])}</table>",
             f"<h2>IoU per class</h2><table>{header}{_rows(per_class)}</table>"]
    for caption, file in pictures:
        parts.append(f"<figure><img src=\"{relative(file)}\" alt=\"{html.escape(caption)}\">"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    for caption, file in videos:
        parts.append(f"<figure><video src=\"{relative(file)}\" controls loop muted></video>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>\n")
    with atomic_write(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write("\n".join(parts))
    return path


def save_evaluation(folder, report, title, rows=(), class_colors=None, pictures=(), videos=(), extra_rows=()):
    """Write an evaluation's files into ``folder``: ``metrics.json``, ``confusion_matrix.png``,
    ``per_class_iou.png``, ``predictions.png`` (when ``rows`` has any) and ``report.html``.

    Args:
        folder: the output folder (created).
        report: an :func:`segzoo.evaluation.evaluation_report` dict (written to ``metrics.json`` as is).
        title: the page's title.
        rows: :func:`segzoo.evaluation.prediction_rows` output for the prediction grid.
        class_colors: ``(r, g, b)`` per class, for the grid's legend.
        pictures, videos: more ``(caption, file)`` pairs (relative to ``folder``) shown first.
        extra_rows: more headline ``(label, text)`` rows.

    Returns:
        ``{name: path}`` of every file written.
    """
    from segzoo import plots

    os.makedirs(folder, exist_ok=True)
    written = {"metrics.json": os.path.join(folder, "metrics.json")}
    write_json(written["metrics.json"], report, default=str)
    names = list(report["per_class_iou"])
    shown = list(pictures)
    rows = list(rows)
    if rows:
        written["predictions.png"] = plots.plot_prediction_grid(rows, os.path.join(folder, "predictions.png"),
                                                                names, class_colors)
        shown.append(("held-out images: truth, prediction and the model's confidence", "predictions.png"))
    written["per_class_iou.png"] = plots.plot_per_class_iou(report["per_class_iou"],
                                                            os.path.join(folder, "per_class_iou.png"),
                                                            report["mean_iou"])
    written["confusion_matrix.png"] = plots.plot_confusion_matrix(report["confusion_matrix"], names,
                                                                  os.path.join(folder, "confusion_matrix.png"))
    shown += [("IoU per class", "per_class_iou.png"), ("confusion matrix", "confusion_matrix.png")]
    written["report.html"] = write_html_report(os.path.join(folder, "report.html"), title, report, shown, videos,
                                               extra_rows)
    return written
