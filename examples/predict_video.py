"""`segzoo predict-video` as a script: `python examples/predict_video.py --help` lists its flags (the same as `segzoo predict-video --help`)."""

from segzoo.cli import command_main

main = command_main("predict-video")

if __name__ == "__main__":
    main()
