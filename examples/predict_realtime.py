"""`segzoo camera` as a script: `python examples/predict_realtime.py --help` lists its flags (the same as `segzoo camera --help`)."""

from segzoo.cli import command_main

main = command_main("camera")

if __name__ == "__main__":
    main()
