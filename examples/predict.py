"""`segzoo predict` as a script: `python examples/predict.py --help` lists its flags (the same as `segzoo predict --help`)."""

from segzoo.cli import command_main

main = command_main("predict")

if __name__ == "__main__":
    main()
