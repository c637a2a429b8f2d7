"""Rank unlabelled images by how unsure the model is: the ones worth labelling first.

Scores each image of --images (recursively) by the mean per-pixel entropy of the
predicted probabilities (--score entropy) or by the share of pixels whose two best classes
are within --margin (--score margin); near-duplicates of a higher-ranked image (difference
hashes within --duplicate_distance bits) go to the end, so that ten frames of one scene do
not fill the top. Writes into --output: ranking.csv (rank, path, score, near_duplicate_of),
top.txt (the --top best, for upload to CVAT) and with --copy a to_label/ folder of them.

Example:

    segzoo rank --checkpoint runs/holes/best.keras --images unlabelled/ --output rank --top 50 --copy
"""


def add_arguments(parser):
    from segzoo.cli.predict import add_model_arguments
    from segzoo.prediction import DEFAULT_DUPLICATE_DISTANCE, SCORES

    add_model_arguments(parser)
    parser.add_argument("--output", default="rank", help="output folder (default: rank)")
    parser.add_argument("--score", choices=SCORES, default="entropy",
                        help="entropy: mean per-pixel entropy; margin: share of pixels whose top-two "
                             "probabilities are within --margin (default: entropy)")
    parser.add_argument("--margin", type=float, default=0.1, help="with --score margin (default: 0.1)")
    parser.add_argument("--duplicate_distance", type=int, default=DEFAULT_DUPLICATE_DISTANCE,
                        help="near-duplicates differ in at most this many of 64 hash bits; -1 keeps every image "
                             f"in score order (default: {DEFAULT_DUPLICATE_DISTANCE})")
    parser.add_argument("--top", type=int, default=20, help="images in top.txt (default: 20)")
    parser.add_argument("--copy", action="store_true", help="copy the top images into <output>/to_label/")


def run(args):
    from segzoo import files, prediction
    from segzoo.cli.predict import predictor_from_args

    files.check_output_folder(args.output, overwrite=args.overwrite)  # before the long run
    predictor, _, _ = predictor_from_args(args)
    ranking = prediction.rank_images(predictor, args.images, score=args.score, margin=args.margin,
                                     duplicate_distance=args.duplicate_distance, tile=args.tile,
                                     overlap=args.overlap, batch_size=args.batch_size)
    written = prediction.write_ranking(ranking, args.output, top=args.top, copy=args.copy, images_dir=args.images,
                                       overwrite=True)
    for rank, item in enumerate(written["top"][:10], start=1):
        print(f"{rank:>3}  {item.score:.4f}  {item.path}")
    duplicates = sum(item.duplicate_of is not None for item in ranking)
    print(f"{len(ranking)} images ranked ({duplicates} near-duplicates moved last): {written['csv']}; "
          f"top {len(written['top'])} in {written['top_list']}"
          + (f", copied to {written['copied']}" if written["copied"] else ""))
